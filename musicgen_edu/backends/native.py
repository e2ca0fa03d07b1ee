"""MusicGen's decoder in one readable file, with a static KV cache (the fast backend).

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
no Python bookkeeping beyond one loop over the blocks. Weights are *shared* with the loaded
transformers model (no copy on disk); ``NativeDecoder.from_transformers`` is the state-dict
mapping. On a CPU the linear weights are additionally *packed* once into oneDNN's blocked
layout (``linears.PackedLinear``): the decode loop runs ≈ 2x faster in fp32 and ≈ 1.2x in bf16
(``bench/results/``), at the price of a second copy of those weights in memory. On a GPU each
one-token step is replayed as a CUDA graph (``cuda_graph.py``). Melody models have no
cross-attention: their conditioning is a prefix fed through self-attention at the first step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cuda_graph import GraphedStep
from .linears import can_pack, pack_linears, quantize_int8
from .transformers import Conditioning, TransformersBackend

__all__ = ["NativeDecoder", "NativeBackend", "NativeState", "sinusoidal_positions"]


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

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(dim, dim, bias=False) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:   # [N, s, D] -> [N, H, s, D/H]
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, k_cache, v_cache, pos, mask=None) -> torch.Tensor:
        """Causal self-attention: write this step's keys/values at ``pos``, attend to ``[0, pos+s)``.

        ``pos`` is an ``int`` when run eagerly: the cache is sliced to the filled part. Under a
        CUDA graph every shape must stay fixed, so ``pos`` is a tensor ``[1]``, the write is an
        ``index_copy_`` and attention covers the whole cache with ``mask`` hiding what lies ahead.
        """
        s = x.shape[1]
        k, v = self.split(self.k_proj(x)), self.split(self.v_proj(x))
        if isinstance(pos, int):
            k_cache[:, :, pos: pos + s], v_cache[:, :, pos: pos + s] = k, v  # cast to cache dtype
            k_cache, v_cache = k_cache[:, :, : pos + s], v_cache[:, :, : pos + s]
        else:
            k_cache.index_copy_(2, pos, k.to(k_cache.dtype))
            v_cache.index_copy_(2, pos, v.to(v_cache.dtype))
        q = self.split(self.q_proj(x)).to(k_cache.dtype)
        out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask,
                                             is_causal=s > 1 and mask is None)
        return self.out_proj(out.to(x.dtype).transpose(1, 2).reshape(x.shape))

    def cross(self, x, k, v, mask) -> torch.Tensor:
        """Attention to precomputed text keys/values ``[N, H, L, D/H]`` with an additive mask."""
        q = self.split(self.q_proj(x)).to(k.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.to(x.dtype).transpose(1, 2).reshape(x.shape))


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

    def forward(self, x, k_cache, v_cache, pos, cross_k=None, cross_v=None, cross_mask=None,
                self_mask=None):
        x = x + self.self_attn(self.self_attn_layer_norm(x), k_cache, v_cache, pos, self_mask)
        if self.cross:
            x = x + self.encoder_attn.cross(self.encoder_attn_layer_norm(x), cross_k, cross_v,
                                            cross_mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


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
    graph: object = None     # the captured one-token step (cuda_graph.GraphedStep), if any
    single_steps: int = 0    # one-token steps run so far (the first runs eagerly)


class NativeDecoder(nn.Module):
    """The MusicGen decoder (embeddings, blocks, per-codebook heads) over shared weights."""

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
    def from_transformers(cls, causal_lm) -> "NativeDecoder":
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

    def embed(self, tokens: torch.Tensor, pos, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``[N, K, s]`` (+ optional prefix ``[N, P, D]``) -> hidden states ``[N, P+s, D]``.

        ``pos`` is the first position, an ``int`` or (fixed-shape steps) a tensor ``[1]``.
        """
        x = sum(emb(tokens[:, k]) for k, emb in enumerate(self.embed_tokens)) * self.embed_scale
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        if isinstance(pos, int):
            return x + self.positions[pos: pos + x.shape[1]]
        return x + self.positions.index_select(0, pos)

    def blocks(self, x: torch.Tensor, state: NativeState, pos, self_mask=None) -> torch.Tensor:
        """Run ``x [N, s, D]`` through every block, reading and writing the state's caches."""
        for i, block in enumerate(self.layers):
            x = block(x, state.k_cache[i], state.v_cache[i], pos,
                      state.cross_k[i], state.cross_v[i], state.cross_mask, self_mask)
        return x

    def forward(self, tokens: torch.Tensor, state: NativeState, prefix=None) -> torch.Tensor:
        """One decoder call; returns the last position's logits ``[N, K, V]`` in float32."""
        x = self.blocks(self.embed(tokens, state.pos, prefix), state, state.pos)
        state.pos += x.shape[1]
        return self.logits(x[:, -1:])

    def step_static(self, tokens: torch.Tensor, pos: torch.Tensor, state: NativeState) -> torch.Tensor:
        """One-token step ``[N, K, 1]`` at position ``pos`` (a tensor ``[1]``) with fixed shapes.

        What a CUDA graph can capture: no Python number depends on the position, attention runs
        over the whole cache under a mask. Does not advance ``state.pos`` (the caller does).
        """
        slots = torch.arange(state.k_cache[0].shape[2], device=pos.device)
        mask = (slots <= pos).view(1, 1, 1, -1)          # [1, 1, 1, max_len]: True = attend
        return self.logits(self.blocks(self.embed(tokens, pos), state, pos, mask))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and one head per codebook: ``[N, 1, D]`` -> ``[N, K, V]`` float32."""
        x = self.layer_norm(x)
        return torch.stack([head(x[:, 0]) for head in self.lm_heads], dim=1).float()


class NativeBackend(TransformersBackend):
    """Text encoding and EnCodec from transformers; the decoder loop step from NativeDecoder.

    Args:
        model: a loaded :class:`~musicgen_edu.models.MusicGenModel`.
        int8: quantize the decoder's linear weights to int8 (weight-only): a step reads a
            quarter of the fp32 bytes, at a small cost in fidelity (``tests/test_native.py``
            bounds it). The int8 copy comes on top of the transformers weights, which stay.
        pack: on a CPU, pack the linear weights for oneDNN (``linears.PackedLinear``); ``None``
            (default) packs wherever ``linears.can_pack`` says it works. Ignored with ``int8``.
        graphs: replay one-token steps as a captured CUDA graph (``cuda_graph.py``); ``None``
            (default) means on CUDA devices. ``True`` on a CPU runs the same fixed-shape step
            without a graph (how the tests check it).

    The decoder holds no per-generation state, so it is built once per model and setting and
    shared by every backend (and generator) over that model. Packed and int8 decoders are
    copies: after changing the transformers weights (fine-tuning), drop them with
    ``model.extra.pop("native_decoders", None)`` before building a new backend.
    """

    name = "native"

    def __init__(self, model, int8: bool = False, pack: bool | None = None,
                 graphs: bool | None = None):
        super().__init__(model)
        self.graphs = model.device.type == "cuda" if graphs is None else graphs
        if int8:
            self.name = "native-int8"
        key = "int8" if int8 else "pack-if-possible" if pack is not False else "plain"
        built = model.extra.setdefault("native_decoders", {})
        if key not in built:
            decoder = NativeDecoder.from_transformers(self.net.decoder)
            if int8:
                decoder = quantize_int8(decoder)
            elif pack is not False and can_pack(decoder):
                # the text key/value projections run once per generation: not worth a copy
                decoder = pack_linears(decoder, skip=("encoder_attn.k_proj", "encoder_attn.v_proj"))
            built[key] = decoder
        self.decoder = built[key]

    @torch.no_grad()
    def start(self, cond: Conditioning, max_len: int | None = None) -> NativeState:
        """Allocate the KV cache for ``max_len`` positions and precompute text keys/values."""
        dec, n = self.decoder, len(cond)
        prefix = cond.states.shape[1] if cond.prefix else 0
        max_len = prefix + (max_len or dec.positions.shape[0] - prefix)
        dim = dec.positions.shape[1]
        head_dim, dev = dim // dec.heads, dec.positions.device
        # On a CPU, attention runs in fp32 even for bf16/fp16 weights: torch's reduced-precision
        # CPU attention kernels are several times slower for one-token queries (measured here:
        # ~1000 us vs ~155 us per call at cache length 450); on a GPU the model dtype is used.
        dtype = torch.float32 if dev.type == "cpu" else dec.positions.dtype
        shape = (n, dec.heads, max_len, head_dim)
        # Fixed-shape steps attend over every slot, masked or not, and 0 x NaN is NaN: unfilled
        # slots must hold finite numbers, so zeros instead of uninitialised memory.
        new = torch.zeros if self.graphs else torch.empty
        k_cache = [new(shape, dtype=dtype, device=dev) for _ in dec.layers]
        v_cache = [new(shape, dtype=dtype, device=dev) for _ in dec.layers]
        cross_k = cross_v = [None] * len(dec.layers)
        mask = None
        if not cond.prefix:
            states = cond.states.to(dec.positions.dtype)
            cross_k = [b.encoder_attn.split(b.encoder_attn.k_proj(states)).to(dtype) for b in dec.layers]
            cross_v = [b.encoder_attn.split(b.encoder_attn.v_proj(states)).to(dtype) for b in dec.layers]
            keep = cond.mask.bool()[:, None, None, :]                    # [N, 1, 1, L]
            mask = torch.zeros(keep.shape, dtype=dtype, device=dev).masked_fill(
                ~keep, torch.finfo(dtype).min)
        return NativeState(cond, k_cache, v_cache, cross_k, cross_v, mask)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: NativeState) -> torch.Tensor:
        """Same contract as :meth:`TransformersBackend.step`: ``[N, K, s]`` -> ``[N, K, V]``."""
        prefix = state.cond.states if state.cond.prefix and state.steps == 0 else None
        tokens = tokens.to(self.mg.device)
        state.steps += tokens.shape[-1]
        single = prefix is None and tokens.shape[-1] == 1
        state.single_steps += single
        # Capture from the second one-token step on: a one-off step (a single-step probe, as
        # in distributions.py) is not worth a warm-up and a capture.
        if self.graphs and single and state.single_steps > 1:
            if state.graph is None:
                try:
                    state.graph = GraphedStep(self.decoder, state, tokens)
                except RuntimeError as err:  # an op this GPU/driver cannot capture: run eagerly
                    warnings.warn(f"CUDA graph capture failed, decoding without graphs: {err}")
                    self.graphs = False
                    return self.decoder(tokens, state, prefix)
            logits = state.graph(tokens, state.pos, state)
            state.pos += 1
            return logits
        return self.decoder(tokens, state, prefix)
