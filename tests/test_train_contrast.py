"""The caption contrast: the swap, the per-item loss, the hinge's direction, the trainer's resume."""

import json

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.train import TrainConfig, Trainer
from musicgen_edu.train.contrast import (
    ContrastConfig,
    ContrastTrainer,
    caption_contrast,
    item_losses,
    span_losses,
    swap_mode,
)
from musicgen_edu.train.edu_tiny import synth_token_dataset
from musicgen_edu.train.objective import CaptionEncoder, training_step
from musicgen_edu.train.synth import synth_specs


@pytest.fixture(scope="module")
def model():
    return mg.load_model("debug", device="cpu", dtype="float32", cache=False)


@pytest.fixture(scope="module")
def heads(model):
    return synth_token_dataset(model, 6, 0.5, seed=5)           # 6 windows [K, 25]


def test_swap_mode_swaps_one_word_either_way():
    assert swap_mode("fast piano chords in A minor, high register") == \
        "fast piano chords in A major, high register"
    assert swap_mode("slow organ melody in Eb major, low register, with drums") == \
        "slow organ melody in Eb minor, low register, with drums"
    for spec in synth_specs(200, seed=4):               # every synth caption, both ways back
        caption = spec.caption()
        assert swap_mode(caption) != caption and swap_mode(swap_mode(caption)) == caption


@pytest.mark.parametrize("caption, found", [("glassy bells", 0), ("majority rules", 0),
                                            ("C major to A minor", 2), ("minor minor", 2)])
def test_swap_mode_refuses_captions_without_exactly_one_mode_word(caption, found):
    with pytest.raises(ConfigError, match=f"names {found} modes.*needs exactly one"):
        swap_mode(caption)


def test_item_losses_average_to_the_training_step_loss(model, heads):
    """Equal-length items: the mean of the per-item losses is the batch's mean CE."""
    enc = CaptionEncoder(model)
    tokens = torch.stack([w.long() for w in heads.windows])
    with torch.no_grad():
        items = item_losses(model, enc, tokens, list(heads.captions))
        batch = training_step(model, enc, tokens, list(heads.captions)).loss
    assert items.shape == (6,)
    torch.testing.assert_close(items.mean(), batch, rtol=1e-5, atol=1e-5)
    with torch.no_grad():                    # item 0 alone is item 0 in the batch
        alone = item_losses(model, enc, tokens[:1], [heads.captions[0]])
    torch.testing.assert_close(alone[0], items[0], rtol=1e-4, atol=1e-4)


def test_the_hinge_is_the_margin_minus_the_gap_and_a_step_on_it_widens_the_gap(heads):
    model = mg.load_model("debug", device="cpu", dtype="float32", cache=False)
    enc = CaptionEncoder(model)
    tokens = torch.stack([w.long() for w in heads.windows])
    texts = list(heads.captions)
    model.model.eval()                       # no dropout: the same pass twice
    hinge, _, gap = caption_contrast(model, enc, tokens, texts, margin=100.0)
    with torch.no_grad():
        want = item_losses(model, enc, tokens, [swap_mode(t) for t in texts]) - \
            item_losses(model, enc, tokens, texts)
    torch.testing.assert_close(gap[:, 0], want, rtol=1e-4, atol=1e-5)     # one span: [B, 1]
    torch.testing.assert_close(hinge, (100.0 - want).mean(), rtol=1e-5, atol=1e-4)
    params = [p for n, p in model.model.named_parameters() if n.startswith("decoder.")]
    hinge.backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params if p.grad is not None))
    with torch.no_grad():                    # one short step down the hinge's gradient
        for p in params:
            if p.grad is not None:
                p -= 0.5 * p.grad / norm
    _, _, after = caption_contrast(model, enc, tokens, texts, margin=100.0)
    assert after.mean() > gap.mean() + 1e-4, (gap.mean(), after.mean())


def test_a_span_loss_depends_on_its_span_and_what_came_before_only(model, heads):
    """Two spans of the delayed grid: changing the clip's second half changes the second span's
    loss and leaves the first's (a causal decoder); one span is the item's loss."""
    enc = CaptionEncoder(model)
    tokens = torch.stack([w.long() for w in heads.windows])                  # [6, K, 25]
    texts = list(heads.captions)
    changed = tokens.clone()
    half = (tokens.shape[-1] + model.num_codebooks - 1) // 2    # the first span's positions
    changed[..., half:] = (changed[..., half:] + 1) % model.special_token
    with torch.no_grad():
        before, after = (span_losses(model, enc, t, texts, spans=2) for t in (tokens, changed))
        whole = item_losses(model, enc, tokens, texts)
    assert before.shape == (6, 2)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=1e-5, atol=1e-6)
    assert (after[:, 1] - before[:, 1]).abs().min() > 1e-3
    torch.testing.assert_close(span_losses(model, enc, tokens, texts, spans=1)[:, 0], whole)
    assert before.min() < whole.max() and before.max() > whole.min()


def test_the_hinge_is_taken_span_by_span(heads):
    model = mg.load_model("debug", device="cpu", dtype="float32", cache=False)
    enc = CaptionEncoder(model)
    tokens = torch.stack([w.long() for w in heads.windows])
    texts = list(heads.captions)
    model.model.eval()
    with torch.no_grad():
        out = caption_contrast(model, enc, tokens, texts, margin=0.0, spans=3)
        want = span_losses(model, enc, tokens, [swap_mode(t) for t in texts], 3) - \
            span_losses(model, enc, tokens, texts, 3)
    assert out.gap.shape == (6, 3)
    torch.testing.assert_close(out.gap, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.hinge, torch.relu(-want).mean(), rtol=1e-4, atol=1e-6)


def test_contrast_settings_are_bounded():
    with pytest.raises(ConfigError, match="margin"):
        ContrastConfig(margin=-1.0)
    with pytest.raises(ConfigError, match="heads"):
        ContrastConfig(heads=0)
    with pytest.raises(ConfigError, match="spans"):
        ContrastConfig(spans=0)
    with pytest.raises(ConfigError, match="heads x seconds = 100 x 3.0 = 300 s"):
        ContrastConfig(heads=100, seconds=3.0)


def small(steps: int = 4) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=2, learning_rate=1e-3, warmup_steps=1,
                       window=0.5, checkpoint_every=2, sample_seconds=0.1,
                       sample_captions=("slow piano melody in C major, low register",))


@pytest.fixture(scope="module")
def data(model):
    return synth_token_dataset(model, 8, 0.5, seed=6)


def test_each_update_draws_new_heads_and_a_resume_the_same(model, data, tmp_path):
    trainer = ContrastTrainer(model, data, tmp_path / "a", small(),
                              contrast=ContrastConfig(heads=3, seconds=0.5), progress=False)
    first, again, second = trainer.heads(0), trainer.heads(0), trainer.heads(1)
    assert torch.equal(torch.stack(first.windows), torch.stack(again.windows))
    assert not torch.equal(torch.stack(first.windows), torch.stack(second.windows))
    assert first.captions != second.captions


def test_the_term_changes_the_update_and_at_weight_0_changes_nothing(model, data, tmp_path):
    plain = Trainer(model, data, tmp_path / "plain", small(3), progress=False)
    plain.fit()                              # each built and run in turn: the Trainer seeds
    zero = ContrastTrainer(model, data, tmp_path / "zero", small(3), progress=False,  # dropout
                           contrast=ContrastConfig(heads=2, seconds=0.5, weight=0,
                                                   head_weight=0))
    zero.fit()
    on = ContrastTrainer(model, data, tmp_path / "on", small(3), progress=False,
                         contrast=ContrastConfig(heads=2, seconds=0.5, weight=2.0))
    on.fit()
    assert all(torch.equal(zero.params[n], p) for n, p in plain.params.items())
    assert not all(torch.equal(on.params[n], p) for n, p in plain.params.items())


def test_the_trainer_logs_the_term_and_resumes_to_the_same_weights(model, data, tmp_path):
    config = small()
    contrast = ContrastConfig(heads=3, seconds=0.5, weight=2.0)
    whole = ContrastTrainer(model, data, tmp_path / "a", config, contrast=contrast,
                            device="cpu", progress=False)
    whole.fit()
    log = whole.log.rows()
    assert {"contrast", "head_loss", "gap"} <= set(log.columns) and len(log) == 4
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert saved["contrast"]["weight"] == 2.0 and saved["steps"] == 4
    first = ContrastTrainer(model, data, tmp_path / "b", config, contrast=contrast,
                            device="cpu", progress=False)
    for _ in range(2):                       # stopped after its first checkpoint
        first.log.append(first.update())
    first.checkpoint()
    with pytest.raises(ConfigError, match=r"\['contrast'\] were .*'margin': 0.1.*'margin': 0.2"):
        ContrastTrainer(model, data, tmp_path / "b", config, resume=True, device="cpu",
                        contrast=ContrastConfig(heads=3, seconds=0.5, weight=2.0, margin=0.2))
    with pytest.raises(ConfigError, match=r"\['contrast'\] were \[\{'weight': 2.0.*now \[None\]"):
        Trainer(model, data, tmp_path / "b", config, resume=True)    # the term dropped
    Trainer(model, data, tmp_path / "plain", small(2), progress=False).fit()
    with pytest.raises(ConfigError, match=r"\['contrast'\] were \[None\]"):   # the term added
        ContrastTrainer(model, data, tmp_path / "plain", config, resume=True, contrast=contrast)
    second = ContrastTrainer(model, data, tmp_path / "b", config, contrast=contrast,
                             resume=True, device="cpu", progress=False)
    assert second.step == 2
    second.fit()
    for name, p in whole.params.items():
        torch.testing.assert_close(second.params[name], p, rtol=0, atol=0)


def test_more_spans_than_a_head_has_frames_are_refused_before_any_update(model, data, tmp_path):
    """0.5 s heads at 50 frames/s have 25 frames: 26 spans would leave one empty (0 / 0)."""
    with pytest.raises(ConfigError, match=r"spans=26: a head of 0.5 s has 25 frames; allowed: "
                                          r"1 to 25 spans"):
        ContrastTrainer(model, data, tmp_path / "x", small(), progress=False,
                        contrast=ContrastConfig(heads=2, seconds=0.5, spans=26))
    assert not (tmp_path / "x").exists()
    with torch.no_grad():                # 25 spans: every one holds a target
        heads = torch.stack([w.long() for w in data.windows[:2]])
        losses = span_losses(model, CaptionEncoder(model), heads, list(data.captions[:2]), 25)
    assert torch.isfinite(losses).all() and losses.shape == (2, 25)


def test_span_losses_refuse_more_spans_than_the_delayed_grid_has_positions(model, data):
    """Called directly (no Trainer to check first): an empty span would be a NaN loss."""
    heads = torch.stack([w.long() for w in data.windows[:1]])            # [1, K, 25]
    positions = heads.shape[-1] + heads.shape[1] - 1          # S + D: D = K - 1 delays
    with torch.no_grad():
        assert torch.isfinite(span_losses(model, CaptionEncoder(model), heads,
                                          list(data.captions[:1]), positions)).all()
        for spans in (0, positions + 1):
            with pytest.raises(ConfigError, match=rf"spans={spans}: the delayed grid of these "
                                                  rf"tokens has {positions} positions"):
                span_losses(model, CaptionEncoder(model), heads, list(data.captions[:1]), spans)


def test_check_frames_is_the_head_length_at_the_frame_rate():
    assert ContrastConfig(seconds=0.5, spans=25).check_frames(50) == 25
    assert ContrastConfig(seconds=0.5, spans=13).check_frames(25.5) == 13      # ceil(12.75)
    with pytest.raises(ConfigError, match="spans=14: a head of 0.5 s has 13 frames"):
        ContrastConfig(seconds=0.5, spans=14).check_frames(25.5)
