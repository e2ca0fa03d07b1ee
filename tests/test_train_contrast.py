"""The caption contrast: the swap, the per-item loss, the hinge's direction, the trainer's resume."""

import json

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.train import TrainConfig
from musicgen_edu.train.contrast import (
    ContrastConfig,
    ContrastTrainer,
    caption_contrast,
    item_losses,
    swap_mode,
)
from musicgen_edu.train.edu_tiny import synth_token_dataset
from musicgen_edu.train.objective import CaptionEncoder, training_step


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
    with pytest.raises(ConfigError, match="'glassy bells' names no mode"):
        swap_mode("glassy bells")


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
    hinge, true_mean, gap = caption_contrast(model, enc, tokens, texts, margin=100.0)
    with torch.no_grad():
        want = item_losses(model, enc, tokens, [swap_mode(t) for t in texts]) - \
            item_losses(model, enc, tokens, texts)
    torch.testing.assert_close(gap, want, rtol=1e-4, atol=1e-5)
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


def test_contrast_settings_are_bounded():
    with pytest.raises(ConfigError, match="margin"):
        ContrastConfig(margin=-1.0)
    with pytest.raises(ConfigError, match="heads"):
        ContrastConfig(heads=0)


def test_the_trainer_logs_the_term_and_resumes_to_the_same_weights(model, heads, tmp_path):
    data = synth_token_dataset(model, 8, 0.5, seed=6)
    config = TrainConfig(steps=4, batch_size=2, learning_rate=1e-3, warmup_steps=1,
                         window=0.5, checkpoint_every=2, sample_seconds=0.1,
                         sample_captions=("slow piano melody in C major, low register",))
    contrast = ContrastConfig(heads=3, seconds=0.5, weight=2.0)
    whole = ContrastTrainer(model, data, tmp_path / "a", config, contrast=contrast,
                            device="cpu", progress=False)
    whole.fit()
    log = whole.log.rows()
    assert {"contrast", "head_loss", "gap"} <= set(log.columns) and len(log) == 4
    assert json.loads((tmp_path / "a" / "contrast_config.json").read_text())["weight"] == 2.0
    first = ContrastTrainer(model, data, tmp_path / "b", config, contrast=contrast,
                            device="cpu", progress=False)
    for _ in range(2):                       # stopped after its first checkpoint
        first.log.append(first.update())
    first.checkpoint()
    with pytest.raises(ConfigError, match=r"\['margin'\] were \[0.1\]"):
        ContrastTrainer(model, data, tmp_path / "b", config, resume=True, device="cpu",
                        contrast=ContrastConfig(heads=3, seconds=0.5, weight=2.0, margin=0.2))
    second = ContrastTrainer(model, data, tmp_path / "b", config, contrast=contrast,
                             resume=True, device="cpu", progress=False)
    assert second.step == 2
    second.fit()
    for name, p in whole.params.items():
        torch.testing.assert_close(second.params[name], p, rtol=0, atol=0)
