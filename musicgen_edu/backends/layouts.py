"""Weight layouts of a native decoder on a CPU, and which of them a backend may run.

A :class:`~musicgen_edu.backends.native.NativeBackend` builds its decoder in one
:class:`Layout` (:func:`lay_out`): its :class:`Weights` (torch's kernels on the shared
weights, oneDNN-packed or int8 copies: ``linears.py``; or our own kernels: ``thin.py``), and
whether q/k/v and the heads are stacked (``fusion.py``). :func:`candidate_layouts` says which a
backend may run here, default first; ``cpu.choose_native_path`` times them at first use. A
layout is a value; its name (``str(layout)``, e.g. ``"plain+fused"``) appears only where people
and files read it: ``NativeBackend.choice`` and the saved ``cpu_paths.json``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .fusion import fuse_projections
from .linears import (
    ONCE_PER_GENERATION,
    can_pack,
    can_quantize_dynamic,
    linear_layers,
    pack_linears,
    quantize_int8,
    weight_bytes,
)
from .native import Attention, NativeDecoder
from .thin import block_kernels, can_thin, thin_kernels, thin_linears

__all__ = ["Weights", "Layout", "LAYOUTS", "THIN_MIN_BYTES", "lay_out", "candidate_layouts"]


class Weights(enum.Enum):
    """How a decoder's linear weights are stored, and so whose kernels multiply them."""

    PLAIN = "plain"                 # torch's kernels on the transformers weights (shared)
    PACKED = "packed"               # oneDNN's blocked layout (linears.PackedLinear)
    THIN = "thin"                   # our kernels (thin.ThinLinear): products, attention, blocks
    INT8 = "int8"                   # int8 weights, torch's int8 kernel (linears.Int8Linear)
    INT8_THIN = "int8-thin"         # int8 weights on our kernels
    INT8_DYNAMIC = "int8-dynamic"   # int8 weights and activations (linears.DynamicInt8Linear)


@dataclass(frozen=True)
class Layout:
    """One way to lay a native decoder out. Frozen and hashable: a model keeps one decoder per
    layout (``model.extra["native_decoders"]``)."""

    weights: Weights = Weights.PLAIN
    fused: bool = False             # q/k/v and the K heads as one product each (fusion.py)

    def __post_init__(self):
        if self.fused and self.thin:
            raise ValueError("the thin layouts run q/k/v inside one block call: nothing to fuse")

    @property
    def thin(self) -> bool:
        """Our kernels run the products, one-token attention and whole blocks (thin.py)."""
        return self.weights in (Weights.THIN, Weights.INT8_THIN)

    @property
    def int8(self) -> bool:
        """The weights are stored in 8 bits."""
        return self.weights in (Weights.INT8, Weights.INT8_THIN, Weights.INT8_DYNAMIC)

    def __str__(self) -> str:       # the name people and cpu_paths.json see: "plain+fused"
        return self.weights.value + ("+fused" if self.fused else "")


LAYOUTS = tuple(Layout(w) for w in Weights)       # every one, unfused
# Our kernels are timed at first use only for decoders whose linear weights reach this size:
# compiling them takes tens of seconds once per machine (bench/README.md, section "Linear
# layers for thin products"), and a tiny model (the offline `debug` ones, 2.4 MB) steps fast
# either way. MusicGen-small: 0.36-1.44 GB.
THIN_MIN_BYTES = 64 * 2**20


def lay_out(decoder: NativeDecoder, layout: Layout) -> NativeDecoder:
    """Give a fresh decoder copy ``layout``, in place: first stack each self-attention's q/k/v
    and the heads where ``layout.fused`` (``fusion.py``), then store the weights as
    ``layout.weights`` says. The text key/value projections run once per generation and keep
    their weights."""
    if layout.fused:
        fuse_projections(decoder)
    if layout.int8:
        quantize_int8(decoder, dynamic=layout.weights is Weights.INT8_DYNAMIC)
    elif layout.weights is Weights.PACKED:
        pack_linears(decoder, skip=ONCE_PER_GENERATION)
    kernels = thin_kernels() if layout.thin else None    # (None: they do not build here)
    if kernels is not None:
        thin_linears(decoder, skip=ONCE_PER_GENERATION)
        for module in decoder.modules():
            if isinstance(module, Attention):
                module.decode_kernel = kernels.decode_attention
        block_kernels(decoder)
    return decoder


def candidate_layouts(decoder: NativeDecoder, int8: bool, pack: bool | str | None) -> list[Layout]:
    """The layouts (none fused) a backend over ``decoder`` (plain, on its device) may run,
    default first: more than one only when ``pack`` is ``None`` (then they are timed). int8
    activations only when asked for (an item's rounding then depends on its batch); our kernels
    where they build (compiled once per machine; timed only for decoders of ``THIN_MIN_BYTES``
    or more); oneDNN-packed where it works. A layout asked for that cannot run here falls back
    to plain (or int8 weight-only)."""
    if pack not in (None, True, False, "thin"):
        raise ConfigError(f"pack={pack!r} is not a weight layout: use None (time them), "
                          "True (oneDNN-packed), 'thin' (our kernels) or False (plain).")
    big = weight_bytes(linear_layers(decoder, nn.Linear)) >= THIN_MIN_BYTES
    thin = (pack == "thin" or pack is None and big) and can_thin(decoder)   # (CPU only)
    W = Weights
    if int8:
        weights = ([W.INT8_DYNAMIC] if pack is True and can_quantize_dynamic(decoder)
                   else [W.INT8_THIN] if pack == "thin" and thin
                   else [W.INT8] + ([W.INT8_THIN] if pack is None and thin else []))
    else:
        weights = ([W.THIN] if pack == "thin" and thin
                   else [W.PLAIN] if pack in (False, "thin") or not can_pack(decoder)
                   else [W.PACKED] if pack else [W.PACKED, W.PLAIN])
        weights += [W.THIN] if pack is None and thin else []
    return [Layout(w) for w in weights]
