"""Faster linear layers for the decode step: int8 weights, oneDNN-packed and our own CPU kernels.

A decode step multiplies a couple of rows by every weight matrix of the decoder, so its speed
is how fast the weights can be read from memory. Two ways to read them faster, both swapping
``nn.Linear`` modules of a :class:`~musicgen_edu.backends.native.NativeDecoder` in place:

* :class:`Int8Linear` stores fewer bytes per weight (pytorch-labs/gpt-fast ``quantize.py``,
  ``WeightOnlyInt8QuantHandler``); :class:`DynamicInt8Linear` also rounds the activations to
  8 bits, so the product runs on int8 dot-product instructions (VNNI, AMX-INT8);
* :class:`PackedLinear` stores the same weights in the blocked layout oneDNN's CPU kernels
  read fastest (what inductor's mkldnn weight prepacking does under ``torch.compile``);
* :class:`ThinLinear` runs our own small C++ kernel (``thin_linear.cpp``) made for products
  of a few rows, compiled on the user's machine at first use (``torch.utils.cpp_extension``);
  :func:`block_kernels` then runs each decoder block of a one-token step in one call
  (``decode_step.cpp``, built with it: its attention and its layer).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["Int8Linear", "DynamicInt8Linear", "quantize_int8", "can_quantize_dynamic",
           "PackedLinear", "pack_linears", "can_pack", "ONCE_PER_GENERATION",
           "ThinLinear", "thin_linears", "thin_kernels", "can_thin", "LAYOUTS", "lay_out",
           "candidate_layouts"]


def _linears(module: nn.Module, skip: tuple[str, ...] = (),
             kinds: tuple[type, ...] = (nn.Linear,)) -> list[tuple[nn.Module, str, nn.Module]]:
    """Every ``(parent, attribute name, layer)`` below ``module`` whose layer is one of
    ``kinds``, except names containing a ``skip`` entry."""
    return [(parent, name, child) for path, parent in list(module.named_modules())
            for name, child in parent.named_children() if isinstance(child, kinds)
            and not any(part in f"{path}.{name}" for part in skip)]


class Int8Linear(nn.Module):
    """Weight-only int8 linear layer: ``W ≈ scale[o] · Q[o, i]``, one scale per output row.

    Decoding one token is limited by reading the weights from memory, so storing them in 8
    bits instead of 16 or 32 makes each step up to 2-4x faster; activations stay in the
    model's precision (gpt-fast ``quantize.py``, ``WeightOnlyInt8QuantHandler``).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear is for MusicGen's bias-free linear layers.")
        weight = linear.weight.detach().float()                          # [out, in]
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.register_buffer("weight", (weight / scale[:, None]).round().clamp(-127, 127)
                             .to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if hasattr(torch, "_weight_int8pack_mm") and x.device.type == "cpu":  # fused kernel
            out = torch._weight_int8pack_mm(flat, self.weight, self.scale.to(x.dtype))
        else:
            out = F.linear(flat, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return out.view(*x.shape[:-1], -1)


class DynamicInt8Linear(nn.Module):
    """CPU only: int8 weights *and* int8 activations, the activations quantized at each call.

    :class:`Int8Linear` turns every int8 weight back into a float inside the kernel, which
    costs arithmetic per weight; here the few activation rows are rounded to 8 bits (one scale
    per call) and the product runs on int8 dot-product instructions — VNNI, or AMX-INT8 tiles
    on recent Xeons — through PyTorch's quantized CPU engine (``torch.ops.quantized
    .linear_dynamic`` on weights prepacked by ``linear_prepack``: what
    ``torch.ao.quantization.quantize_dynamic`` builds). On the project's AMD EPYC, 48 matrices
    of 4096 x 1024: 10.4 ms vs 16.2 ms weight-only. The price is rounding the activations too
    (to 7 bits: ``reduce_range``, which keeps CPUs without VNNI from overflowing). Output in
    the activations' dtype; the prepacked weights are an opaque object, not state.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("DynamicInt8Linear is for MusicGen's bias-free linear layers.")
        weight = linear.weight.detach().float()                          # [out, in]
        scale = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
        with warnings.catch_warnings():      # quantized tensors: a deprecated public API, but
            warnings.simplefilter("ignore")  # still the way into the quantized CPU kernels
            q = torch.quantize_per_channel(weight, scale, torch.zeros_like(scale, dtype=torch.long),
                                           0, torch.qint8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.quantized.linear_prepack(q, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        out = torch.ops.quantized.linear_dynamic(flat, self.packed, True)  # reduce_range
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)


def can_quantize_dynamic(decoder: nn.Module) -> bool:
    """True where :class:`DynamicInt8Linear` works: CPU weights and a quantized CPU engine
    (``x86``/``fbgemm``/``onednn``) in this torch build."""
    if decoder.positions.device.type != "cpu":
        return False
    try:
        DynamicInt8Linear(nn.Linear(8, 8, bias=False))(torch.zeros(2, 8))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


# Cross-attention keys/values of the text: computed once per generation (at start), not per
# step, so shrinking them saves no step time and only adds error.
ONCE_PER_GENERATION = ("encoder_attn.k_proj", "encoder_attn.v_proj")


def quantize_int8(decoder: nn.Module, skip: tuple[str, ...] = ONCE_PER_GENERATION,
                  dynamic: bool = False) -> nn.Module:
    """Replace the linear layers a decode step reads by :class:`Int8Linear` (in place), or
    with ``dynamic`` by :class:`DynamicInt8Linear` (CPU).

    Every linear layer of the blocks and heads, except names containing a ``skip`` entry (by
    default the text key/value projections of cross-attention, which run once per
    generation, as :func:`pack_linears` skips them too). Embeddings and layer norms stay as
    they are; the transformers model is not touched.
    """
    for parent, name, child in _linears(decoder, skip):
        setattr(parent, name, (DynamicInt8Linear if dynamic else Int8Linear)(child))
    return decoder


class PackedLinear(nn.Module):
    """CPU only: a bias-free linear layer whose weight is stored in oneDNN's blocked layout.

    A decode step multiplies 2 rows (one prompt with CFG) by every weight matrix, so it is as
    fast as the weights can be read from memory. torch's default CPU kernel for such a thin
    product reads them at ~8 GB/s in fp32 and ~18 GB/s in bf16 on the project's 2-thread AMD
    EPYC (AVX-512); reordered *once* into the layout oneDNN's kernels want, it reads ~18 and
    ~23 GB/s (``bench/results/``). This is what ``torch.compile``'s CPU backend does to frozen
    weights (inductor's mkldnn weight prepacking), written out. The results equal ``F.linear``
    up to float rounding (a different summation order); the packed copy costs the memory of
    the weights once more.
    """

    def __init__(self, linear: nn.Linear, rows: int = 2):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("PackedLinear is for MusicGen's bias-free linear layers.")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # An opaque oneDNN tensor, tuned for `rows` rows (any number works); a derived copy,
        # so not part of the state dict.
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(
            linear.weight.detach(), rows), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed,
                                                 None, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


def can_pack(decoder: nn.Module) -> bool:
    """True where :class:`PackedLinear` works: CPU weights in fp32 (or bf16 with CPU support)."""
    weights = decoder.positions                    # a buffer in the decoder's dtype and device
    ops = ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")
    if weights.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not all(hasattr(torch.ops.mkldnn, op) for op in ops):
        return False
    if weights.dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return weights.dtype == torch.float32


def _free_memory_bytes() -> int:
    """Memory available to new allocations: ``MemAvailable`` (free + reclaimable page cache)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):   # not a POSIX system: assume enough
        return 1 << 62


def _nbytes(layers) -> int:
    """Bytes of the weights of ``(parent, name, layer)`` entries (as :func:`_linears` gives)."""
    return sum(layer.weight.numel() * layer.weight.element_size() for _, _, layer in layers)


def _room_for_copy(size: int, what: str) -> bool:
    """True when a copy of ``size`` bytes fits in the free memory twice over; otherwise warn
    that ``what`` is skipped and decoding will be slower."""
    if 2 * size <= _free_memory_bytes():
        return True
    warnings.warn(f"not {what} ({size / 2**30:.1f} GiB more memory than is free); decoding "
                  "will be slower.", stacklevel=4)
    return False


def pack_linears(decoder: nn.Module, rows: int = 2, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` of the decoder (except names in ``skip``) by :class:`PackedLinear`.

    In place. Skipped, with a warning, when the packed copy would not fit in the free memory
    twice over.
    """
    linears = _linears(decoder, skip)
    if not _room_for_copy(_nbytes(linears), "packing the decoder's weights for the CPU"):
        return decoder
    for parent, name, child in linears:
        setattr(parent, name, PackedLinear(child, rows))
    return decoder


THIN_SOURCES = [Path(__file__).with_name(name) for name in    # built as one extension
                ("thin_linear.cpp", "decode_step.cpp", "thin_vectors.h")]
THIN_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]   # (fused: madd)


def thin_flags() -> list[str]:
    """This process's compiler flags: :data:`THIN_FLAGS`, less AVX-512 where torch dispatches
    no higher than AVX2 (``ATEN_CPU_CAPABILITY=avx2``: to keep an older Xeon's clock up, or to
    try a laptop's kernels on a server) and less AVX where it runs its DEFAULT kernels, so ours
    use no more than torch's own; then ``$MUSICGEN_THIN_CFLAGS`` (e.g. ``-march=x86-64-v3``, a
    build for the oldest CPU of a cluster sharing one home folder)."""
    flags = list(THIN_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
        flags += {"AVX2": ["-mno-avx512f"], "DEFAULT": ["-mno-avx"]}.get(capability, [])
    return flags + os.environ.get("MUSICGEN_THIN_CFLAGS", "").split()
_THIN_SHAPE: list = []                  # the fake (shape-only) kernels are registered once
_THIN_LOCK = threading.Lock()           # server threads building backends at once: one build


@functools.lru_cache(maxsize=1)
def thin_kernels() -> "torch._ops._OpNamespace | None":
    """The operators of ``thin_linear.cpp`` and ``decode_step.cpp`` (``.thin_pack``,
    ``.thin_linear``, ``.decode_attention``, ``.decode_block``) compiled for this CPU — once
    per machine, ~30 s on 2 cores, then
    loaded from torch's extension cache — or ``None`` where it cannot be built (no C++
    compiler, a read-only cache folder...), with a warning naming why. Thread-safe."""
    # -march=native makes the code use every instruction this CPU has, so the cache entry is
    # named after the CPU and its flags too: a home folder shared between machines must not
    # hand one CPU's build to another.
    from .cpu import _cpuinfo                       # (cpu.py imports nothing from here)
    try:
        sources = b"".join(path.read_bytes() for path in THIN_SOURCES)
        key = f"{_cpuinfo()}|{sources!r}|{thin_flags()}"   # CPU model, all flags, code
        name = f"musicgen_edu_thin_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        with _THIN_LOCK:
            return _load_thin(name)
    except Exception as err:  # noqa: BLE001 - any build failure means "use torch's kernels"
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"could not build the CPU kernel thin_linear.cpp ({reason}); decoding "
                      "uses torch's kernels.", stacklevel=2)
        return None


def _load_thin(name: str):
    """Build (or load from torch's extension cache) and give the operators their shapes."""
    from torch.utils.cpp_extension import load
    load(name=name, sources=[str(path) for path in THIN_SOURCES if path.suffix == ".cpp"],
         extra_cflags=thin_flags(), extra_ldflags=["-fopenmp"], verbose=False)
    if not _THIN_SHAPE:                         # output shapes, for torch.compile
        torch.library.register_fake("musicgen_edu::thin_linear")(
            lambda x, weight, scale: x.new_empty((x.shape[0], weight.shape[0] * 16)))
        torch.library.register_fake("musicgen_edu::decode_attention")(
            lambda q, k_cache, v_cache, length, mask=None: q.new_empty(q.shape))
        torch.library.register_fake("musicgen_edu::decode_block")(
            lambda x, weights, scales, norms, k_cache, v_cache, pos, cross_k, cross_v,
            cross_mask, heads, eps: x.new_empty(x.shape))
        _THIN_SHAPE.append(True)
    return torch.ops.musicgen_edu


class ThinLinear(nn.Module):
    """CPU only: a bias-free linear layer whose products of a few rows run ``thin_linear.cpp``.

    A decode step multiplies 2 rows (one prompt with CFG) by every weight matrix. oneDNN's and
    MKL's kernels are built for many rows and read such thin products at about 19-22 GB/s on
    the project's 2-thread AMD EPYC; the kernel here reads fp32 and bf16 weights at 30-38 GB/s
    and int8 at 25-31 GB/s (torch's int8 kernel: 13-17; ``bench/README.md``). Its layout is
    the weights in blocks of 16 output rows, ``[O, I] -> [O / 16, I, 16]``: one vector load
    gives 16 outputs' weights for one input, multiplied by that input broadcast to all lanes,
    so no sums across lanes are needed (bf16 on CPUs with AVX512-BF16, int8 on CPUs with AVX2
    or AVX-512BW: ``[O / 16, I / 2, 16, 2]``, two inputs per integer dot-product instruction;
    for int8 each row of ``x`` is then rounded to int16 with its own scale, an error of at most
    ``max|x[m]| / 65534`` per input). Vectors are as wide as the CPU's: 16 floats with AVX-512,
    8 with AVX2, 4 otherwise (``thin_vectors.h``).

    Each output is one running sum over the inputs in order, for any number of rows, so an
    item's result does not depend on the rest of its batch. One-token steps of any batch take
    the kernel, ``MAX_ROWS`` rows at a time; a prompt's prefill (many tokens at once) takes
    ``F.linear`` on float weights (a GEMM is faster there) and the kernel on int8 ones. The
    blocked copy costs the memory of the weights once more (float), or replaces the int8
    copy. CPU only and not convertible: ``.to()`` does not move the float weights it keeps.
    """

    MAX_ROWS = 16

    def __init__(self, layer: nn.Linear | Int8Linear):
        super().__init__()
        int8 = isinstance(layer, Int8Linear)
        weight = layer.weight.detach()                                   # [O, I]
        if not int8 and layer.bias is not None:
            raise ValueError("ThinLinear is for MusicGen's bias-free linear layers.")
        out_features, in_features = weight.shape
        if out_features % 16:
            raise ValueError(f"ThinLinear needs a multiple of 16 output features, got "
                             f"{out_features}.")
        self.in_features, self.out_features = in_features, out_features
        kernels = thin_kernels()
        if kernels is None:
            raise RuntimeError("thin_linear.cpp could not be built on this machine.")
        self.kernel = kernels.thin_linear
        # [O, I] -> [O / 16, I, 16]: 16 output rows side by side for each input (bf16 on
        # AVX512-BF16 and int8 on AVX2 or AVX-512BW: [O / 16, I / 2, 16, 2], pairs of inputs
        # for their dot-product instructions)
        self.register_buffer("blocked", kernels.thin_pack(weight))
        self.register_buffer("scale", layer.scale.float() if int8 else torch.empty(0))
        # float weights as they are, for many rows: the nn.Linear's own tensor (no copy),
        # not registered here (the state dict and the bandwidth bound count what a step reads)
        object.__setattr__(self, "plain", None if int8 else weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)                           # [M, I]
        one_token = x.dim() == 2 or x.shape[-2] == 1                     # [N, D] or [N, 1, D]
        if self.plain is not None and not one_token:                     # float prefill
            out = F.linear(flat, self.plain)
        elif flat.shape[0] <= self.MAX_ROWS:
            out = self.kernel(flat, self.blocked, self.scale)            # in x's dtype
        else:
            out = torch.cat([self.kernel(rows, self.blocked, self.scale)
                             for rows in flat.split(self.MAX_ROWS)])
        return out.view(*x.shape[:-1], self.out_features)


def can_thin(decoder: nn.Module) -> bool:
    """True where :class:`ThinLinear` works: CPU weights in fp32 or bf16, and
    ``thin_linear.cpp`` builds here (the first call on a machine compiles it)."""
    weights = decoder.positions                    # a buffer in the decoder's dtype and device
    return (weights.device.type == "cpu" and weights.dtype in (torch.float32, torch.bfloat16)
            and thin_kernels() is not None)


def thin_linears(decoder: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` and :class:`Int8Linear` of the decoder (except names in
    ``skip``, and layers whose output size is not a multiple of 16) by :class:`ThinLinear`,
    in place. Skipped, with a warning, when the copy would not fit in the free memory twice
    over (as :func:`pack_linears`)."""
    layers = [(parent, name, child) for parent, name, child
              in _linears(decoder, skip, (nn.Linear, Int8Linear)) if child.weight.shape[0] % 16 == 0]
    copied = [entry for entry in layers if isinstance(entry[2], nn.Linear)]  # int8: replaced
    if not _room_for_copy(_nbytes(copied), "laying the decoder's weights out for our CPU kernels"):
        return decoder
    for parent, name, child in layers:
        setattr(parent, name, ThinLinear(child))
    return decoder


def block_kernels(decoder: nn.Module) -> nn.Module:
    """Give each decoder block whose linear layers are all :class:`ThinLinear` a
    ``decode_step``: its one-token forward as one call of ``decode_block`` (decode_step.cpp),
    the same operators in the same order, so the same bits, without Python between them."""
    op = thin_kernels().decode_block
    for block in getattr(decoder, "layers", []):
        attns = [block.self_attn] + ([block.encoder_attn] if block.cross else [])
        cross = [block.encoder_attn.q_proj, block.encoder_attn.out_proj] if block.cross else []
        layers = [*(getattr(block.self_attn, f"{p}_proj") for p in ("q", "k", "v", "out")),
                  *cross, block.fc1, block.fc2]
        norms = [block.self_attn_layer_norm, *([block.encoder_attn_layer_norm] if block.cross
                                               else []), block.final_layer_norm]
        if not all(isinstance(layer, ThinLinear) for layer in layers) or len(
                {norm.eps for norm in norms}) > 1 or any(a.decode_kernel is None for a in attns):
            continue
        block.decode_step = functools.partial(
            _decode_block, op, [layer.blocked for layer in layers],
            [layer.scale for layer in layers],
            [t for norm in norms for t in (norm.weight, norm.bias)], block.self_attn.heads,
            norms[0].eps)
    return decoder


def _decode_block(op, weights, scales, norms, heads, eps, x, k_cache, v_cache, pos, cross_k,
                  cross_v, cross_mask):
    return op(x, weights, scales, norms, k_cache, v_cache, pos, cross_k, cross_v, cross_mask,
              heads, eps)


# ---- Weight layouts of a NativeDecoder, and which of them a backend may run ----------------

LAYOUTS = ("plain", "packed", "thin", "int8", "int8-thin", "int8-dynamic")
# Our kernels are timed at first use only for decoders whose linear weights reach this size:
# compiling them costs ≈ 25 s once per machine, and a tiny model (the offline `debug` ones,
# 2.4 MB) steps in well under a millisecond either way. MusicGen-small: 0.36-1.44 GB.
THIN_MIN_BYTES = 64 * 2**20


def lay_out(decoder: nn.Module, layout: str) -> nn.Module:
    """Give a fresh decoder copy one of :data:`LAYOUTS`, in place: ``plain`` (torch's kernels
    on the shared weights), ``packed`` (oneDNN), ``thin`` (our kernels, linears and one-token
    attention), ``int8`` (weight-only, torch's int8 kernel), ``int8-thin`` (int8 weights on our
    kernels) or ``int8-dynamic`` (int8 activations too). The text key/value projections run
    once per generation and keep their weights."""
    if layout.startswith("int8"):
        quantize_int8(decoder, dynamic=layout == "int8-dynamic")
    elif layout == "packed":
        pack_linears(decoder, skip=ONCE_PER_GENERATION)
    if layout.endswith("thin"):
        thin_linears(decoder, skip=ONCE_PER_GENERATION)
        for module in decoder.modules():             # the attention modules
            if hasattr(module, "decode_kernel"):
                module.decode_kernel = thin_kernels().decode_attention
        block_kernels(decoder)
    return decoder


def candidate_layouts(decoder: nn.Module, int8: bool, pack: bool | str | None) -> list[str]:
    """The layouts a backend over ``decoder`` (plain, on its device) may run, default first:
    more than one only when ``pack`` is ``None`` (then they are timed). int8 activations only
    when asked for (an item's rounding then depends on its batch); our kernels where they
    build (compiled once per machine; timed only for decoders of ``THIN_MIN_BYTES`` or more);
    oneDNN-packed where it works. A layout asked for that
    cannot run here falls back to plain (or int8 weight-only)."""
    if pack not in (None, True, False, "thin"):
        raise ConfigError(f"pack={pack!r} is not a weight layout: use None (time them), "
                          "True (oneDNN-packed), 'thin' (our kernels) or False (plain).")
    big = _nbytes(_linears(decoder)) >= THIN_MIN_BYTES
    thin = (pack == "thin" or pack is None and big) and can_thin(decoder)   # (CPU only)
    if int8:
        return (["int8-dynamic"] if pack is True and can_quantize_dynamic(decoder)
                else ["int8-thin"] if pack == "thin" and thin
                else ["int8"] + (["int8-thin"] if pack is None and thin else []))
    layouts = (["thin"] if pack == "thin" and thin
               else ["plain"] if pack in (False, "thin") or not can_pack(decoder)
               else ["packed"] if pack else ["packed", "plain"])
    return layouts + (["thin"] if pack is None and thin else [])
