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
no Python bookkeeping beyond one loop over the blocks (the buffers: ``native_state.py``).
Weights are *shared* with the loaded transformers model; ``NativeDecoder.from_transformers``
is the state-dict mapping. Around this file, each speed trick in its own: on a CPU the weights
laid out for the kernel that reads them (``layouts.py``: oneDNN-packed, int8, or our own
kernels in ``thin.py``, which also run a whole block of a one-token step in one call), chosen
by timing at first use (``cpu.choose_native_path``; the numbers: bench/README.md, section
"Choosing the path per machine"); on a GPU, q/k/v and the heads as one product each
(``fusion.py``) and each one-token step replayed as a CUDA graph (``cuda_graph.py``). Melody
models have no cross-attention: their conditioning is a prefix fed through self-attention at
the first step.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..sampling import Sampling
from .contract import Conditioning
from .cpu import choose_native_path
from .cuda_graph import graphed_step, keep_attention_off_cudnn
from .layouts import candidate_layouts, lay_out
from .linears import DynamicInt8Linear, PackedLinear
from .native_state import NativeState, StatePool, new_caches, text_keys_values
from .thin import ThinLinear
from .transformers import TransformersBackend

__all__ = ["NativeDecoder", "NativeBackend", "NativeState", "sinusoidal_positions"]

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
        self.qkv_proj = None     # q/k/v stacked into one product, where fused (fusion.py)

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

    def forward(self, x, k_cache, v_cache, pos, mask=None) -> torch.Tensor:
        """Causal self-attention: write this step's keys/values at ``pos``, attend to ``[0, pos+s)``.

        ``pos`` is an ``int`` when run eagerly: the cache is sliced to the filled part. Under a
        CUDA graph every shape must stay fixed, so ``pos`` is a tensor ``[1]``, the write is an
        ``index_copy_`` and attention covers the whole cache with ``mask`` hiding what lies ahead.
        """
        s = x.shape[1]
        q, k, v = (self.split(t) for t in self.project(x))
        if isinstance(pos, int):
            k_cache[:, :, pos: pos + s], v_cache[:, :, pos: pos + s] = k, v  # cast to cache dtype
            if s == 1 and mask is None and self.decode_kernel is not None:  # the filled part
                return self.merge(self.decode_kernel(q, k_cache, v_cache, pos + 1), x)
            k_cache, v_cache = k_cache[:, :, : pos + s], v_cache[:, :, : pos + s]
        else:
            k_cache.index_copy_(2, pos, k.to(k_cache.dtype))
            v_cache.index_copy_(2, pos, v.to(v_cache.dtype))
        out = F.scaled_dot_product_attention(q.to(k_cache.dtype), k_cache, v_cache, attn_mask=mask,
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
        over the first ``length`` cache slots (default: all; ``cuda_graph.attention_length``
        gives the bucket) under a mask. Does not advance ``state.pos`` (the caller does).
        """
        length = length or state.k_cache[0].shape[2]
        slots = torch.arange(length, device=pos.device)
        # additive, in the attention's dtype, once per step: given a boolean mask, SDPA builds
        # this itself in every block (two `where`s each: ~100 kernels a step on a GPU)
        mask = torch.zeros(length, dtype=state.k_cache[0].dtype, device=pos.device).masked_fill(
            slots > pos, float("-inf")).view(1, 1, 1, -1)      # [1, 1, 1, length]: 0 = attend
        return self.logits(self.blocks(self.embed(tokens, pos), state, pos, mask, length))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and one head per codebook: ``[N, 1, D]`` -> ``[N, K, V]`` float32.

        Fused (``fusion.py``), ``lm_heads`` is one head of ``K·V`` outputs: the same numbers."""
        x = self.layer_norm(x)[:, 0]                                     # [N, D]
        if len(self.lm_heads) == 1:                                      # [N, K·V]
            return self.lm_heads[0](x).view(x.shape[0], self.num_codebooks, -1).float()
        return torch.stack([head(x) for head in self.lm_heads], dim=1).float()


class NativeBackend(TransformersBackend):
    """Text encoding and EnCodec from transformers; the decoder loop step from NativeDecoder.

    Args:
        model: a loaded :class:`~musicgen_edu.models.MusicGenModel`.
        int8: quantize the decoder's linear weights to int8 (weight-only): a step reads a
            quarter of the fp32 bytes, at a small cost in fidelity (``tests/test_native.py``
            bounds it). The int8 copy comes on top of the transformers weights, which stay.
            Activations stay in the model's precision (our kernels on an AVX2 or AVX-512BW CPU
            round each row to int16 inside the product: ``thin.ThinLinear``).
        pack: how the linear weights are laid out on a CPU (``layouts.py``). ``None``
            (default): time one step of each layout that works here (and, for bf16, fp32 and
            bf16 attention) once per machine, keep the fastest (``cpu.choose_native_path``;
            ``self.choice``): oneDNN-packed, plain, our kernels (``thin.py``). ``True``:
            packed; ``"thin"``: ours; ``False``: plain; none is timed. With ``int8``: ``None``
            times torch's int8 kernel against ours, ``"thin"`` takes ours, ``False`` torch's,
            and ``True`` rounds the activations to int8 too (``linears.DynamicInt8Linear``:
            VNNI/AMX), at a price: one scale per call, so an item's tokens depend on its batch.
        graphs: replay one-token steps as a captured CUDA graph (``cuda_graph.py``); ``None``
            (default) means on CUDA devices. ``True`` on a CPU runs the same fixed-shape step
            without a graph (how the tests check it).
        repeatable: switch cuDNN's attention off in this process
            (``cuda_graph.keep_attention_off_cudnn``), so the same seed gives the same tokens
            run after run; ``None`` (default) means on CUDA devices. ``False`` leaves PyTorch's
            choice alone (faster per step; a few tokens may change between runs) unless a
            repeatable backend in the same process has switched it off (bench/README.md,
            section "cuDNN attention and repeatable tokens").
        fuse: one product for each self-attention's q/k/v and one for the K heads instead of
            3 and K (``fusion.py``: fewer kernels per step, for a copy of those weights);
            ``None`` (default) means on CUDA devices. Not with our CPU kernels (``"thin"``),
            which run a whole block in one call anyway.

    The decoder holds no per-generation state, so it is built once per model and setting and
    shared by every backend (and generator) over that model. Packed, int8 and fused decoders
    are copies: after changing the transformers weights (fine-tuning), drop them with
    ``model.extra.pop("native_decoders", None)`` before building a new backend.
    """

    name = "native"

    POOL_SIZE = 4            # idle static states (caches + captured graphs) kept per backend
    TEXT_BUCKET = 32         # text lengths are padded to a multiple of this (fewer pool keys)

    def __init__(self, model, int8: bool = False, pack: bool | str | None = None,
                 graphs: bool | None = None, repeatable: bool | None = None,
                 fuse: bool | None = None):
        super().__init__(model)
        fuse = model.device.type == "cuda" if fuse is None else fuse
        self.graphs = model.device.type == "cuda" if graphs is None else graphs
        self.repeatable = model.device.type == "cuda" if repeatable is None else repeatable
        if self.repeatable:
            keep_attention_off_cudnn()
        self.replays = 0         # one-token steps run through a graph replay (captured first if
                                 # new; eagerly on a CPU), over all generations
        self.capture_s = 0.0     # seconds spent capturing CUDA graphs, over all generations
        self._pool = StatePool(self.POOL_SIZE)   # idle caches + graphs, by shape
        cpu = model.device.type == "cpu"
        # On a CPU, attention may run in fp32 even for bf16/fp16 weights: torch's
        # reduced-precision CPU attention kernels can be several times slower for one-token
        # queries (bench/README.md, section "Attention in fp32 on a CPU").
        self.attention_dtype = torch.float32 if cpu else model.dtype
        self.choice: dict | None = None          # what timing chose on this CPU (cpu.py)
        if int8:
            self.name = "native-int8"
        built = model.extra.setdefault("native_decoders", {})
        before = set(built)                      # decoders other backends may be using

        def build(layout: str) -> nn.Module:     # each decoder once per model and layout
            if layout not in built:
                built[layout] = lay_out(NativeDecoder.from_transformers(self.net.decoder),
                                        layout.removesuffix("+fused"), layout.endswith("+fused"))
            return built[layout]

        self.decoder = build("plain")            # shares the weights: free; decides what can run
        layouts = [f"{name}+fused" if fuse and not name.endswith("thin") else name  # (fusion.py)
                   for name in candidate_layouts(self.decoder, int8, pack)]  # default first
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
            ("fused q/k/v and heads", self.decoder.layers[0].self_attn.qkv_proj is not None),
            (f"{SHORT_DTYPES[self.attention_dtype]} attention", cpu),
            ("chosen by timing on this CPU", self.choice is not None),
            ("fixed-shape steps + CUDA graphs" if model.device.type == "cuda" else
             "fixed-shape steps", self.graphs),
            ("cuDNN attention allowed", model.device.type == "cuda" and not self.repeatable
             and torch.backends.cuda.cudnn_sdp_enabled())] if on)

    @torch.no_grad()
    def start(self, cond: Conditioning, max_len: int | None = None) -> NativeState:
        """Allocate the KV cache for ``max_len`` positions and precompute text keys/values.

        With fixed-shape steps (``graphs``) the buffers come from the pool when an earlier
        generation left one of the same shape: its captured graphs are replayed, not captured
        again (``native_state.StatePool``); the text is padded to ``TEXT_BUCKET`` tokens.
        """
        dec = self.decoder
        prefix = cond.states.shape[1] if cond.prefix else 0
        max_len = prefix + (max_len or dec.positions.shape[0] - prefix)
        dtype = self.attention_dtype             # caches and text keys/values (see __init__)
        text = text_keys_values(dec, cond, dtype, self.TEXT_BUCKET if self.graphs else None)
        key = (len(cond), max_len, None if text[2] is None else text[2].shape[-1])
        if self.graphs and (pooled := self._pool.take(key, cond, *text)) is not None:
            return pooled
        caches = new_caches(dec, len(cond), max_len, dtype, zeros=self.graphs)
        return NativeState(cond, *caches, *text, pool_key=key if self.graphs else None)

    def release(self, state: NativeState) -> None:
        """Keep a finished generation's static buffers and graphs for the next one."""
        self._pool.put(state)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: NativeState) -> torch.Tensor:
        """Same contract as :meth:`TransformersBackend.step`: ``[N, K, s]`` -> ``[N, K, V]``."""
        return self._step(tokens, state)

    @property
    def fuses_draw(self) -> bool:
        """With fixed-shape steps the sampling joins the captured step (``step_draw``)."""
        return self.graphs

    @torch.no_grad()
    def step_draw(self, tokens: torch.Tensor, state: NativeState, sampling: Sampling,
                  seeds: torch.Tensor, step: int) -> torch.Tensor:
        """A decode step and its draw: tokens ``[N, K, s]`` -> the drawn tokens ``[B, K]``.

        One-token steps draw inside the fixed-shape step (a graph is captured per attention
        bucket and ``sampling``); steps that cannot be replayed (the prefill, a first
        one-token step) run eagerly, then draw: the contract's default, the same numbers.
        """
        return self._step(tokens, state, sampling, seeds, step)

    def _step(self, tokens: torch.Tensor, state: NativeState, sampling: Sampling | None = None,
              seeds: torch.Tensor | None = None, step: int = 0) -> torch.Tensor:
        """One decoder call: the logits ``[N, K, V]``, or with ``sampling`` the tokens
        ``[B, K]`` it draws from them, inside the captured graph when the step is replayed."""
        prefix = state.cond.states if state.cond.prefix and state.steps == 0 else None
        tokens = tokens.to(self.mg.device)
        state.steps += tokens.shape[-1]
        single = prefix is None and tokens.shape[-1] == 1
        state.single_steps += single
        # with fixed shapes every one-token step runs the fixed-shape step (replayed on a GPU)
        if self.graphs and single:
            out = graphed_step(self, state, tokens, sampling, seeds, step)
            if out is not None:                          # None: capture failed, decode eagerly
                return out
        logits = self.decoder(tokens, state, prefix)
        return logits if sampling is None else sampling.draw(logits, seeds=seeds, step=step)
