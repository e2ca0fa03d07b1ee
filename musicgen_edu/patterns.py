"""Codebook delay interleaving and its inverse.

MusicGen predicts K EnCodec codebooks with one transformer by *delaying* codebook k by k steps
(Copet et al. 2023, "Simple and Controllable Music Generation", sec. 2.2; audiocraft
``modules/codebooks_patterns.py::DelayedPatternProvider``; transformers
``MusicgenForCausalLM.build_delay_pattern_mask``). With K = 4 codebooks and S = 4 frames
(``S`` = special token, digits = frame index):

    step:        0  1  2  3  4  5  6  7
    codebook 0: [S, 0, 1, 2, 3, S, S, S]
    codebook 1: [S, S, 0, 1, 2, 3, S, S]
    codebook 2: [S, S, S, 0, 1, 2, 3, S]
    codebook 3: [S, S, S, S, 0, 1, 2, 3]

Column 0 is the start (BOS) column; at each step the model reads one column and predicts the
next, so frame f of codebook k is predicted after the coarser codebooks of the same frame are
already known. Stereo models interleave left/right codebooks ``[L0, R0, L1, R1, ...]`` and
delay each pair together (delay of codebook k is k // 2).

Vocabulary: ``[B, K, S]`` codebook tokens (batch, codebooks, frames); ``[B, K, S + D + 1]`` the
delayed grid, where D is the largest delay.
"""

from __future__ import annotations

import torch

__all__ = ["codebook_delays", "delay_pattern", "build_delay_grid", "undelay", "UNKNOWN"]

UNKNOWN = -1  # grid value for "to be generated"


def codebook_delays(num_codebooks: int, audio_channels: int = 1) -> list[int]:
    """Delay in steps of each codebook: ``[0, 1, 2, 3]`` mono, ``[0, 0, 1, 1, ...]`` stereo."""
    if audio_channels == 2:
        return [k // 2 for k in range(num_codebooks)]
    return list(range(num_codebooks))


def delay_pattern(tokens: torch.Tensor, special: int, audio_channels: int = 1) -> torch.Tensor:
    """Interleave known tokens ``[B, K, S]`` into the delayed grid ``[B, K, S + D + 1]``.

    Example (K = 2, S = 3, special = 9)::

        >>> delay_pattern(torch.tensor([[[1, 2, 3], [4, 5, 6]]]), special=9)
        tensor([[[9, 1, 2, 3, 9],
                 [9, 9, 4, 5, 6]]])
    """
    return build_delay_grid(tokens, tokens.shape[-1], special, audio_channels)


def build_delay_grid(prompt: torch.Tensor, total_frames: int, special: int,
                     audio_channels: int = 1) -> torch.Tensor:
    """The grid a decoder loop fills: specials, known prompt tokens, and ``UNKNOWN`` holes.

    Args:
        prompt: known tokens ``[B, K, P]`` (P may be 0) that start every sequence.
        total_frames: F, frames in the finished sequence (prompt included), F >= P.
        special: the BOS/pad token id (``codebook_size``, 2048 for MusicGen).
        audio_channels: 2 for stereo models (codebook pairs share a delay).

    Returns:
        ``[B, K, F + D + 1]`` long tensor: column 0 is BOS; codebook k at column c holds
        frame ``c - 1 - delay[k]`` (prompt token if known, ``UNKNOWN`` if to be generated) or
        ``special`` outside ``0 <= frame < F``.
    """
    batch, num_codebooks, prompt_len = prompt.shape
    if prompt_len > total_frames:
        raise ValueError(f"prompt has {prompt_len} frames, more than total_frames={total_frames}")
    delays = codebook_delays(num_codebooks, audio_channels)
    columns = total_frames + max(delays) + 1
    grid = torch.full((batch, num_codebooks, columns), special, dtype=torch.long,
                      device=prompt.device)
    for k, d in enumerate(delays):
        grid[:, k, 1 + d: 1 + d + total_frames] = UNKNOWN              # frames to generate
        grid[:, k, 1 + d: 1 + d + prompt_len] = prompt[:, k]           # known prompt frames
    return grid


def undelay(grid: torch.Tensor, total_frames: int, audio_channels: int = 1) -> torch.Tensor:
    """Inverse of :func:`build_delay_grid`: ``[B, K, F + D + 1]`` -> aligned tokens ``[B, K, F]``."""
    delays = codebook_delays(grid.shape[1], audio_channels)
    rows = [grid[:, k, 1 + d: 1 + d + total_frames] for k, d in enumerate(delays)]
    return torch.stack(rows, dim=1)
