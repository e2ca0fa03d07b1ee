"""Delay interleaving: layout, inverse, and agreement with transformers' delay mask."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen_edu import build_delay_grid, codebook_delays, delay_pattern, undelay
from musicgen_edu.patterns import UNKNOWN


def test_docstring_grid():
    tokens = torch.tensor([[[0, 1, 2, 3]] * 4])  # frame index in every codebook
    grid = delay_pattern(tokens, special=9)
    assert grid[0].tolist() == [[9, 0, 1, 2, 3, 9, 9, 9],
                                [9, 9, 0, 1, 2, 3, 9, 9],
                                [9, 9, 9, 0, 1, 2, 3, 9],
                                [9, 9, 9, 9, 0, 1, 2, 3]]


def test_stereo_pairs_share_a_delay():
    assert codebook_delays(8, audio_channels=2) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert codebook_delays(4) == [0, 1, 2, 3]


def test_grid_with_prompt_marks_only_new_frames_unknown():
    prompt = torch.full((1, 4, 2), 7)
    grid = build_delay_grid(prompt, total_frames=5, special=9)
    assert grid.shape == (1, 4, 5 + 3 + 1)
    for k in range(4):
        row = grid[0, k].tolist()
        assert row[: 1 + k] == [9] * (1 + k)
        assert row[1 + k: 3 + k] == [7, 7]
        assert row[3 + k: 6 + k] == [UNKNOWN] * 3
        assert row[6 + k:] == [9] * (3 - k)


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 3), k=st.sampled_from([1, 2, 4, 8]), frames=st.integers(1, 30),
       stereo=st.booleans())
def test_undelay_inverts_delay(batch, k, frames, stereo):
    channels = 2 if stereo and k % 2 == 0 else 1
    tokens = torch.randint(0, 2048, (batch, k, frames))
    grid = delay_pattern(tokens, 2048, channels)
    assert grid.shape[-1] == frames + max(codebook_delays(k, channels)) + 1
    assert torch.equal(undelay(grid, frames, channels), tokens)


@settings(max_examples=25, deadline=None)
@given(frames=st.integers(3, 20), prompt=st.integers(0, 5), stereo=st.booleans())
def test_matches_transformers_delay_mask(frames, prompt, stereo):
    """Same grid as transformers' mask. Below 3 frames transformers skips the delay pattern
    altogether (``max_length < 2 * codebooks - 1``) and would feed unmasked tokens; our grid
    stays correct there (checked by the layout tests above)."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    prompt = min(prompt, frames)
    channels, k = (2, 8) if stereo else (1, 4)
    decoder = _decoder(MusicgenDecoderConfig, MusicgenForCausalLM, channels, k)
    tokens = torch.randint(0, 2048, (1, k, prompt))
    ids = torch.cat([torch.full((1, k, 1), 2048), tokens], dim=-1).reshape(k, -1)  # BOS + prompt
    max_delay = max(codebook_delays(k, channels))
    _, mask = decoder.build_delay_pattern_mask(ids, pad_token_id=2048,
                                               max_length=frames + max_delay + 1)
    ours = build_delay_grid(tokens, frames, special=2048, audio_channels=channels)
    assert torch.equal(ours[0], mask)


_DECODERS = {}


def _decoder(config_cls, model_cls, channels, k):
    if (channels, k) not in _DECODERS:
        cfg = config_cls(vocab_size=2048, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         ffn_dim=8, num_codebooks=k, audio_channels=channels)
        _DECODERS[channels, k] = model_cls(cfg)
    return _DECODERS[channels, k]
