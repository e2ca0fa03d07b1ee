"""What this CPU can do: model name, the ISA torch dispatches to, and the flags that matter.

Decoding speed on a CPU depends on which kernels the matrix products run (``ONEDNN_VERBOSE=1``
names them): AVX2 or AVX-512 for float32, AVX512-BF16 or AMX tiles for bfloat16, VNNI or AMX
for int8. The same code can double on one CPU family and gain nothing on another, so every
speed figure names its machine with :func:`cpu_info` (``bench/decode.py`` writes one table
per CPU, and ``Generation.timings["decoder"]`` says which path a generation ran).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

__all__ = ["cpu_info", "ISA_FLAGS"]

# /proc/cpuinfo flags that decide the fast path (x86): float32, bfloat16 and int8 kernels
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``model``, ``capability`` (torch's dispatch ISA, e.g. ``"AVX512"``), ``flags`` (those of
    :data:`ISA_FLAGS` present), ``threads`` and a short ``family`` name for file names."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:                                  # not Linux: no flags, the model only
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:                           # older torch
        capability = "unknown"
    present = [f for f in ISA_FLAGS if f in flags]
    family = "-".join(model.replace("(R)", "").replace("(TM)", "").split()[:3]) or "cpu"
    return dict(model=model, capability=capability, flags=present,
                threads=torch.get_num_threads(), family=family)
