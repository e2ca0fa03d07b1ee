"""Grading by attribute (train/grade.py): the prompt groups, and that the grade can fail.

The judges themselves are tested on the synth in test_train_synth.py; here, that grading
tells a model that follows the caption from one that ignores it or plays the opposite."""

from __future__ import annotations

import numpy as np
import pytest

from musicgen_edu.train import grade as gr
from musicgen_edu.train.synth import ATTRIBUTES, TEMPO_BPM, ClipSpec, render

SR = 16000


@pytest.mark.parametrize("attribute", gr.GRADED)
def test_groups_differ_only_in_their_attribute(attribute):
    groups = gr.prompt_groups(attribute, 12, seed=2)
    assert len(groups) == 12 and groups == gr.prompt_groups(attribute, 12, seed=2)
    values = ATTRIBUTES[attribute]
    for start in range(0, 12, len(values)):
        group = groups[start: start + len(values)]
        assert [v for _, v, _ in group] == list(values[: len(group)])
        assert len({s for _, _, s in group}) == 1                        # one seed per group
        rest = [{k: v for k, v in vars(spec).items() if k not in (attribute, "bpm")}
                for spec, _, _ in group]
        assert all(r == rest[0] for r in rest)
        if attribute == "tempo":                                         # the same place in range
            places = [(s.bpm - TEMPO_BPM[s.tempo][0]) / np.subtract(*TEMPO_BPM[s.tempo][::-1])
                      for s, _, _ in group]
            assert np.ptp(places) < 1e-9
        else:
            assert len({spec.bpm for spec, _, _ in group}) == 1
    assert gr.prompt_groups(attribute, 12, seed=3) != groups
    with pytest.raises(ValueError, match="texture"):
        gr.prompt_groups("texture")
    with pytest.raises(ValueError, match="positive multiple of 4"):
        gr.prompt_groups("instrument", 10)                               # a group cut short


def _judges_without_examples():
    return gr.Judges(instrument=None, mode=None)    # tempo and register need no examples


def _flip(attribute: str):
    """A 'model' that plays the other value of ``attribute`` than the caption asks."""
    def generate(specs: list[ClipSpec], seeds, seconds):
        other = {a: b for a, b in zip(ATTRIBUTES[attribute], ATTRIBUTES[attribute][::-1])}
        flipped = []
        for spec in specs:
            low, high = TEMPO_BPM[other[spec.tempo] if attribute == "tempo" else spec.tempo]
            flipped.append(spec.replace(**{attribute: other[getattr(spec, attribute)]},
                                        bpm=(low + high) / 2))
        return gr.synth_generate(SR)(flipped, seeds, seconds)
    return generate


def test_a_model_that_follows_passes_and_one_that_does_not_fails():
    judges = _judges_without_examples()
    kw = dict(per_attribute=8, seconds=3.0, attributes=("tempo", "register"))
    follows = gr.accuracy_table(gr.grade(gr.synth_generate(SR), judges, SR, **kw))
    assert follows["passed"].all() and (follows["n"] == 8).all()
    opposite = gr.accuracy_table(gr.grade(_flip("tempo"), judges, SR, **kw))
    assert opposite.set_index("attribute").loc["tempo", "accuracy"] <= 0.125
    assert not opposite.set_index("attribute").loc["tempo", "passed"]

    def ignores(specs, seeds, seconds):             # plays every group's first spec
        firsts = {}
        for spec, seed in zip(specs, seeds):
            firsts.setdefault(seed, spec)
        return gr.synth_generate(SR)([firsts[s] for s in seeds], seeds, seconds)

    deaf = gr.accuracy_table(gr.grade(ignores, judges, SR, **kw)).set_index("attribute")
    assert (deaf["accuracy"] <= 0.625).all() and not deaf["passed"].any()


def test_the_table_compares_with_chance_and_threshold():
    rows = gr.grade_clips(_judges_without_examples(), "register",
                          [render(ClipSpec(register="high"), 2.0, SR)] * 3, ["high", "high", "low"],
                          SR, ["a", "b", "c"])
    table = gr.accuracy_table(rows)
    assert table.to_dict("records") == [dict(attribute="register", n=3, accuracy=2 / 3,
                                             chance=0.5, threshold=0.9, passed=False)]


def test_the_generators_and_the_fitted_judges_work_on_a_real_model():
    """model_generate plays each spec's caption with the given seeds (the same call, the same
    clips);
    codec_generate gives the synth clip through the model's codec, as long as the original;
    the fitted judges answer with the attribute's values."""
    import musicgen_edu as mg

    model = mg.load_model("edu-tiny", device="cpu")
    play = gr.model_generate(mg.MusicGenerator(model, progress=False), batch=3)
    specs = [spec for spec, _, _ in gr.prompt_groups("tempo", 4, seed=1)]
    clips = play(specs, [0, 0, 1, 1], 1.0)
    assert [c.shape for c in clips] == [(SR,)] * 4
    again = play(specs, [0, 0, 1, 1], 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(again, clips))
    assert not np.allclose(clips[0], clips[1])                         # slow and fast differ
    through = gr.codec_generate(model)(specs[:2], [0, 1], 1.5)
    original = gr.synth_generate(SR)(specs[:2], [0, 1], 1.5)
    assert [c.shape for c in through] == [c.shape for c in original]
    assert not np.allclose(through[0], original[0])
    judges = gr.Judges.fit(SR, clips=8, seconds=2.0)
    assert judges.hear("instrument", original[0], SR) in ATTRIBUTES["instrument"]
    assert judges.hear("mode", original[0], SR) in ATTRIBUTES["mode"]
    with pytest.raises(ValueError, match="texture"):
        judges.hear("texture", original[0], SR)


def test_a_continuation_is_judged_on_what_the_model_added_after_the_synth_prompt():
    """continuation_generate gives the model the first 0.5 s of the synth's 1.5 s clip (the right
    key) and returns the rest it made: the last 1.0 s, exactly what generate_continuation
    appends to that start;
    trimmed cuts the synth's own clip at the same sample; a prompt as long as the clip is
    refused by name."""
    import torch

    import musicgen_edu as mg

    generator = mg.MusicGenerator(mg.load_model("edu-tiny", device="cpu"), progress=False)
    specs = [spec for spec, _, _ in gr.prompt_groups("mode", 2, seed=4)]
    rest = gr.continuation_generate(generator, prompt_seconds=0.5)(specs, [3, 3], 1.5)
    assert [c.shape for c in rest] == [(SR,)] * 2
    head = [w[: SR // 2] for w in gr.synth_generate(SR)(specs, [3, 3], 1.5)]   # the clip's start
    whole = generator.generate_continuation(torch.from_numpy(np.stack(head))[:, None], SR,
                                            [s.caption() for s in specs], seeds=[3, 3],
                                            duration=1.5, progress=False)
    for mine, theirs in zip(rest, whole.wav):
        assert np.array_equal(mine, theirs[0, SR // 2:].numpy())
    assert not np.allclose(rest[0], rest[1])                  # major and minor heads differ
    synth_rest = gr.trimmed(gr.synth_generate(SR), 0.5, SR)(specs, [3, 3], 1.5)
    assert np.array_equal(synth_rest[0], render(specs[0], 1.5, SR, seed=3)[SR // 2:])
    for make in (gr.continuation_generate(generator, prompt_seconds=1.5),
                 gr.trimmed(gr.synth_generate(SR), 1.5, SR)):
        with pytest.raises(ValueError, match="prompt_seconds=1.5"):
            make(specs, [3, 3], 1.5)


def test_changed_captions_differ_in_one_word_and_stay_valid():
    spec = ClipSpec(instrument="synth", tempo="slow", bpm=75.0, tonic=9, mode="minor")
    words = spec.caption().split()
    for attribute, changed in [("tempo", "fast"), ("register", "high"), ("instrument", "piano"),
                               ("mode", "major"), ("key", "Eb")]:
        other = gr._changed(spec, attribute)
        diff = [(a, b) for a, b in zip(words, other.caption().split()) if a != b]
        assert len(diff) == 1 and diff[0][1].strip(",") == changed, (attribute, diff)
    assert gr._changed(spec, "tempo").bpm == pytest.approx(140 + (75 - 66) / 18 * 28)


def test_caption_reading_measures_which_words_the_decoder_reads():
    """edu-tiny reads its register word (changing it costs loss); a decoder that cannot see the
    caption (its text projection zeroed) reads nothing: every gap is 0."""
    import torch

    import musicgen_edu as mg

    model = mg.load_model("edu-tiny", device="cpu", cache=False)
    model.model.train()                          # as a trainer leaves it: dropout on
    table = gr.caption_reading(model, clips=8, seconds=2.0, batch=4).set_index("change")
    assert model.model.training                  # measured without dropout, mode restored
    again = gr.caption_reading(model, clips=8, seconds=2.0, batch=4).set_index("change")
    assert table["gap"].tolist() == again["gap"].tolist()
    assert list(table.index) == ["caption dropped", "tempo changed", "register changed",
                                 "instrument changed", "mode changed", "key changed"]
    assert table.loc["caption dropped", "gap"] > 0.001
    assert table.loc["register changed", "gap"] > 0.01
    with torch.no_grad():
        for p in model.model.enc_to_dec_proj.parameters():
            p.zero_()
    blind = gr.caption_reading(model, clips=8, seconds=2.0, batch=4)
    assert blind["gap"].abs().max() < 1e-5, blind


def test_memorised_tells_a_decoder_that_learned_its_clips():
    """Before: edu-tiny's losses on the first 4 clips (2 s) of the training seed and of a
    held-out seed are within 0.5 nats. After 12 updates on just those 4 training clips, theirs
    falls and the held-out clips' does not follow: the gap ``memorised`` reports."""
    import copy
    import dataclasses

    import torch

    import musicgen_edu as mg
    from musicgen_edu.train.lora import prepare_trainable, trainable_parameters
    from musicgen_edu.train.objective import CaptionEncoder, training_step

    shipped = mg.load_model("edu-tiny", device="cpu", cache=False)
    model = dataclasses.replace(shipped, model=copy.deepcopy(shipped.model))

    def table():
        t = gr.memorised(model, clips=4, seconds=2.0, batch=4).set_index("clips")
        assert t["seed"].tolist() == [0, 3]
        return t["loss"]

    before = table()
    assert abs(before["trained on"] - before["held out"]) < 0.5, before
    prepare_trainable(model, lora=False)
    tokens, specs = gr._clip_tokens(model, 4, 2.0, seed=0)
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=3e-3)
    encoder, captions = CaptionEncoder(model), [s.caption() for s in specs]
    for _ in range(12):
        optimizer.zero_grad()
        training_step(model, encoder, tokens, captions).loss.backward()
        optimizer.step()
    model.model.train()
    after = table()
    assert model.model.training                      # measured without dropout, mode restored
    assert after["trained on"] < before["trained on"] - 0.5, (before, after)
    assert after["held out"] - after["trained on"] > 0.5, after
