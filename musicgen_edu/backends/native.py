"""MusicGen's decoder in one readable file, with a static KV cache (the fast backend's network).

The same network as transformers' ``MusicgenDecoder`` / ``MusicgenForCausalLM``
(``models/musicgen/modeling_musicgen.py``) and audiocraft's ``modules/transformer.py``,
written out plainly in the spirit of nanoGPT and pytorch-labs/gpt-fast (``model.py``):

    tokens [N, K, s] ─► sum of K codebook embeddings + sinusoidal positions ─► x [N, s, D]
    for each of L blocks (pre-norm):
        x = x + SelfAttention(LN(x))           causal, keys/values appended to a static cache
        x = x + CrossAttention(LN(x), text)    text keys/values computed once per generation
        x = x + FFN(LN(x))                     Linear(D, F) ─► GELU ─► Linear(F, D)
    x = LN(x);  logits[k] = Head_k(x)          one linear head per codebook ─► [N, K, V]

What makes it fast is what it does *not* do each step: no cache objects growing by
concatenation, no re-projection of the text states, no mask tensors rebuilt from scratch,
no Python bookkeeping beyond one loop over the blocks (the buffers: ``native_state.py``).
One decode step, tokens in, tokens out, is :func:`decode_step` (at the end of this file): every
path of the backend runs it. It reaches the network one of two ways: :meth:`NativeDecoder.forward`
runs a step eagerly at an ``int`` position (the cache sliced to its filled part),
:meth:`NativeDecoder.step_static` a one-token step at a tensor position with fixed shapes (the
whole attention bucket under a mask: what a CUDA graph captures); each module has the two as
``forward`` and ``forward_static``. The backend that drives it is
``native_backend.NativeBackend``. Weights are *shared* with the loaded transformers model;
``NativeDecoder.from_transformers`` is the state-dict mapping.
Around this file, each speed trick in its own: on a CPU the weights laid out for the kernel
that reads them (``layouts.py``: oneDNN-packed, int8, or our own kernels in ``thin.py``, which
also run a whole block of a one-token step in one call), chosen by timing at first use
(``cpu.choose_native_path``; the numbers: bench/README.md, section "Choosing the path per
machine"); on a GPU, q/k/v and the heads as one product each (``fusion.py``) and each one-token
step replayed as a CUDA graph (``cuda_graph.py``). Melody models have no cross-attention: their
conditioning is a prefix fed through self-attention at the first step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..sampling import Sampling
from .native_state import NativeState

__all__ = ["decode_step", "FixedShape", "NativeDecoder", "Block", "Attention",
           "sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """``[length, dim]`` position table: ``[cos(p·w_i), sin(p·w_i)]``, w_i = 10000^(-i/(dim/2-1)).

    The tensor2tensor variant used by MusicGen (transformers ``MusicgenSinusoidalPositionalEmbedding``).
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(table, (0, dim % 2))


class Attention(nn.Module):
    """Multi-head attention without biases; queries from ``x``, keys/values given or cached."""

    # On a CPU with our kernels (the "thin" layout): torch.ops.musicgen_edu.decode_attention
    # (decode_step.cpp) for one-token queries — eager self-attention steps, and cross-attention
    # to the text; otherwise torch's SDPA.
    decode_kernel: Callable[..., torch.Tensor] | None = None

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.qkv_proj: nn.Linear | None = None   # q/k/v as one product, where fused (fusion.py)

    def project(self, x: torch.Tensor) -> tuple:
        """Queries, keys and values ``[N, s, D]`` each: three products, or one where fused."""
        if self.qkv_proj is not None:
            return self.qkv_proj(x).chunk(3, dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def split(self, x: torch.Tensor) -> torch.Tensor:   # [N, s, D] -> [N, H, s, D/H]
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def merge(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Heads ``[N, H, s, D/H]`` -> ``[N, s, D]`` in ``x``'s dtype, then the output projection."""
        return self.out_proj(out.to(x.dtype).transpose(1, 2).reshape(x.shape))

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                pos: int) -> torch.Tensor:
        """Causal self-attention, eager: write this step's keys/values at ``pos``, attend to the
        filled part ``[0, pos+s)`` of the cache (sliced: its shape changes every step)."""
        s = x.shape[1]
        q, k, v = (self.split(t) for t in self.project(x))
        k_cache[:, :, pos: pos + s], v_cache[:, :, pos: pos + s] = k, v  # cast to cache dtype
        if s == 1 and self.decode_kernel is not None:                    # our CPU kernel
            return self.merge(self.decode_kernel(q, k_cache, v_cache, pos + 1), x)
        k_cache, v_cache = k_cache[:, :, : pos + s], v_cache[:, :, : pos + s]
        out = F.scaled_dot_product_attention(q.to(k_cache.dtype), k_cache, v_cache,
                                             is_causal=s > 1)
        return self.merge(out, x)

    def forward_static(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same for one token with fixed shapes (what a CUDA graph can capture): ``pos`` a
        tensor ``[1]``, the write an ``index_copy_``, attention over the whole (bucket of the)
        cache with the additive ``mask`` ``[1, 1, 1, length]`` hiding what lies ahead."""
        q, k, v = (self.split(t) for t in self.project(x))
        k_cache.index_copy_(2, pos, k.to(k_cache.dtype))
        v_cache.index_copy_(2, pos, v.to(v_cache.dtype))
        out = F.scaled_dot_product_attention(q.to(k_cache.dtype), k_cache, v_cache, attn_mask=mask)
        return self.merge(out, x)

    def cross(self, x, k, v, mask) -> torch.Tensor:
        """Attention to precomputed text keys/values ``[N, H, L, D/H]`` with an additive mask."""
        q = self.split(self.q_proj(x))
        if x.shape[1] == 1 and self.decode_kernel is not None and k.is_contiguous() \
                and v.is_contiguous():
            out = self.decode_kernel(q, k, v, k.shape[2], mask)     # reads q in x's dtype
        else:
            out = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask)
        return self.merge(out, x)


class Block(nn.Module):
    """One pre-norm decoder layer: self-attention, cross-attention (text models), FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, cross: bool):
        super().__init__()
        self.self_attn_layer_norm, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        if cross:
            self.encoder_attn_layer_norm, self.encoder_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim, bias=False), nn.Linear(ffn_dim, dim, bias=False)
        self.cross = cross
        # CPU, our kernels: this forward for one token in one C++ call, same bits, no Python
        # between its ~40 operators (thin.block_kernels; decode_step.cpp, decode_block)
        self.block_kernel: Callable[..., torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: int,
                cross_k=None, cross_v=None, cross_mask=None) -> torch.Tensor:
        """The eager step at position ``pos``: ``x [N, s, D]`` -> ``[N, s, D]``."""
        step = self.block_kernel               # (read once: breakdown may swap it meanwhile)
        if step is not None and x.shape[1] == 1 \
                and (cross_k is None or cross_k.is_contiguous() and cross_v.is_contiguous()):
            return step(x, k_cache, v_cache, pos, cross_k, cross_v, cross_mask)
        x = x + self.self_attn(self.self_attn_layer_norm(x), k_cache, v_cache, pos)
        return self.cross_and_ffn(x, cross_k, cross_v, cross_mask)

    def forward_static(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       pos: torch.Tensor, self_mask: torch.Tensor, cross_k=None, cross_v=None,
                       cross_mask=None) -> torch.Tensor:
        """The fixed-shape one-token step at position tensor ``pos`` (``Attention.forward_static``)."""
        x = x + self.self_attn.forward_static(self.self_attn_layer_norm(x), k_cache, v_cache,
                                              pos, self_mask)
        return self.cross_and_ffn(x, cross_k, cross_v, cross_mask)

    def cross_and_ffn(self, x: torch.Tensor, cross_k, cross_v, cross_mask) -> torch.Tensor:
        """The rest of the block, the same on both paths: cross-attention, then the FFN."""
        if self.cross:
            x = x + self.encoder_attn.cross(self.encoder_attn_layer_norm(x), cross_k, cross_v,
                                            cross_mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class NativeDecoder(nn.Module):
    """The MusicGen decoder (embeddings, blocks, per-codebook heads) over shared weights."""

    positions: torch.Tensor         # [max_positions, D] sinusoidal table (a buffer)

    def __init__(self, num_codebooks: int, vocab: int, dim: int, heads: int, layers: int,
                 ffn_dim: int, cross: bool, max_positions: int, embed_scale: float = 1.0):
        super().__init__()
        self.num_codebooks, self.heads, self.embed_scale = num_codebooks, heads, embed_scale
        self.embed_tokens = nn.ModuleList(nn.Embedding(vocab + 1, dim) for _ in range(num_codebooks))
        self.layers = nn.ModuleList(Block(dim, heads, ffn_dim, cross) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.lm_heads = nn.ModuleList(nn.Linear(dim, vocab, bias=False) for _ in range(num_codebooks))
        self.register_buffer("positions", sinusoidal_positions(max_positions, dim), persistent=False)

    @classmethod
    def from_transformers(cls, causal_lm) -> NativeDecoder:
        """Wrap a transformers ``MusicgenForCausalLM`` (or the melody one): share its weights.

        State-dict mapping: ``model.decoder.<name>`` -> ``<name>`` (same module names), and
        ``lm_heads.*`` -> ``lm_heads.*``. Nothing is copied: parameters are the same tensors.
        """
        cfg, inner = causal_lm.config, causal_lm.model.decoder
        cross = hasattr(inner.layers[0], "encoder_attn")
        with torch.device("meta"):  # build the skeleton without allocating weights
            native = cls(cfg.num_codebooks, cfg.vocab_size, cfg.hidden_size,
                         cfg.num_attention_heads, cfg.num_hidden_layers, cfg.ffn_dim, cross,
                         cfg.max_position_embeddings, getattr(inner, "embed_scale", 1.0))
        shared = {**{n: p for n, p in inner.named_parameters() if not n.startswith("embed_positions")},
                  **{f"lm_heads.{n}": p for n, p in causal_lm.lm_heads.named_parameters()}}
        missing = native.load_state_dict(shared, strict=False, assign=True).missing_keys
        if missing:
            raise RuntimeError(f"weights not found in the transformers model: {missing}")
        native.positions = sinusoidal_positions(cfg.max_position_embeddings, cfg.hidden_size).to(
            device=causal_lm.device, dtype=causal_lm.dtype)
        return native.eval()

    @property
    def blocks(self) -> list[Block]:
        """The decoder layers, typed (an ``nn.ModuleList`` yields plain modules)."""
        return cast("list[Block]", self.layers)

    @property
    def codebook_heads(self) -> list[nn.Linear]:
        """The per-codebook heads (one stacked head where fused), typed as :attr:`blocks`."""
        return cast("list[nn.Linear]", self.lm_heads)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[N, K, s]`` -> the sum of the K codebook embeddings ``[N, s, D]``."""
        return sum(emb(tokens[:, k]) for k, emb in enumerate(self.embed_tokens)) * self.embed_scale

    def forward(self, tokens: torch.Tensor, state: NativeState, prefix=None) -> torch.Tensor:
        """One eager decoder call at ``state.pos`` (an ``int``), then ``state.pos`` moves on:
        tokens ``[N, K, s]`` (+ optional prefix ``[N, P, D]``) -> last logits ``[N, K, V]``."""
        x = self.embed(tokens)
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)               # [N, P+s, D]
        pos = state.pos
        x = x + self.positions[pos: pos + x.shape[1]]
        for i, block in enumerate(self.layers):
            x = block(x, state.k_cache[i], state.v_cache[i], pos, state.cross_k[i],
                      state.cross_v[i], state.cross_mask)
        state.pos += x.shape[1]
        return self.logits(x[:, -1:])

    def step_static(self, tokens: torch.Tensor, pos: torch.Tensor, state: NativeState,
                    length: int | None = None) -> torch.Tensor:
        """One-token step ``[N, K, 1]`` at position ``pos`` (a tensor ``[1]``) with fixed shapes.

        What a CUDA graph can capture: no Python number depends on the position; attention runs
        over the first ``length`` cache slots (default: all; ``cuda_graph.attention_length``
        gives the bucket) under a mask. Does not advance ``state.pos`` (the caller does).
        """
        length = length or state.k_cache[0].shape[2]
        slots = torch.arange(length, device=pos.device)
        # additive, in the attention's dtype, once per step: given a boolean mask, SDPA builds
        # this itself in every block (two `where`s each: ~100 kernels a step on a GPU)
        mask = torch.zeros(length, dtype=state.k_cache[0].dtype, device=pos.device).masked_fill(
            slots > pos, float("-inf")).view(1, 1, 1, -1)      # [1, 1, 1, length]: 0 = attend
        x = self.embed(tokens) + self.positions.index_select(0, pos)
        for i, block in enumerate(self.blocks):
            x = block.forward_static(x, state.k_cache[i][:, :, :length],
                                     state.v_cache[i][:, :, :length], pos, mask,
                                     state.cross_k[i], state.cross_v[i], state.cross_mask)
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and one head per codebook: ``[N, 1, D]`` -> ``[N, K, V]`` float32.

        Fused (``fusion.py``), ``lm_heads`` is one head of ``K·V`` outputs: the same numbers."""
        x = self.layer_norm(x)[:, 0]                                     # [N, D]
        if len(self.lm_heads) == 1:                                      # [N, K·V]
            return self.lm_heads[0](x).view(x.shape[0], self.num_codebooks, -1).float()
        return torch.stack([head(x) for head in self.lm_heads], dim=1).float()


# --- one decode step, the function every path runs ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class FixedShape:
    """Where a fixed-shape one-token step writes and how far it attends: what makes the step
    capturable as a CUDA graph (no Python number in it depends on the position)."""

    pos: torch.Tensor           # [1] int64: the cache slot written (a static tensor)
    length: int                 # cache slots attended under a mask (cuda_graph.attention_length)


def decode_step(decoder: NativeDecoder, tokens: torch.Tensor, state: NativeState,
                sampling: Sampling | None = None, seeds: torch.Tensor | None = None, step=0, *,
                prefix: torch.Tensor | None = None,
                fixed: FixedShape | None = None) -> torch.Tensor:
    """One MusicGen decode step (gpt-fast's ``decode_one_token``): columns in, tokens out.

        tokens [N, K, s] ─► NativeDecoder: K embeddings + positions, L blocks, K heads
                         ─► logits [N, K, V] (the last position, float32)
                         ─► Sampling.draw: CFG ─► temperature ─► top-k ─► top-p ─► draw ─► [B, K]

    Eager (``fixed`` None): the network at ``state.pos`` (an ``int``), which then moves on; a
    melody model's ``prefix`` ``[N, P, D]`` is fed before the tokens at the first step. On a CPU
    with our kernels each block of a one-token step runs as one C++ call inside
    ``NativeDecoder.forward`` (``Block.block_kernel``): the CPU acceleration of this function.
    Fixed shapes (``fixed``): one token at the tensor position ``fixed.pos``, attention over
    ``fixed.length`` slots under a mask; ``cuda_graph.GraphedStep`` captures exactly this call
    and replays it (the GPU acceleration; ``state.pos`` is the caller's to move).
    Without ``sampling`` the logits are returned and the caller draws; with it the tokens it
    draws (``seeds`` ``[B]`` and the counter ``step``, an int or a static tensor).
    """
    if fixed is None:
        logits = decoder(tokens, state, prefix)                          # [N, K, V]
    else:
        logits = decoder.step_static(tokens, fixed.pos, state, fixed.length)
    if sampling is None:
        return logits
    return sampling.draw(logits, seeds=seeds, step=step)                 # [B, K]
