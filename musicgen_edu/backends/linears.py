"""Faster linear layers for the decode step: int8 weights and oneDNN-packed ones.

A decode step multiplies a couple of rows by every weight matrix of the decoder, so its speed
is how fast the weights can be read from memory. Ways to read them faster, each swapping
``nn.Linear`` modules of a :class:`~musicgen_edu.backends.native.NativeDecoder` in place:

* :class:`Int8Linear` stores fewer bytes per weight (pytorch-labs/gpt-fast ``quantize.py``,
  ``WeightOnlyInt8QuantHandler``); :class:`DynamicInt8Linear` also rounds the activations to
  8 bits, so the product runs on int8 dot-product instructions (VNNI, AMX-INT8);
* :class:`PackedLinear` stores the same weights in the blocked layout oneDNN's CPU kernels
  read fastest (what inductor's mkldnn weight prepacking does under ``torch.compile``);
* ``thin.ThinLinear`` runs our own small C++ kernel made for products of a few rows (its own
  module, ``thin.py``); ``layouts.py`` names the combinations a backend may run.
"""

from __future__ import annotations

import os
import warnings
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Int8Linear", "DynamicInt8Linear", "quantize_int8", "can_quantize_dynamic",
           "PackedLinear", "pack_linears", "can_pack", "ONCE_PER_GENERATION", "linear_layers",
           "weight_bytes", "room_for_copy"]

Layer = TypeVar("Layer", bound=nn.Module)


def linear_layers(module: nn.Module, kind: type[Layer],
                  skip: tuple[str, ...] = ()) -> list[tuple[nn.Module, str, Layer]]:
    """Every ``(parent, attribute name, layer)`` below ``module`` whose layer is a ``kind``
    (``nn.Linear``, :class:`Int8Linear`), except names containing a ``skip`` entry."""
    return [(parent, name, child) for path, parent in list(module.named_modules())
            for name, child in parent.named_children() if isinstance(child, kind)
            and not any(part in f"{path}.{name}" for part in skip)]


class Int8Linear(nn.Module):
    """Weight-only int8 linear layer: ``W ≈ scale[o] · Q[o, i]``, one scale per output row.

    Decoding one token is limited by reading the weights from memory, so storing them in 8
    bits instead of 16 or 32 makes each step up to 2-4x faster; activations stay in the
    model's precision (gpt-fast ``quantize.py``, ``WeightOnlyInt8QuantHandler``).
    """

    weight: torch.Tensor            # [out, in] int8
    scale: torch.Tensor             # [out] in the weights' former dtype

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
    where the CPU has them — through PyTorch's quantized CPU engine (``torch.ops.quantized
    .linear_dynamic`` on weights prepacked by ``linear_prepack``: what
    ``torch.ao.quantization.quantize_dynamic`` builds); how much faster it is on one CPU:
    bench/README.md, section "Linear layers for thin products". The price is rounding the
    activations too (to 7 bits: ``reduce_range``, which keeps CPUs without VNNI from
    overflowing). Output in the activations' dtype; the prepacked weights are an opaque
    object, not state.
    """

    in_features: int
    out_features: int
    packed: object                  # prepacked int8 weights (torch.ops.quantized.linear_prepack)

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
    for parent, name, child in linear_layers(decoder, nn.Linear, skip):
        setattr(parent, name, (DynamicInt8Linear if dynamic else Int8Linear)(child))
    return decoder


class PackedLinear(nn.Module):
    """CPU only: a bias-free linear layer whose weight is stored in oneDNN's blocked layout.

    A decode step multiplies 2 rows (one prompt with CFG) by every weight matrix, so it is as
    fast as the weights can be read from memory. torch's default CPU kernel can read such a
    thin product well below memory speed; reordered *once* into the layout oneDNN's kernels
    want, the weights stream faster (bench/README.md, section "Linear layers for thin
    products"). This is what ``torch.compile``'s CPU backend does to frozen
    weights (inductor's mkldnn weight prepacking), written out. The results equal ``F.linear``
    up to float rounding (a different summation order); the packed copy costs the memory of
    the weights once more.
    """

    in_features: int
    out_features: int
    packed: torch.Tensor            # opaque oneDNN tensor

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


def _free_memory_bytes(device: torch.device | None = None) -> int:
    """Memory available to new allocations on ``device`` (default: the CPU): on a GPU what the
    driver has free plus what PyTorch's caching allocator holds unused; on a CPU
    ``MemAvailable`` (free + reclaimable page cache)."""
    if device is not None and device.type == "cuda":
        return (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
                - torch.cuda.memory_allocated(device))
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


def weight_bytes(layers: list) -> int:
    """Bytes of the weights of ``(parent, name, layer)`` entries (as :func:`linear_layers`
    gives)."""
    return sum(layer.weight.numel() * layer.weight.element_size() for _, _, layer in layers)


def room_for_copy(size: int, what: str, device: torch.device | None = None) -> bool:
    """True when a copy of ``size`` bytes fits in the free memory of ``device`` (default: the
    CPU) twice over; otherwise warn that ``what`` is skipped and decoding will be slower."""
    if 2 * size <= _free_memory_bytes(device):
        return True
    warnings.warn(f"not {what} ({size / 2**30:.1f} GiB more memory than is free); decoding "
                  "will be slower.", stacklevel=4)
    return False


def pack_linears(decoder: nn.Module, rows: int = 2, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` of the decoder (except names in ``skip``) by :class:`PackedLinear`.

    In place. Skipped, with a warning, when the packed copy would not fit in the free memory
    twice over.
    """
    linears = linear_layers(decoder, nn.Linear, skip)
    if not room_for_copy(weight_bytes(linears), "packing the decoder's weights for the CPU"):
        return decoder
    for parent, name, child in linears:
        setattr(parent, name, PackedLinear(child, rows))
    return decoder
