"""Weight layouts of a native decoder on a CPU, and which of them a backend may run.

A :class:`~musicgen_edu.backends.native.NativeBackend` builds its decoder in one layout
(:func:`lay_out`): torch's kernels on the shared weights, oneDNN-packed or int8 copies
(``linears.py``), or our own kernels (``thin.py``). :func:`candidate_layouts` says which a
backend may run here, default first; ``cpu.choose_native_path`` times them at first use.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .fusion import fuse_projections
from .linears import (
    ONCE_PER_GENERATION,
    _linears,
    _nbytes,
    can_pack,
    can_quantize_dynamic,
    pack_linears,
    quantize_int8,
)
from .thin import block_kernels, can_thin, thin_kernels, thin_linears

__all__ = ["LAYOUTS", "THIN_MIN_BYTES", "lay_out", "candidate_layouts"]


LAYOUTS = ("plain", "packed", "thin", "int8", "int8-thin", "int8-dynamic")
# Our kernels are timed at first use only for decoders whose linear weights reach this size:
# compiling them takes tens of seconds once per machine (bench/README.md, section "Linear
# layers for thin products"), and a tiny model (the offline `debug` ones, 2.4 MB) steps fast
# either way. MusicGen-small: 0.36-1.44 GB.
THIN_MIN_BYTES = 64 * 2**20


def lay_out(decoder: nn.Module, layout: str, fuse: bool = False) -> nn.Module:
    """Give a fresh decoder copy one of :data:`LAYOUTS`, in place: ``plain`` (torch's kernels
    on the shared weights), ``packed`` (oneDNN), ``thin`` (our kernels, linears and one-token
    attention), ``int8`` (weight-only, torch's int8 kernel), ``int8-thin`` (int8 weights on our
    kernels) or ``int8-dynamic`` (int8 activations too). The text key/value projections run
    once per generation and keep their weights. ``fuse`` first stacks each self-attention's
    q/k/v and the heads (``fusion.py``; not for the thin layouts, whose blocks read them)."""
    if fuse:
        if layout.endswith("thin"):
            raise ValueError("the thin layouts run q/k/v inside one block call: nothing to fuse")
        fuse_projections(decoder)
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
