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
mapping. On a CPU the linear weights can be laid out for the kernel that reads them: packed
once into oneDNN's blocked layout (``linears.PackedLinear``), or in blocks of 16 rows for our
own thin-product kernels (``thin.ThinLinear``, ``thin_linear.cpp``; ``decode_step.cpp``
runs the one-token attention, and each block of a one-token step in one call). Which is
fastest depends on the CPU family (per step on the project's
2-thread AMD EPYC, AVX512-BF16, ours ran 1.7-2.2x faster than packed in fp32 and ≈ 1.6x in bf16
(``bench/README.md``); packed was ≈ 2x plain in fp32 there and 1.0x on an AMX Xeon), so the backend times them at first use (``cpu.choose_native_path``); either
costs a second copy of those weights. On a GPU each one-token step is replayed as a CUDA graph
(``cuda_graph.py``). Melody models have no
cross-attention: their conditioning is a prefix fed through self-attention at the first step.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cpu import choose_native_path
from .cuda_graph import (ATTENTION_BUCKETS, GraphedStep, attention_length,  # noqa: F401
                         keep_attention_off_cudnn)
from ..sampling import draw_tokens
from .layouts import candidate_layouts, lay_out
from .linears import DynamicInt8Linear, PackedLinear
from .thin import ThinLinear
from .transformers import Conditioning, TransformersBackend

__all__ = ["NativeDecoder", "NativeBackend", "NativeState", "sinusoidal_positions",
           "attention_length", "ATTENTION_BUCKETS", "keep_attention_off_cudnn"]

SHORT_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


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
    decode_kernel = None

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(dim, dim, bias=False) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:   # [N, s, D] -> [N, H, s, D/H]
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def merge(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Heads ``[N, H, s, D/H]`` -> ``[N, s, D]`` in ``x``'s dtype, then the output projection."""
        return self.out_proj(out.to(x.dtype).transpose(1, 2).reshape(x.shape))

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
            if s == 1 and mask is None and self.decode_kernel is not None:  # the filled part
                out = self.decode_kernel(self.split(self.q_proj(x)), k_cache, v_cache, pos + 1)
                return self.merge(out, x)
            k_cache, v_cache = k_cache[:, :, : pos + s], v_cache[:, :, : pos + s]
        else:
            k_cache.index_copy_(2, pos, k.to(k_cache.dtype))
            v_cache.index_copy_(2, pos, v.to(v_cache.dtype))
        q = self.split(self.q_proj(x)).to(k_cache.dtype)
        out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask,
                                             is_causal=s > 1 and mask is None)
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
        self.decode_step = None

    def forward(self, x, k_cache, v_cache, pos, cross_k=None, cross_v=None, cross_mask=None,
                self_mask=None):
        step = self.decode_step                  # (read once: breakdown may swap it meanwhile)
        if step is not None and isinstance(pos, int) and x.shape[1] == 1 and self_mask is None \
                and (cross_k is None or cross_k.is_contiguous() and cross_v.is_contiguous()):
            return step(x, k_cache, v_cache, pos, cross_k, cross_v, cross_mask)
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
    pool_key: tuple | None = None  # where release() returns the buffers (fixed-shape steps)


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

    def blocks(self, x: torch.Tensor, state: NativeState, pos, self_mask=None,
               length: int | None = None) -> torch.Tensor:
        """Run ``x [N, s, D]`` through every block, reading and writing the state's caches
        (their first ``length`` slots only, when given: the fixed-shape step's bucket)."""
        view = slice(None) if length is None else slice(0, length)
        for i, block in enumerate(self.layers):
            x = block(x, state.k_cache[i][:, :, view], state.v_cache[i][:, :, view], pos,
                      state.cross_k[i], state.cross_v[i], state.cross_mask, self_mask)
        return x

    def forward(self, tokens: torch.Tensor, state: NativeState, prefix=None) -> torch.Tensor:
        """One decoder call; returns the last position's logits ``[N, K, V]`` in float32."""
        x = self.blocks(self.embed(tokens, state.pos, prefix), state, state.pos)
        state.pos += x.shape[1]
        return self.logits(x[:, -1:])

    def step_static(self, tokens: torch.Tensor, pos: torch.Tensor, state: NativeState,
                    length: int | None = None) -> torch.Tensor:
        """One-token step ``[N, K, 1]`` at position ``pos`` (a tensor ``[1]``) with fixed shapes.

        What a CUDA graph can capture: no Python number depends on the position; attention runs
        over the first ``length`` cache slots (default: all; ``attention_length`` gives the
        bucket) under a mask. Does not advance ``state.pos`` (the caller does).
        """
        length = length or state.k_cache[0].shape[2]
        slots = torch.arange(length, device=pos.device)
        mask = (slots <= pos).view(1, 1, 1, -1)          # [1, 1, 1, length]: True = attend
        return self.logits(self.blocks(self.embed(tokens, pos), state, pos, mask, length))

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
            Activations stay in the model's precision (our kernels on an AVX2 or AVX-512BW CPU
            round each row to int16 inside the product: ``thin.ThinLinear``).
        pack: how the linear weights are laid out on a CPU. ``None`` (default) times one
            step of each layout that works here (and, for bf16, attention in fp32 and bf16)
            once per machine and takes the fastest (``cpu.choose_native_path``;
            ``self.choice``): oneDNN-packed (``linears.PackedLinear``, where
            ``linears.can_pack`` says it works), plain, and our thin-product kernel
            (``thin.ThinLinear``, where ``thin_linear.cpp`` builds). ``True``: packed;
            ``"thin"``: the kernel; ``False``: plain; none of them is timed. With ``int8``,
            ``None`` times torch's int8 kernel against ours, ``"thin"`` takes ours, ``False``
            torch's, and ``True`` rounds the activations to int8 too, on the quantized CPU
            engine (``linears.DynamicInt8Linear``: VNNI/AMX), at a price: one scale per
            call, so an item's tokens depend on the rest of its batch.
        graphs: replay one-token steps as a captured CUDA graph (``cuda_graph.py``); ``None``
            (default) means on CUDA devices. ``True`` on a CPU runs the same fixed-shape step
            without a graph (how the tests check it).
        repeatable: switch cuDNN's attention off in this process
            (:func:`keep_attention_off_cudnn`), so the same seed gives the same tokens run after
            run; ``None`` (default) means on CUDA devices. ``False`` leaves PyTorch's choice
            alone (≈ 16 % faster per step on an H200, a few tokens may change between runs)
            unless a repeatable backend in the same process has switched it off.

    The decoder holds no per-generation state, so it is built once per model and setting and
    shared by every backend (and generator) over that model. Packed and int8 decoders are
    copies: after changing the transformers weights (fine-tuning), drop them with
    ``model.extra.pop("native_decoders", None)`` before building a new backend.
    """

    name = "native"

    POOL_SIZE = 4            # idle static states (caches + captured graphs) kept per backend
    TEXT_BUCKET = 32         # text lengths are padded to a multiple of this (fewer pool keys)

    def __init__(self, model, int8: bool = False, pack: bool | str | None = None,
                 graphs: bool | None = None, repeatable: bool | None = None):
        super().__init__(model)
        self.graphs = model.device.type == "cuda" if graphs is None else graphs
        self.repeatable = model.device.type == "cuda" if repeatable is None else repeatable
        if self.repeatable:
            keep_attention_off_cudnn()
        self.replays = 0         # one-token steps run through a graph replay (captured first if
                                 # new; eagerly on a CPU), over all generations
        self.capture_s = 0.0     # seconds spent capturing CUDA graphs, over all generations
        self._pool: dict[tuple, NativeState] = {}  # (rows, max_len, text_len) -> idle state
        cpu = model.device.type == "cpu"
        # On a CPU, attention may run in fp32 even for bf16/fp16 weights: torch's
        # reduced-precision CPU attention kernels were several times slower for one-token
        # queries on the machines measured (~1000 us vs ~155 us per call at cache length 450).
        self.attention_dtype = torch.float32 if cpu else model.dtype
        self.choice: dict | None = None          # what timing chose on this CPU (cpu.py)
        if int8:
            self.name = "native-int8"
        built = model.extra.setdefault("native_decoders", {})
        before = set(built)                      # decoders other backends may be using

        def build(layout: str) -> nn.Module:     # each decoder once per model and layout
            if layout not in built:
                built[layout] = lay_out(NativeDecoder.from_transformers(self.net.decoder), layout)
            return built[layout]

        self.decoder = build("plain")            # shares the weights: free; decides what can run
        layouts = candidate_layouts(self.decoder, int8, pack)   # default first (layouts.py)
        if pack is None and cpu and (len(layouts) > 1 or model.dtype != torch.float32):
            # the default: time the layouts (and attention dtypes) on this CPU, keep one
            self.choice = choose_native_path(self, {k: functools.partial(build, k) for k in layouts})
            self.attention_dtype = getattr(torch, self.choice["attention"])
            layouts = [self.choice["weights"]]
            for key in set(built) - before - set(layouts) - {"plain"}:
                del built[key]                   # a losing copy built for the timing goes
        self.decoder = build(layouts[0])
        kinds = {type(m) for m in self.decoder.modules()}
        # which path this backend's steps take (Generation.timings["decoder"], bench tables)
        self.path = " + ".join(p for p, on in [
            (self.name, True), ("int8 weights", int8),
            ("int8 activations (quantized CPU engine)", DynamicInt8Linear in kinds),
            ("oneDNN-packed weights", PackedLinear in kinds),
            ("thin-product kernel (thin_linear.cpp)", ThinLinear in kinds),
            (f"{SHORT_DTYPES[self.attention_dtype]} attention", cpu),
            ("chosen by timing on this CPU", self.choice is not None),
            ("fixed-shape steps + CUDA graphs" if model.device.type == "cuda" else
             "fixed-shape steps", self.graphs),
            ("cuDNN attention allowed", model.device.type == "cuda" and not self.repeatable
             and torch.backends.cuda.cudnn_sdp_enabled())] if on)

    @torch.no_grad()
    def start(self, cond: Conditioning, max_len: int | None = None) -> NativeState:
        """Allocate the KV cache for ``max_len`` positions and precompute text keys/values.

        With fixed-shape steps (``graphs``) the buffers come from a pool when an earlier
        generation left one of the same shape: its captured graphs read and write exactly
        those tensors, so they are replayed instead of captured again (capture once per
        process, not once per generation). The text keys/values are copied into the pooled
        buffers, padded to a multiple of ``TEXT_BUCKET`` tokens under the mask.
        """
        dec = self.decoder
        prefix = cond.states.shape[1] if cond.prefix else 0
        max_len = prefix + (max_len or dec.positions.shape[0] - prefix)
        dtype = self.attention_dtype             # caches and text keys/values (see __init__)
        cross_k, cross_v, mask = self._text_keys_values(cond, dtype)
        key = (len(cond), max_len, None if mask is None else mask.shape[-1])
        pooled = self._pool.pop(key, None) if self.graphs else None
        if pooled is None:
            k_cache, v_cache = self._caches(len(cond), max_len, dtype)
            return NativeState(cond, k_cache, v_cache, cross_k, cross_v, mask,
                               pool_key=key if self.graphs else None)
        for dst, src in zip(pooled.cross_k + pooled.cross_v, cross_k + cross_v):
            if dst is not None:                  # the graphs read the pooled tensors: copy in
                dst.copy_(src)
        if mask is not None:
            pooled.cross_mask.copy_(mask)
        if pooled.graph is not None:
            pooled.graph.lengths = []                # buckets used by this generation
        return NativeState(cond, pooled.k_cache, pooled.v_cache, pooled.cross_k, pooled.cross_v,
                           pooled.cross_mask, graph=pooled.graph, pool_key=key)

    def release(self, state: NativeState) -> None:
        """Keep a finished generation's static buffers and graphs for the next one."""
        if state.pool_key is None:
            return
        self._pool[state.pool_key] = state
        while len(self._pool) > self.POOL_SIZE:      # the oldest idle entry goes first
            del self._pool[next(iter(self._pool))]
        state.pool_key = None

    def _caches(self, rows: int, max_len: int, dtype: torch.dtype) -> tuple[list, list]:
        """Per block, key and value caches ``[N, H, max_len, D/H]``."""
        dec = self.decoder
        shape = (rows, dec.heads, max_len, dec.positions.shape[1] // dec.heads)
        # Fixed-shape steps attend over every slot, masked or not, and 0 x NaN is NaN: unfilled
        # slots must hold finite numbers, so zeros instead of uninitialised memory.
        new = torch.zeros if self.graphs else torch.empty
        dev = dec.positions.device
        return ([new(shape, dtype=dtype, device=dev) for _ in dec.layers],
                [new(shape, dtype=dtype, device=dev) for _ in dec.layers])

    def _text_keys_values(self, cond: Conditioning, dtype: torch.dtype) -> tuple:
        """Cross-attention keys and values ``[N, H, L, D/H]`` per block, and the additive mask
        ``[N, 1, 1, L]``; Nones for melody models (their condition is a self-attention prefix)."""
        dec = self.decoder
        if cond.prefix:
            return [None] * len(dec.layers), [None] * len(dec.layers), None
        states, keep = cond.states.to(dec.positions.dtype), cond.mask.bool()
        if self.graphs:                          # pad the text to a bucket (fewer pool keys)
            pad = -states.shape[1] % self.TEXT_BUCKET
            states, keep = F.pad(states, (0, 0, 0, pad)), F.pad(keep, (0, pad))
        cross_k = [b.encoder_attn.split(b.encoder_attn.k_proj(states)).to(dtype).contiguous()
                   for b in dec.layers]
        cross_v = [b.encoder_attn.split(b.encoder_attn.v_proj(states)).to(dtype).contiguous()
                   for b in dec.layers]
        keep = keep[:, None, None, :]                                    # [N, 1, 1, L]
        mask = torch.zeros(keep.shape, dtype=dtype, device=states.device).masked_fill(
            ~keep, torch.finfo(dtype).min)
        return cross_k, cross_v, mask

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: NativeState) -> torch.Tensor:
        """Same contract as :meth:`TransformersBackend.step`: ``[N, K, s]`` -> ``[N, K, V]``."""
        return self._step(tokens, state)

    @property
    def fuses_draw(self) -> bool:
        """With fixed-shape steps the sampling joins the captured step (``step_draw``)."""
        return self.graphs

    @torch.no_grad()
    def step_draw(self, tokens: torch.Tensor, state: NativeState, settings: dict,
                  seeds: torch.Tensor, step: int) -> torch.Tensor:
        """A decode step and its sampling: tokens ``[N, K, s]`` -> the drawn tokens ``[B, K]``.

        ``settings`` are ``sampling.draw_tokens``' (fixed for a generation; a graph is captured
        per bucket and settings), ``seeds`` the items' seeds ``[B]`` and ``step`` the counter
        sampler's clock. Steps that cannot be replayed (the prefill, a first one-token step)
        run eagerly, then draw.
        """
        draw = functools.partial(draw_tokens, **settings)
        return self._step(tokens, state, (tuple(sorted(settings.items())), draw, seeds, step))

    def _step(self, tokens: torch.Tensor, state: NativeState, draw=None) -> torch.Tensor:
        """One decoder call: the logits, or with ``draw = (key, fn, seeds, step)`` the tokens
        ``fn`` draws from them, inside the captured graph when the step is replayed."""
        prefix = state.cond.states if state.cond.prefix and state.steps == 0 else None
        tokens = tokens.to(self.mg.device)
        state.steps += tokens.shape[-1]
        single = prefix is None and tokens.shape[-1] == 1
        state.single_steps += single
        # Every one-token step runs the fixed-shape step, so a generation's arithmetic does not
        # depend on what was captured before (on a GPU, the dynamic-shape step rounds bf16
        # differently: a pooled and a fresh generation drew different tokens). Capture from the
        # second one-token step on: a one-off step (a single-step probe, as in distributions.py)
        # is not worth a warm-up and a capture; a pooled state's graphs are replayed at once.
        if self.graphs and single:
            replay = state.graph is not None or state.single_steps > 1
            if state.graph is None:
                state.graph = GraphedStep(self.decoder, state, tokens, on_capture=self._captured)
            try:
                out = state.graph(tokens, state.pos, state, draw, replay=replay)
            except RuntimeError as err:  # an op this GPU/driver cannot capture: run eagerly
                warnings.warn(f"CUDA graph capture failed, decoding without graphs: {err}")
                self.graphs, state.graph = False, None
            else:
                state.pos += 1
                self.replays += replay
                return out
        logits = self.decoder(tokens, state, prefix)
        if draw is None:
            return logits
        _, fn, seeds, step = draw
        return fn(logits, seeds=seeds, step=step)

    def _captured(self, seconds: float) -> None:
        self.capture_s += seconds
