"""The training step: delay pattern, masks, per-codebook cross-entropy, caption dropout."""

import copy
import dataclasses

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.patterns import undelay
from musicgen_edu.train.objective import (
    CaptionEncoder,
    delayed_inputs,
    drop_captions,
    training_step,
)


@pytest.fixture(scope="module")
def model():
    base = mg.load_model("debug", device="cpu")
    return dataclasses.replace(base, model=copy.deepcopy(base.model), extra={})


def test_delayed_inputs_follow_the_pattern_and_mask_its_specials():
    inputs, targets, mask = delayed_inputs(torch.tensor([[[1, 2, 3], [4, 5, 6]]]), special=9)
    assert inputs.tolist() == [[[9, 1, 2, 3], [9, 9, 4, 5]]]
    assert targets.tolist() == [[[1, 2, 3, 9], [9, 4, 5, 6]]]
    assert mask.tolist() == [[[True, True, True, False], [False, True, True, True]]]


@pytest.mark.parametrize("channels", [1, 2])
def test_every_frame_is_predicted_exactly_once(channels):
    """The unmasked targets, undelayed, are the tokens themselves: nothing skipped, nothing
    predicted twice, no special position counted."""
    tokens = torch.randint(0, 2048, (2, 4, 7))
    _, targets, mask = delayed_inputs(tokens, 2048, channels)
    assert int(mask.sum()) == tokens.numel()
    grid = torch.cat([torch.full((2, 4, 1), 2048), targets], dim=-1)
    assert torch.equal(undelay(grid, 7, channels), tokens)


def test_the_loss_equals_transformers_labels_loss(model):
    """Our step and transformers' ``MusicgenForCausalLM.forward(labels=...)`` given the delayed
    labels compute the same mean of per-codebook cross-entropies."""
    model.model.eval()
    tokens = torch.randint(0, 2048, (3, 4, 20), generator=torch.Generator().manual_seed(0))
    texts = ["warm pads", None, "drums"]
    captions = CaptionEncoder(model)
    ours = training_step(model, captions, tokens, texts)
    _, targets, _ = delayed_inputs(tokens, model.special_token)
    states, mask = captions(texts)
    theirs = model.model.decoder(labels=targets.transpose(1, 2), encoder_hidden_states=states,
                                 encoder_attention_mask=mask).loss
    torch.testing.assert_close(ours.loss, theirs, rtol=1e-5, atol=1e-5)
    assert len(ours.codebook_loss) == 4 and ours.tokens == tokens.numel()


def test_captions_are_encoded_as_generate_encodes_them(model):
    """The cross-attention input of the training step equals the backend's: same states for
    a caption, the empty condition (zeros, masked) for a dropped one."""
    from musicgen_edu.backends.transformers import TransformersEncoders

    texts = ["lo-fi piano with rain", None]
    states, mask = CaptionEncoder(model)(texts)
    cond = TransformersEncoders(model).encode_text(texts)
    torch.testing.assert_close(states, cond.states, rtol=1e-5, atol=1e-6)
    assert torch.equal(mask, cond.mask)
    assert not states[1].any() and not mask[1].any()


def test_caption_dropout_draws_from_its_own_generator():
    texts = [f"clip {i}" for i in range(1000)]
    dropped = drop_captions(texts, 0.3, torch.Generator().manual_seed(1))
    assert 250 < sum(c is None for c in dropped) < 350
    assert dropped == drop_captions(texts, 0.3, torch.Generator().manual_seed(1))
    assert drop_captions(texts, 0.0, torch.Generator()) == texts


def test_the_caption_cache_keeps_the_most_recent(model, monkeypatch):
    captions = CaptionEncoder(model)
    monkeypatch.setattr(captions, "MAX_CACHED", 2)
    first = captions(["a", "b"])[0]
    captions(["a"])                                        # "a" used again: "b" is the oldest
    captions(["c"])
    assert list(captions.cache) == ["a", "c"]
    torch.testing.assert_close(captions(["a", "b"])[0], first)   # recomputed: the same states
