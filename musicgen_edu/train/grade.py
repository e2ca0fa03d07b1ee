"""Grade a model on synth.py's attributes: does it play what the caption asks? (issue #30)

    judges = Judges.fit(sample_rate)           # the ears: eval.py's estimators, two of them
                                               # fitted on labelled synth clips
    rows = grade(model_generate(generator), judges, sr, per_attribute=100, seconds=4.0)
    accuracy_table(rows)                       # attribute, accuracy, chance, threshold, passed

The protocol (issue #30): for each attribute, groups of prompts that differ only in that
attribute. A group starts from a random spec (synth.random_spec) and takes every value of the
attribute (2 values, or 4 instruments), all with the same seed; ``per_attribute`` generations
in all (50 pairs, or 25 groups of 4). Each clip is judged by ear for that attribute alone:

    tempo       eval.tempo_class (onset rate)              chance 50 %   threshold 85 %
    register    eval.register_class (weighted pitch)       chance 50 %   threshold 90 %
    instrument  Judges.instrument (nearest labelled clip)  chance 25 %   threshold 70 %
    mode        Judges.mode (learned key profiles)         chance 50 %   threshold 70 %

The same grading of the synth's own renderings of those specs (``synth_generate``) and of their
codec round trip (``codec_generate``) shows how well the ears hear at all: the ceiling a
model's accuracy is read against. ``caption_reading`` asks the question before sampling: how
much the decoder's teacher-forced loss rises when one word of the caption is changed (a word
it does not read cannot steer generation, whatever the guidance scale); ``memorised``, how much
lower that loss is on clips it trained on than on new ones (a decoder that learned its clips,
not the rules that made them).

Reading the caption is half of it: a clip is judged over its whole length, so the model must
also *hold* what its first notes set. ``continuation_generate`` asks that alone: the model
continues the synth's own first seconds of each spec (the right key, tempo, register and
instrument, given as an audio prompt with the caption), and only what it adds is judged,
against the synth's own rest of the clip (``trimmed(synth_generate(sr), ...)``)::

    rows = grade(continuation_generate(generator, prompt_seconds=1.0), judges, sr,
                 seconds=5.0)         # judged: the 4 s the model added
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import eval as ears
from .synth import ATTRIBUTES, TEMPO_BPM, ClipSpec, random_spec, render, synth_clips, synth_specs

__all__ = ["Judges", "THRESHOLDS", "CHANCE", "GRADED", "prompt_groups", "grade", "grade_clips",
           "model_generate", "synth_generate", "codec_generate", "continuation_generate",
           "trimmed", "accuracy_table", "caption_reading", "memorised"]

GRADED = ("tempo", "register", "instrument", "mode")
THRESHOLDS = {"tempo": 0.85, "register": 0.90, "instrument": 0.70, "mode": 0.70}
CHANCE = {a: 1 / len(ATTRIBUTES[a]) for a in GRADED}


@dataclass
class Judges:
    """One estimator per graded attribute: ``judges.hear(attribute, wav, sr) -> value``."""

    instrument: ears.NearestNeighbour
    mode: ears.KeyProfiles

    @classmethod
    def fit(cls, sample_rate: int, clips: int = 240, seconds: float = 4.0,
            seed: int = 7) -> Judges:
        """Fit the instrument and mode judges on ``clips`` synth clips of seed ``seed`` (a seed
        no model trains on; ``scripts/train_edu_tiny.py`` trains on seed 0)."""
        examples = synth_clips(clips, seconds, sample_rate, seed=seed)
        wavs = [w for w, _, _ in examples]
        specs = [s for _, _, s in examples]
        return cls(ears.NearestNeighbour().fit(wavs, [s.instrument for s in specs], sample_rate),
                   ears.KeyProfiles().fit(wavs, [s.mode for s in specs],
                                          [s.tonic for s in specs], sample_rate))

    def hear(self, attribute: str, wav: np.ndarray, sr: int) -> str:
        if attribute == "tempo":
            return ears.tempo_class(wav, sr)
        if attribute == "register":
            return ears.register_class(wav, sr)
        if attribute == "instrument":
            return self.instrument.predict(wav, sr)
        if attribute == "mode":
            return self.mode.predict(wav, sr)
        raise ValueError(f"attribute={attribute!r}; graded: {', '.join(GRADED)}.")


def prompt_groups(attribute: str, per_attribute: int = 100,
                  seed: int = 0) -> list[tuple[ClipSpec, str, int]]:
    """``per_attribute`` specs in groups that differ only in ``attribute`` (one per value):
    ``(spec, wanted value, group seed)``; deterministic under ``seed``."""
    if attribute not in GRADED:
        raise ValueError(f"attribute={attribute!r}; graded: {', '.join(GRADED)}.")
    values = ATTRIBUTES[attribute]
    if per_attribute < 1 or per_attribute % len(values) or seed < 0:
        raise ValueError(f"per_attribute={per_attribute}, seed={seed}: per_attribute must be a "
                         f"positive multiple of {len(values)} (whole groups, every {attribute} "
                         "as often) and seed at least 0.")
    out = []
    for group in range(-(-per_attribute // len(values))):
        for value in values:        # the same draws for the rest (tempo: bpm at the same
            rng = np.random.default_rng([seed, GRADED.index(attribute), group])  # place in range)
            out.append((random_spec(rng, **{attribute: value}), value, seed * 1000 + group))
    return out


def grade_clips(judges: Judges, attribute: str, clips: list[np.ndarray], wanted: list[str],
                sr: int, captions: list[str]) -> pd.DataFrame:
    """One row per clip: attribute, caption, wanted, heard, correct."""
    heard = [judges.hear(attribute, w, sr) for w in clips]
    return pd.DataFrame({"attribute": attribute, "caption": captions, "wanted": wanted,
                         "heard": heard, "correct": [h == w for h, w in zip(heard, wanted)]})


Generate = Callable[[list[ClipSpec], list[int], float], list[np.ndarray]]


def grade(generate: Generate, judges: Judges, sample_rate: int, per_attribute: int = 100,
          seconds: float = 4.0, seed: int = 0,
          attributes: tuple[str, ...] = GRADED) -> pd.DataFrame:
    """Make ``per_attribute`` clips per attribute from prompt groups and judge them.

    Args:
        generate: ``(specs, seeds, seconds) -> [T] float arrays at sample_rate``: a model
            playing each spec's caption (:func:`model_generate`), the synth rendering the
            spec itself (:func:`synth_generate`) or its codec round trip
            (:func:`codec_generate`).
        judges: the fitted ears.
        sample_rate: of the clips ``generate`` returns.
    """
    frames = []
    for attribute in attributes:
        group = prompt_groups(attribute, per_attribute, seed)
        specs = [spec for spec, _, _ in group]
        clips = generate(specs, [s for _, _, s in group], seconds)
        frames.append(grade_clips(judges, attribute, clips, [v for _, v, _ in group],
                                  sample_rate, [s.caption() for s in specs]))
    return pd.concat(frames, ignore_index=True)


def model_generate(generator, batch: int = 50, **settings) -> Generate:
    """A :class:`~musicgen_edu.MusicGenerator` playing each spec's caption (``settings``:
    GenerationConfig fields), ``batch`` prompts at a time, each with its group's seed."""
    def generate(specs: list[ClipSpec], seeds: list[int], seconds: float) -> list[np.ndarray]:
        clips: list[np.ndarray] = []
        for i in range(0, len(specs), batch):
            out = generator.generate([s.caption() for s in specs[i: i + batch]],
                                     seeds=seeds[i: i + batch], duration=seconds,
                                     progress=False, **settings)
            clips += [w[0].numpy() for w in out.wav]                    # [C=1, T] -> [T]
        return clips

    return generate


def synth_generate(sample_rate: int) -> Generate:
    """The synth rendering each spec: what the ears hear in the real thing (the ceiling)."""
    def generate(specs: list[ClipSpec], seeds: list[int], seconds: float) -> list[np.ndarray]:
        return [render(spec, seconds, sample_rate, seed=s) for spec, s in zip(specs, seeds)]

    return generate


def codec_generate(model) -> Generate:
    """The synth's clips through ``model``'s codec (encode, decode): what survives the codec."""
    import torch

    def generate(specs: list[ClipSpec], seeds: list[int], seconds: float) -> list[np.ndarray]:
        wavs = synth_generate(model.sample_rate)(specs, seeds, seconds)
        codec = model.model.audio_encoder
        out = []
        with torch.no_grad():
            for w in wavs:
                x = torch.as_tensor(w, dtype=torch.float32)[None, None].to(model.device)
                codes = codec.encode(x).audio_codes                       # [1, 1, K, S]
                out.append(codec.decode(codes, [None]).audio_values[0, 0, : len(w)].cpu().numpy())
        return out

    return generate


def _check_prompt(prompt_seconds: float, seconds: float) -> None:
    if not 0 < prompt_seconds < seconds:
        raise ValueError(f"prompt_seconds={prompt_seconds} must be above 0 and below the clip's "
                         f"seconds={seconds} (something must be left to judge).")


def continuation_generate(generator, prompt_seconds: float = 1.0, batch: int = 50,
                          **settings) -> Generate:
    """The model continuing each spec's synth clip (``seconds`` long, the group's seed): the
    clip's first ``prompt_seconds`` go in as an audio prompt with the caption
    (``generate_continuation``; the model reads them as its codec's tokens), and the rest,
    which the model made, comes back: ``[T]`` arrays of ``seconds - prompt_seconds``. Judge
    them against ``trimmed(synth_generate(sr), prompt_seconds, sr)``: the same clip's rest."""
    sr = generator.model.sample_rate

    def generate(specs: list[ClipSpec], seeds: list[int], seconds: float) -> list[np.ndarray]:
        import torch

        _check_prompt(prompt_seconds, seconds)
        cut, clips = int(round(prompt_seconds * sr)), []
        heads = [w[:cut] for w in synth_generate(sr)(specs, seeds, seconds)]  # the clip's start
        for i in range(0, len(specs), batch):
            audio = torch.from_numpy(np.stack(heads[i: i + batch]))[:, None]     # [b, 1, T_p]
            out = generator.generate_continuation(
                audio, sr, [s.caption() for s in specs[i: i + batch]], seeds=seeds[i: i + batch],
                duration=seconds, progress=False, **settings)
            clips += [w[0, cut:].numpy() for w in out.wav]                  # [C=1, T] -> rest
        return clips

    return generate


def trimmed(generate: Generate, prompt_seconds: float, sample_rate: int) -> Generate:
    """``generate``'s clips without their first ``prompt_seconds``: e.g. the synth's own rest
    of each clip, the ceiling for :func:`continuation_generate`."""
    def trim(specs: list[ClipSpec], seeds: list[int], seconds: float) -> list[np.ndarray]:
        _check_prompt(prompt_seconds, seconds)
        cut = int(round(prompt_seconds * sample_rate))
        return [w[cut:] for w in generate(specs, seeds, seconds)]

    return trim


def accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per attribute: n, accuracy, chance, threshold and whether it passed."""
    table = rows.groupby("attribute", sort=False)["correct"].agg(["size", "mean"]).reset_index()
    table.columns = ["attribute", "n", "accuracy"]
    table["chance"] = table["attribute"].map(CHANCE)
    table["threshold"] = table["attribute"].map(THRESHOLDS)
    table["passed"] = table["accuracy"] >= table["threshold"]
    return table


def _changed(spec: ClipSpec, attribute: str) -> ClipSpec:
    """``spec`` with one attribute's word changed: the other tempo (bpm at the same place in
    its range), register or mode, the next instrument, the key a tritone away."""
    if attribute == "key":
        return spec.replace(tonic=(spec.tonic + 6) % 12)
    values = ATTRIBUTES[attribute]
    other = values[(values.index(getattr(spec, attribute)) + 1) % len(values)]
    if attribute != "tempo":
        return spec.replace(**{attribute: other})
    (low, high), (new_low, new_high) = TEMPO_BPM[spec.tempo], TEMPO_BPM[other]
    bpm = new_low + (spec.bpm - low) / (high - low) * (new_high - new_low)
    return spec.replace(tempo=other, bpm=bpm)


def _clip_tokens(model, clips: int, seconds: float, seed: int):
    """The first ``clips`` synth clips of ``seed`` as training sees them (encoded by
    ``edu_tiny.synth_token_dataset``, the model's codec): (tokens [N, K, S], specs)."""
    import torch

    from .edu_tiny import synth_token_dataset

    data = synth_token_dataset(model, clips, seconds, seed)
    tokens = torch.stack(data.windows).long().to(model.device)                  # [N, K, S]
    return tokens, synth_specs(clips, seed)


@contextmanager
def _no_dropout(model):
    """The model in eval mode inside, as it was after: a trainer leaves dropout on."""
    training = model.model.training
    model.model.eval()
    try:
        yield
    finally:
        model.model.train(training)


def _teacher_forced(model, batch: int = 16) -> Callable:
    """``loss(tokens [N, K, S], captions) -> float``: the mean teacher-forced loss (nats per
    token, mean of the K codebooks) in batches of ``batch``, no gradients; call it under
    :func:`_no_dropout`."""
    import torch

    from .objective import CaptionEncoder, training_step

    encoder = CaptionEncoder(model)

    def loss(tokens, captions: list) -> float:
        total, n = 0.0, len(captions)
        with torch.no_grad():
            for i in range(0, n, batch):
                part = captions[i: i + batch]
                total += training_step(model, encoder, tokens[i: i + batch], part).loss.item() \
                    * len(part)
        return total / n
    return loss


def caption_reading(model, clips: int = 48, seconds: float = 5.0, seed: int = 3,
                    batch: int = 16) -> pd.DataFrame:
    """Does the decoder read each word of the caption? One row per change: ``change``,
    ``loss`` (teacher-forced, nats per token, mean of the K codebooks, on ``clips`` synth
    clips of ``seed`` encoded by the model's codec) and ``gap`` = that loss minus the loss
    with the true captions. A gap of 0 means the decoder ignores the word; "caption dropped"
    (the empty condition) is what the whole caption is worth."""
    tokens, specs = _clip_tokens(model, clips, seconds, seed)
    loss = _teacher_forced(model, batch)
    with _no_dropout(model):                # the gaps are differences of 1e-4
        base = loss(tokens, [s.caption() for s in specs])
        rows = [("caption dropped", loss(tokens, [None] * clips))]
        rows += [(f"{a} changed", loss(tokens, [_changed(s, a).caption() for s in specs]))
                 for a in ("tempo", "register", "instrument", "mode", "key")]
    return pd.DataFrame([{"change": c, "loss": v, "gap": v - base} for c, v in rows])


def memorised(model, clips: int = 48, seconds: float = 5.0, trained_seed: int = 0,
              held_seed: int = 3, batch: int = 16) -> pd.DataFrame:
    """How much of its loss the decoder owes to having seen the very clips: the teacher-forced
    loss with the true captions on the first ``clips`` synth clips of ``trained_seed`` (the
    training seed: in every run's data) and of ``held_seed`` (in none). Two rows: ``clips``
    ("trained on" or "held out"), ``seed``, ``loss``; a held-out loss well above the trained
    one is a decoder that learned its clips, not the rules that made them."""
    loss = _teacher_forced(model, batch)
    rows = []
    with _no_dropout(model):
        for name, seed in (("trained on", trained_seed), ("held out", held_seed)):
            tokens, specs = _clip_tokens(model, clips, seconds, seed)
            rows.append({"clips": name, "seed": seed,
                         "loss": loss(tokens, [s.caption() for s in specs])})
    return pd.DataFrame(rows)
