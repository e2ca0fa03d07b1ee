"""What this CPU can do, and which decoder path is fastest on it (timed, not guessed).

Decoding speed on a CPU depends on which kernels the matrix products run (``ONEDNN_VERBOSE=1``
names them): AVX2 or AVX-512 for float32, AVX512-BF16 or AMX tiles for bfloat16, VNNI or AMX
for int8. The same code can double on one CPU family and gain nothing on another
(bench/README.md, section "The CPU path is timed, not guessed"), so every speed figure names
its machine with :func:`cpu_info` (``bench/decode.py`` writes one table per CPU), and the
native backend does not guess its path from flags: :func:`choose_native_path` times one decode
step of each candidate (weights plain, packed or on our own kernels, ``thin_linear.cpp``;
attention in fp32 or the model's dtype) at first use, keeps the fastest, and
``Generation.timings["decoder"]`` says which path a generation ran. The choice is saved per
machine (``$MUSICGEN_CPU_PATHS``, default ``~/.cache/musicgen_edu/cpu_paths.json``), like
FFTW's wisdom: paths round differently, so every later process and session on the machine
(Ray workers, a restarted server) must take the same one for a seed to give the same tokens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard, TypeVar

import torch

if TYPE_CHECKING:
    from .layouts import Layout

__all__ = ["cpu_info", "cpu_identity", "parse_cpuinfo", "ISA_FLAGS", "ISA_LIMITS", "fastest",
           "choose_native_path", "choices_file", "CHOICES", "CpuPath"]

# /proc/cpuinfo flags that decide the fast path (x86): float32, bfloat16 and int8 kernels
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# Environment variables that cap the instructions used below what the CPU has: torch's own
# kernels, oneDNN's, MKL's, and ours (thin.thin_flags). All four set, one CPU runs as an
# older one would (bench/README.md, section "Every x86 CPU, not only this one").
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
              "MUSICGEN_THIN_CFLAGS")


@functools.lru_cache(maxsize=1)
def cpu_identity() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and *all* its flags (``/proc/cpuinfo``; elsewhere the platform's
    name and no flags). Our kernels' build cache is named after them (``thin.py``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:                                  # not Linux: no flags, the model only
        text = ""
    return parse_cpuinfo(text, platform.processor() or platform.machine())


def parse_cpuinfo(text: str, fallback: str) -> tuple[str, tuple[str, ...]]:
    """Model and flags of the first processor in a ``/proc/cpuinfo`` text. x86 names both
    (``model name``, ``flags``); an ARM Linux kernel gives ``Features`` and the core's
    ``CPU implementer`` / ``CPU part`` numbers instead (e.g. 0x41 / 0xd0c, an Arm Neoverse-N1),
    which then name the model: two ARM cores must not share one ``-march=native`` build."""
    first: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    model = first.get("model name") or (                 # ARM: "ARM <implementer>-<part>"
        f"ARM {first['CPU implementer']}-{first['CPU part']}"
        if "CPU implementer" in first and "CPU part" in first else fallback)
    return model, tuple((first.get("flags") or first.get("Features") or "").split())


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``model``, ``capability`` (torch's dispatch ISA, e.g. ``"AVX512"``), ``flags`` (those of
    :data:`ISA_FLAGS` present), ``threads``, a short ``family`` name for file names and
    ``limits``: the variables of :data:`ISA_LIMITS` set in this process, which keep torch,
    oneDNN, MKL or our kernels below what the CPU has (the flags stay the CPU's)."""
    model, flags = cpu_identity()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:                           # older torch
        capability = "unknown"
    present = [f for f in ISA_FLAGS if f in flags]
    family = "-".join(model.replace("(R)", "").replace("(TM)", "").split()[:3]) or "cpu"
    limits = {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)}
    return dict(model=model, capability=capability, flags=present,
                threads=torch.get_num_threads(), family=family, limits=limits)


# What timing chose, per process: (CPU, threads, decoder architecture, dtype, torch) -> choice.
# A second backend over the same model, or the same architecture loaded again, reuses it.
CHOICES: dict[str, dict] = {}
PROBE_POSITION = 250     # cached positions when a candidate step is timed (mid-way into 10 s)


@dataclass(frozen=True)
class CpuPath:
    """One candidate of the timing: a weights layout and the attention's dtype."""

    layout: Layout                  # layouts.Layout, e.g. Layout(Weights.PACKED)
    attention: str                  # "float32", or the model's dtype ("bfloat16")

    def __str__(self) -> str:       # a key of NativeBackend.choice["ms_per_step"]
        return f"{self.layout} weights, {self.attention} attention"


Name = TypeVar("Name", bound=Hashable)


def fastest(candidates: dict[Name, Callable[[], object]], repeats: int = 3,
            clock: Callable[[], float] = time.perf_counter, prefer: Name | None = None,
            margin: float = 0.15) -> tuple[Name, dict[Name, float]]:
    """Call each candidate once (warm-up), then ``repeats`` times, interleaved so a slow
    moment of the machine hits every candidate alike; return the winner and every median
    (seconds). The winner is ``prefer`` unless another candidate's median is more than
    ``margin`` (a fraction) below it, else the smallest median: paths round differently, so
    a choice that flipped with timing noise from one session to the next would change a
    seed's tokens; only a clear win moves off the default."""
    for run in candidates.values():
        run()
    times: dict[Name, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    best = min(medians, key=lambda name: medians[name])
    if prefer is not None and medians[best] >= (1 - margin) * medians[prefer]:
        best = prefer
    return best, medians


def choices_file() -> Path:
    """Where the choices of this machine are kept across processes and sessions:
    ``$MUSICGEN_CPU_PATHS``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)``/musicgen_edu/``."""
    if os.environ.get("MUSICGEN_CPU_PATHS"):
        return Path(os.environ["MUSICGEN_CPU_PATHS"])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "musicgen_edu" / "cpu_paths.json"


@contextlib.contextmanager
def _file_lock(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (POSIX ``flock``; elsewhere no lock), so that
    processes starting together (Ray workers) read, decide and write one after another."""
    try:
        import fcntl
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _saved_choices() -> dict:
    try:
        saved = json.loads(choices_file().read_text())
    except (OSError, ValueError):                # none yet, unreadable or damaged: time again
        return {}
    return saved if isinstance(saved, dict) else {}


def _valid(choice: object, decoders, attentions: list[str]) -> TypeGuard[dict]:
    """A saved choice is used only if it names one of today's candidates (an older version or
    a hand edit may have left anything there)."""
    return (isinstance(choice, dict) and choice.get("weights") in {str(layout) for layout in decoders}
            and choice.get("attention") in attentions)


def _save_choice(key: str, choice: dict, decoders=None, attentions=None) -> dict:
    """Keep ``choice`` for this machine; the first valid entry saved for a key wins (processes
    timing at once must still agree), an invalid one is replaced. Under a file lock, written
    atomically (a temporary file + ``os.replace``); a folder that cannot be written only costs
    the timing next time."""
    path = choices_file()
    with _file_lock(path):
        saved = _saved_choices()
        old = saved.get(key)
        if isinstance(old, dict) and (decoders is None or _valid(old, decoders, attentions)):
            return old
        saved[key] = choice
        try:
            handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(handle, "w") as out:
                out.write(json.dumps(saved, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
    return choice


_TIMING = threading.Lock()   # one first-use timing at a time in a process (server threads)


@torch.no_grad()
def choose_native_path(backend, decoders: dict[Layout, Callable[[], torch.nn.Module]]) -> dict:
    """The fastest :class:`CpuPath` (weights layout, attention dtype) for ``backend`` (a CPU
    ``NativeBackend``).

    ``decoders`` maps a ``layouts.Layout`` (packed, plain, thin (our kernels), int8, ...;
    fused with ``NativeBackend(fuse=True)``) to a function building that decoder (so a layout
    already known to lose is never built); the first is the default, kept unless another
    candidate is more than 15 % faster (:func:`fastest`).
    Each runs one one-token step for one item with CFG (2 rows) at ``PROBE_POSITION`` cached
    positions; attention in the model's dtype is a candidate only for reduced-precision
    models. Returns ``dict(weights=, attention=, ms_per_step={candidate: ms}, timed=bool)``
    with names (``str(layout)``, as saved in the JSON file); ``timed`` is False when the
    choice came from this process's cache or this machine's saved choices.
    """
    plain = backend.decoder
    first = plain.layers[0]
    arch = (len(plain.layers), plain.positions.shape[1], plain.heads, plain.num_codebooks,
            first.fc1.weight.shape[0], hasattr(first, "encoder_attn"))
    dtype = plain.positions.dtype
    attentions = list(dict.fromkeys(["float32", str(dtype).removeprefix("torch.")]))
    info = cpu_info()
    limits = "".join(f" | {k}={v}" for k, v in sorted(info["limits"].items()))
    key = (f"{info['model']} | {info['capability']}{limits} | "
           f"{torch.get_num_threads()} threads | decoder {arch} | {dtype} | torch {torch.__version__}"
           f" | {' or '.join(map(str, decoders))}")
    with _TIMING:
        entry = _saved_choices().get(key) if key not in CHOICES else None
        if _valid(entry, decoders, attentions):
            CHOICES[key] = entry
        if key in CHOICES:
            return {**CHOICES[key], "timed": False}
        choice = _time_candidates(backend, decoders, [getattr(torch, a) for a in attentions])
        CHOICES[key] = _save_choice(key, choice, decoders, attentions)  # another process's, if first
    return {**CHOICES[key], "timed": True}


def _time_candidates(backend, decoders: dict, attentions: list[torch.dtype]) -> dict:
    """Time a step of every (weights, attention) pair; the backend is left as it was."""
    plain = backend.decoder
    cond = backend.encode_text(["a probe prompt for the fastest decoder path", None])
    tokens = torch.zeros((2, plain.num_codebooks, 1), dtype=torch.long)
    noise = torch.Generator().manual_seed(0)     # the global random state stays untouched
    graphs, attention_dtype = backend.graphs, backend.attention_dtype
    candidates: dict[CpuPath, Callable[[], object]] = {}
    backend.graphs = False                       # time the eager (dynamic-shape) CPU step
    try:
        for layout, build in decoders.items():
            decoder = build()
            for attention in attentions:
                backend.decoder, backend.attention_dtype = decoder, attention
                state = backend.start(cond, PROBE_POSITION + 1)
                for cache in state.k_cache + state.v_cache:   # not uninitialised memory:
                    cache.normal_(generator=noise)             # NaNs or denormals run slow
                start_pos = state.k_cache[0].shape[2] - 1  # (+ a melody prefix, if any)

                def run(decoder=decoder, attention=attention, state=state, pos=start_pos):
                    backend.decoder, backend.attention_dtype = decoder, attention
                    state.pos, state.steps = pos, pos    # rewrite the last slot each time
                    backend.step(tokens, state)

                candidates[CpuPath(layout, str(attention).removeprefix("torch."))] = run
        # the default, unless clearly beaten: the first layout given, fp32 attention
        best, medians = fastest(candidates, prefer=next(iter(candidates)))
    finally:
        backend.graphs, backend.decoder, backend.attention_dtype = graphs, plain, attention_dtype
    return dict(weights=str(best.layout), attention=best.attention,   # (JSON: names)
                ms_per_step={str(path): round(1000 * t, 2) for path, t in medians.items()})
