"""The native backend: text and EnCodec from transformers, each decoder step on ``native.py``.

:class:`NativeBackend` builds a :class:`~musicgen_edu.backends.native.NativeDecoder` over the
model's weights in one ``layouts.Layout`` (chosen by timing on a CPU: ``cpu.py``), keeps one
generation's caches in a ``native_state.NativeState``, and runs each step one of two ways:

    step / step_draw(tokens [N, K, s], state)
      ├─ one-token step, fixed shapes on  ─► cuda_graph.graphed_step ─► native.decode_step(fixed=...)
      │                                      (captured and replayed as a CUDA graph on a GPU)
      └─ otherwise (prefill, eager)       ─► native.decode_step
                                             (on a CPU with our kernels: Block.block_kernel)

Both run the one function ``native.decode_step`` (network, then ``Sampling.draw``) on the same
weights (on a CPU with the same bits: ``tests/test_native.py``); the accelerations (graphs, CPU
kernels, fused projections) wrap that one step instead of threading through the generator's loop.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from ..sampling import Sampling
from .contract import Conditioning
from .cpu import choose_native_path
from .cuda_graph import graphed_step, keep_attention_off_cudnn
from .layouts import Layout, candidate_layouts, lay_out
from .linears import DynamicInt8Linear, PackedLinear
from .native import NativeDecoder, decode_step
from .native_state import NativeState, StatePool, new_caches, text_keys_values
from .thin import ThinLinear
from .transformers import TransformersEncoders

__all__ = ["NativeBackend"]

SHORT_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class NativeBackend(TransformersEncoders):
    """Text encoding and EnCodec from transformers; the decoder loop step from NativeDecoder.

    Args:
        model: a loaded :class:`~musicgen_edu.models.MusicGenModel`.
        int8: quantize the decoder's linear weights to int8 (weight-only): a step reads a
            quarter of the fp32 bytes, at a small cost in fidelity (``tests/test_native.py``
            bounds it). The int8 copy comes on top of the transformers weights, which stay.
            Activations stay in the model's precision (our kernels on an AVX2 or AVX-512BW CPU
            round each row to int16 inside the product: ``thin.ThinLinear``).
        pack: how the linear weights are laid out on a CPU (``layouts.Layout``). ``None``
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
    decoder: NativeDecoder

    POOL_SIZE = 4            # idle static states (caches + captured graphs) kept per backend
    TEXT_BUCKET = 32         # text lengths are padded to a multiple of this (fewer pool keys)

    def __init__(self, model, int8: bool = False, pack: bool | str | None = None,
                 graphs: bool | None = None, repeatable: bool | None = None,
                 fuse: bool | None = None):
        super().__init__(model)
        cuda = model.device.type == "cuda"
        self.graphs = cuda if graphs is None else graphs
        self.repeatable = cuda if repeatable is None else repeatable
        if self.repeatable:
            keep_attention_off_cudnn()
        self.replays = 0         # one-token steps run through a graph replay (captured first if
                                 # new; eagerly on a CPU), over all generations
        self.capture_s = 0.0     # seconds spent capturing CUDA graphs, over all generations
        self._pool = StatePool(self.POOL_SIZE)   # idle caches + graphs, by shape
        # On a CPU, attention may run in fp32 even for bf16/fp16 weights: torch's
        # reduced-precision CPU attention kernels can be several times slower for one-token
        # queries (bench/README.md, section "Attention in fp32 on a CPU").
        self.attention_dtype = torch.float32 if model.device.type == "cpu" else model.dtype
        self.choice: dict | None = None          # what timing chose on this CPU (cpu.py)
        if int8:
            self.name = "native-int8"
        self.decoder = self._build_decoder(int8, pack, cuda if fuse is None else fuse)
        self.path = self._describe_path(int8)

    def _build_decoder(self, int8: bool, pack: bool | str | None, fuse: bool) -> NativeDecoder:
        """The decoder in the layout ``pack`` asks for, or (``None`` on a CPU) the fastest one
        here, timed once per machine. Each layout is built once per model."""
        built = self.mg.extra.setdefault("native_decoders", {})
        before = set(built)                      # decoders other backends may be using

        def build(layout: Layout) -> NativeDecoder:
            if layout not in built:
                built[layout] = lay_out(NativeDecoder.from_transformers(self.net.decoder), layout)
            return built[layout]

        self.decoder = build(Layout())           # plain shares the weights: free; decides what
        layouts = [dataclasses.replace(layout, fused=fuse and not layout.thin)   # can run
                   for layout in candidate_layouts(self.decoder, int8, pack)]   # default first
        cpu = self.mg.device.type == "cpu"
        if pack is None and cpu and (len(layouts) > 1 or self.mg.dtype != torch.float32):
            # the default: time the layouts (and attention dtypes) on this CPU, keep one
            self.choice = choose_native_path(self, {k: functools.partial(build, k) for k in layouts})
            self.attention_dtype = getattr(torch, self.choice["attention"])
            layouts = [next(k for k in layouts if str(k) == self.choice["weights"])]
            for key in set(built) - before - set(layouts) - {Layout()}:
                del built[key]                   # a losing copy built for the timing goes
        return build(layouts[0])

    def _describe_path(self, int8: bool) -> str:
        """Which path this backend's steps take (``Generation.timings["decoder"]``, bench tables)."""
        kinds = {type(m) for m in self.decoder.modules()}
        device = self.mg.device.type
        return " + ".join(p for p, on in [
            (self.name, True), ("int8 weights", int8),
            ("int8 activations (quantized CPU engine)", DynamicInt8Linear in kinds),
            ("oneDNN-packed weights", PackedLinear in kinds),
            ("thin-product kernel (thin_linear.cpp)", ThinLinear in kinds),
            ("fused q/k/v and heads", self.decoder.blocks[0].self_attn.qkv_proj is not None),
            (f"{SHORT_DTYPES[self.attention_dtype]} attention", device == "cpu"),
            ("chosen by timing on this CPU", self.choice is not None),
            ("fixed-shape steps + CUDA graphs" if device == "cuda" else
             "fixed-shape steps", self.graphs),
            ("cuDNN attention allowed", device == "cuda" and not self.repeatable
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
        length = prefix + (max_len or dec.positions.shape[0] - prefix)
        dtype = self.attention_dtype             # caches and text keys/values (see __init__)
        cross_k, cross_v, cross_mask = text_keys_values(
            dec, cond, dtype, self.TEXT_BUCKET if self.graphs else None)
        key = (len(cond), length, None if cross_mask is None else cross_mask.shape[-1])
        if self.graphs and (pooled := self._pool.take(key, cond, cross_k, cross_v,
                                                      cross_mask)) is not None:
            return pooled
        k_cache, v_cache = new_caches(dec, len(cond), length, dtype, zeros=self.graphs)
        return NativeState(cond, k_cache, v_cache, cross_k, cross_v, cross_mask,
                           pool_key=key if self.graphs else None)

    def release(self, state: NativeState) -> None:
        """Keep a finished generation's static buffers and graphs for the next one."""
        self._pool.put(state)

    @property
    def fuses_draw(self) -> bool:
        """With fixed-shape steps the sampling joins the captured step (``step_draw``)."""
        return self.graphs

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: NativeState) -> torch.Tensor:
        """Same contract as :meth:`TransformersBackend.step`: ``[N, K, s]`` -> ``[N, K, V]``."""
        return self._step(tokens, state)

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
        # acceleration: with fixed shapes every one-token step runs the fixed-shape step,
        # replayed as a CUDA graph on a GPU (cuda_graph.py)
        if self.graphs and single:
            out = graphed_step(self, state, tokens, sampling, seeds, step)
            if out is not None:
                return out
            self._stop_graphs(state)             # capture failed: decode eagerly from now on
        # the eager step (on a CPU with our kernels, each block in one call: Block.block_kernel)
        return decode_step(self.decoder, tokens, state, sampling, seeds, step, prefix=prefix)

    def _stop_graphs(self, state: NativeState) -> None:
        """After a failed capture: no more fixed-shape steps, so no idle caches to keep, and
        this generation's state is not pooled when it ends."""
        self.graphs, state.graph, state.pool_key = False, None, None
        self._pool.clear()
