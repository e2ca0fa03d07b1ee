"""Our own CPU kernels for the one-token decode step: building them, and the modules using them.

A decode step multiplies 2 rows (one prompt with CFG) by every weight matrix, and library GEMMs
read such thin products well below memory speed (``bench/README.md``). Here:

* :func:`thin_kernels` compiles ``thin_linear.cpp`` (the products), ``decode_step.cpp`` (the
  one-token attention and a whole decoder layer) and ``thin_vectors.h`` on the user's machine
  at first use (``torch.utils.cpp_extension``, flags from :func:`thin_flags`), as one
  extension registering ``torch.ops.musicgen_edu.*``;
* :class:`ThinLinear` runs a linear layer's products on it (:func:`thin_linears` swaps them
  into a decoder, in place), and :func:`block_kernels` runs each decoder block of a one-token
  step in one call (``decode_block``), the same operators as ``native.Block.forward``.

The kernels follow llama.cpp's ``ggml_vec_dot`` GEMVs (one pass over each weight row, sums in
registers); the int8 scheme is gpt-fast's weight-only int8 (``quantize.py``) with activations
rounded to int16 per row for integer dot products.
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

from .cpu import cpu_identity
from .linears import Int8Linear, linear_layers, room_for_copy, weight_bytes

__all__ = ["ThinLinear", "thin_linears", "thin_kernels", "thin_flags", "can_thin",
           "block_kernels", "THIN_SOURCES", "THIN_FLAGS"]


THIN_SOURCES = [Path(__file__).with_name(name) for name in    # built as one extension
                ("thin_linear.cpp", "decode_step.cpp", "thin_vectors.h")]
THIN_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]   # (fused: madd)


def thin_flags() -> list[str]:
    """This process's compiler flags: :data:`THIN_FLAGS`, less AVX-512 where torch dispatches
    no higher than AVX2 (``ATEN_CPU_CAPABILITY=avx2``: to keep a CPU's clock up where AVX-512
    lowers it, or to try an AVX2 machine's kernels on an AVX-512 one) and less AVX where it
    runs its DEFAULT kernels, so ours use no more than torch's own; then
    ``$MUSICGEN_THIN_CFLAGS`` (e.g. ``-march=x86-64-v3``, a
    build for the oldest CPU of a cluster sharing one home folder)."""
    flags = list(THIN_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
        flags += {"AVX2": ["-mno-avx512f"], "DEFAULT": ["-mno-avx"]}.get(capability, [])
    return flags + os.environ.get("MUSICGEN_THIN_CFLAGS", "").split()


_THIN_SHAPE: list = []                  # the fake (shape-only) kernels are registered once
_THIN_LOCK = threading.Lock()           # server threads building backends at once: one build


@functools.lru_cache(maxsize=1)
def thin_kernels() -> torch._ops._OpNamespace | None:
    """The operators of ``thin_linear.cpp`` and ``decode_step.cpp`` (``.thin_pack``,
    ``.thin_linear``, ``.decode_attention``, ``.decode_block``) compiled for this CPU — once
    per machine (tens of seconds), then loaded from torch's extension cache — or ``None``
    where it cannot be built (no C++ compiler, a read-only cache folder...), with a warning
    naming why. Thread-safe."""
    # -march=native makes the code use every instruction this CPU has, so the cache entry is
    # named after the CPU and its flags too: a home folder shared between machines must not
    # hand one CPU's build to another.
    try:
        sources = b"".join(path.read_bytes() for path in THIN_SOURCES)
        flags = thin_flags()                        # the build's, and in its cache name
        key = f"{cpu_identity()}|{sources!r}|{flags}"   # CPU model, all flags, code
        name = f"musicgen_edu_thin_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        with _THIN_LOCK:
            return _load_thin(name, flags)
    except Exception as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"could not build the CPU kernel thin_linear.cpp ({reason}); decoding "
                      "uses torch's kernels.", stacklevel=2)
        return None


def _load_thin(name: str, flags: list[str]):
    """Build with ``flags`` (or load from torch's extension cache) and give the operators
    their shapes."""
    from torch.utils.cpp_extension import load
    load(name=name, sources=[str(path) for path in THIN_SOURCES if path.suffix == ".cpp"],
         extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
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
    MKL's kernels are built for many rows and read such thin products below memory speed; this
    kernel reads each weight row once, straight through (the figures: bench/README.md, section
    "Linear layers for thin products"). Its layout is
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
    blocked: torch.Tensor           # [O / 16, I, 16] (or pairs of inputs: see above)
    scale: torch.Tensor             # [O] int8 scales, or empty for float weights
    plain: torch.Tensor | None      # the float weights [O, I] for many rows (not a buffer)

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
        self.register_buffer("scale", layer.scale.float() if isinstance(layer, Int8Linear)
                             else torch.empty(0))
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
    floats = [entry for entry in linear_layers(decoder, nn.Linear, skip)
              if entry[2].weight.shape[0] % 16 == 0]                # copied
    int8s = [entry for entry in linear_layers(decoder, Int8Linear, skip)
             if entry[2].weight.shape[0] % 16 == 0]                 # replaced
    if not room_for_copy(weight_bytes(floats), "laying the decoder's weights out for our CPU kernels"):
        return decoder
    for parent, name, layer in floats:
        setattr(parent, name, ThinLinear(layer))
    for parent, name, quantized in int8s:
        setattr(parent, name, ThinLinear(quantized))
    return decoder


def block_kernels(decoder: nn.Module) -> nn.Module:
    """Give each decoder block whose linear layers are all :class:`ThinLinear` a
    ``block_kernel``: its one-token forward as one call of ``decode_block`` (decode_step.cpp),
    the same operators in the same order, so the same bits, without Python between them."""
    kernels = thin_kernels()
    if kernels is None:                          # (lay_out runs this only where they build)
        return decoder
    op = kernels.decode_block
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
        block.block_kernel = functools.partial(
            _decode_block, op, [layer.blocked for layer in layers],
            [layer.scale for layer in layers],
            [t for norm in norms for t in (norm.weight, norm.bias)], block.self_attn.heads,
            norms[0].eps)
    return decoder


def _decode_block(op, weights, scales, norms, heads, eps, x, k_cache, v_cache, pos, cross_k,
                  cross_v, cross_mask):
    return op(x, weights, scales, norms, k_cache, v_cache, pos, cross_k, cross_v, cross_mask,
              heads, eps)
