"""What a native generation keeps between steps, and the pool that lets the next one reuse it.

:class:`NativeState` holds one generation's buffers, all allocated at its start: a key and a
value cache per block (:func:`new_caches`), the text's cross-attention keys and values
computed once (:func:`text_keys_values`: the re-projection transformers' cache avoids too,
``modeling_musicgen.py``), the position. With fixed-shape steps (``cuda_graph.py``) a captured
graph reads and writes exactly these tensors, so :class:`StatePool` keeps a finished
generation's state by shape and hands it to the next generation of the same shape: its graphs
are replayed, not captured again: a process captures once per shape (capture costs seconds:
bench/README.md, section "Kernel launches and CUDA graphs").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .contract import Conditioning

if TYPE_CHECKING:                          # annotation only: cuda_graph runs native's step
    from .cuda_graph import GraphedStep

__all__ = ["NativeState", "StatePool", "new_caches", "text_keys_values"]


@dataclass
class NativeState:
    """Everything one generation keeps between steps (all preallocated at ``start``)."""

    cond: Conditioning
    k_cache: list            # per block: [N, H, max_len, D/H]
    v_cache: list
    cross_k: list            # per block: [N, H, L, D/H] (text models) or Nones
    cross_v: list
    cross_mask: torch.Tensor | None  # [N, 1, 1, L] additive: 0 attend, dtype-min masked
    pos: int = 0             # positions already in the cache
    steps: int = 0
    graph: GraphedStep | None = None  # the captured one-token steps (cuda_graph.py), if any
    single_steps: int = 0    # one-token steps run so far (the first runs eagerly)
    pool_key: tuple | None = None  # where StatePool.put returns the buffers (fixed-shape steps)


def new_caches(decoder, rows: int, max_len: int, dtype: torch.dtype,
               zeros: bool) -> tuple[list, list]:
    """Per block, key and value caches ``[N, H, max_len, D/H]``.

    Fixed-shape steps attend over every slot, masked or not, and 0 x NaN is NaN: there the
    unfilled slots must hold finite numbers (``zeros``), not uninitialised memory.
    """
    shape = (rows, decoder.heads, max_len, decoder.positions.shape[1] // decoder.heads)
    new = torch.zeros if zeros else torch.empty
    dev = decoder.positions.device
    return ([new(shape, dtype=dtype, device=dev) for _ in decoder.layers],
            [new(shape, dtype=dtype, device=dev) for _ in decoder.layers])


def text_keys_values(decoder, cond: Conditioning, dtype: torch.dtype,
                     bucket: int | None = None) -> tuple:
    """Cross-attention keys and values ``[N, H, L, D/H]`` per block, and the additive mask
    ``[N, 1, 1, L]``; Nones for melody models (their condition is a self-attention prefix).
    With ``bucket`` the text is padded to a multiple of it, under the mask (fewer pool keys)."""
    if cond.prefix:
        return [None] * len(decoder.layers), [None] * len(decoder.layers), None
    assert cond.mask is not None                 # text conditionings carry their padding mask
    states, keep = cond.states.to(decoder.positions.dtype), cond.mask.bool()
    if bucket:
        pad = -states.shape[1] % bucket
        states, keep = F.pad(states, (0, 0, 0, pad)), F.pad(keep, (0, pad))
    attns = [block.encoder_attn for block in decoder.layers]
    cross_k = [a.split(a.k_proj(states)).to(dtype).contiguous() for a in attns]
    cross_v = [a.split(a.v_proj(states)).to(dtype).contiguous() for a in attns]
    keep = keep[:, None, None, :]                                        # [N, 1, 1, L]
    mask = torch.zeros(keep.shape, dtype=dtype, device=states.device).masked_fill(
        ~keep, torch.finfo(dtype).min)
    return cross_k, cross_v, mask


class StatePool:
    """Idle states of finished generations, by ``(rows, max_len, text_len)``, oldest out first.

    ``take`` gives a new generation such a state with its text keys/values copied in (the
    graphs read the pooled tensors), or ``None``; ``put`` keeps a finished one.
    """

    def __init__(self, size: int = 4):
        self.size = size                         # idle states kept (each: caches + graphs)
        self.idle: dict[tuple, NativeState] = {}

    def take(self, key: tuple, cond: Conditioning, cross_k: list, cross_v: list,
             mask: torch.Tensor | None) -> NativeState | None:
        pooled = self.idle.pop(key, None)
        if pooled is None:
            return None
        for dst, src in zip(pooled.cross_k + pooled.cross_v, cross_k + cross_v):
            if dst is not None:
                dst.copy_(src)
        if mask is not None and pooled.cross_mask is not None:   # (both None: melody)
            pooled.cross_mask.copy_(mask)
        if pooled.graph is not None:
            pooled.graph.lengths = []            # buckets used by this generation
        return NativeState(cond, pooled.k_cache, pooled.v_cache, pooled.cross_k, pooled.cross_v,
                           pooled.cross_mask, graph=pooled.graph, pool_key=key)

    def put(self, state: NativeState) -> None:
        if state.pool_key is None:
            return
        self.idle[state.pool_key] = state
        while len(self.idle) > self.size:        # the oldest idle entry goes first
            del self.idle[next(iter(self.idle))]
        state.pool_key = None

    def clear(self) -> None:
        """Drop every idle state (their caches and graphs are freed once nothing holds them)."""
        self.idle.clear()

    def __len__(self) -> int:
        return len(self.idle)
