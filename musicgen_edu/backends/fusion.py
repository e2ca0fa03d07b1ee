"""Fewer, larger products per decode step: one for each self-attention's q/k/v, one for the heads.

A one-token step multiplies 2 rows (CFG) by each weight matrix. On a GPU each product is its
own kernel, and at 2 rows a kernel costs a few microseconds whatever its size, so a step's
time goes to the number of GEMMs, not their size (bench/README.md, section "One product for
q/k/v and one for the heads"). The three self-attention projections read the same input, and
so do the K codebook heads, so their weights can be stacked into one matrix and multiplied
once (the fused ``wqkv`` of pytorch-labs/gpt-fast ``model.py``; Megatron's
``query_key_value``): 24 blocks x 3 -> 24 products for q/k/v, 4 heads -> 1, i.e. 51 fewer
kernels per step for MusicGen-small. Each output is the same sum over the same inputs; whether
its bits are too depends on the GEMM kernel the larger shape gets (``tests/test_fusion.py``
checks them on a CPU).

The stacked weights are copies (the transformers model keeps its own): ≈ 3·D²·L + K·V·D values,
336 MB for MusicGen-small in fp32 (with int8 layouts a passing copy, quantized right after).
Skipped with a warning when the copy does not fit the free memory twice over. The text
key/value projections of cross-attention run once per generation and stay as they are;
cross-attention's queries are one product already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .linears import room_for_copy

if TYPE_CHECKING:
    from .native import NativeDecoder

__all__ = ["fuse_projections", "stack_linears"]


def stack_linears(layers: list[nn.Linear]) -> nn.Linear:
    """One bias-free ``nn.Linear`` whose output is the layers' outputs side by side:
    ``[..., I] -> [..., O_1 + O_2 + ...]`` (weights stacked along the output rows; a copy)."""
    if any(type(layer) is not nn.Linear or layer.bias is not None for layer in layers):
        raise ValueError("stack_linears stacks bias-free nn.Linear layers only.")
    weight = torch.cat([layer.weight.detach() for layer in layers])         # [sum O, I]
    with torch.device("meta"):                                              # no allocation
        stacked = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    stacked.weight = nn.Parameter(weight, requires_grad=False)
    return stacked


def fuse_projections(decoder: NativeDecoder) -> NativeDecoder:
    """In place: each block's self-attention gets ``qkv_proj`` (q, k, v in one product) instead
    of ``q_proj``/``k_proj``/``v_proj``, and ``lm_heads`` becomes one head of ``K·V`` outputs.

    For a :class:`~musicgen_edu.backends.native.NativeDecoder` on plain ``nn.Linear`` weights,
    before any other layout (int8 and oneDNN packing then work on the stacked layers as on any
    other). Returns the decoder unchanged, with a warning, when memory is short.
    """
    attns = [block.self_attn for block in decoder.blocks]
    groups = [[a.q_proj, a.k_proj, a.v_proj] for a in attns] + [decoder.codebook_heads]
    size = sum(layer.weight.numel() * layer.weight.element_size()
               for group in groups for layer in group)
    if not room_for_copy(size, "fusing the q/k/v projections and the heads",
                          decoder.positions.device):
        return decoder
    for attn, group in zip(attns, groups):
        attn.qkv_proj = stack_linears(group)                 # [3·D, D]
        del attn.q_proj, attn.k_proj, attn.v_proj
    if len(decoder.lm_heads) > 1:
        decoder.lm_heads = nn.ModuleList([stack_linears(groups[-1])])       # [K·V, D]
    return decoder

