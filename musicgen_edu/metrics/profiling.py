"""Latency profiling: where generation time goes, and how close it is to the hardware's limit.

Four tools for lecture 05 (``notebooks/05_latency.ipynb``):

* :func:`profile_generation` times whole ``MusicGenerator.generate`` calls over a grid of
  durations and batch sizes, from the generator's own ``Generation.timings`` (generator.py
  ``_complete``: it synchronises the GPU after the first step and after the loop, and the
  EnCodec output ends with ``.cpu()``, which waits for the GPU, so GPU timings are real);
* :func:`breakdown` runs one ``generate`` under ``torch.profiler`` with a ``record_function``
  label per stage (text encoding, decoder attention / MLP / heads, sampling, codebook pattern,
  EnCodec decode): the labels live in the generator's own loop (``MusicGenerator._stage``),
  free when nobody profiles, so the profiled loop is the real one;
* :func:`kv_cache_comparison` shows why the KV cache matters: a cached step vs recomputing
  every position;
* the memory-bandwidth lower bound of a step, :func:`~musicgen_edu.metrics.bound.decode_bound`
  and :func:`~musicgen_edu.metrics.bound.measure_bandwidth`, lives in ``bound.py``.

Vocabulary: ``[B, K, S]`` tokens, ``[B, C, T]`` waveforms; "step" = one decoder call that
produces one token per codebook for every item; "rows" = ``2B`` with classifier-free
guidance (conditional + unconditional), ``B`` without.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import numbers
import statistics
import sys
import time
from typing import Sequence

import torch

from ..errors import ConfigError, check_range
from ..generator import MusicGenerator
from ..patterns import codebook_delays

__all__ = ["profile_generation", "profile_summary", "breakdown", "kv_cache_comparison",
           "plot_scaling", "plot_rtf", "plot_breakdown", "BREAKDOWN_STAGES"]

# Stage -> what its time includes (breakdown's rows, in this order).
BREAKDOWN_STAGES: dict[str, str] = {
    "text encoding": "T5 on the prompts (+ null rows for CFG), projection to the decoder width, "
                     "and backend.start: KV-cache allocation and the text keys/values of "
                     "cross-attention, computed once",
    "decoder: attention": "self-attention (q/k/v/out projections, KV-cache write, attention over "
                          "the cache) and cross-attention to the text, every layer",
    "decoder: MLP": "fc1 -> GELU -> fc2, every layer",
    "decoder: lm heads": "the K linear heads: hidden state -> logits over 2048 tokens per codebook",
    "decoder: other": "the rest of backend.step: codebook embeddings, positions, layer norms, "
                      "residual adds, cast of the logits to float32",
    "sampling": "classifier-free guidance, temperature, top-k, top-p, softmax and the draw "
                "(the counter sampler's Gumbel race, or one multinomial per item)",
    "codebook pattern": "build_delay_grid, reading each column (duplicated for CFG rows), "
                        "writing sampled tokens where unknown, undelay",
    "audio decode": "EnCodec: tokens -> waveform, and the copy to the CPU",
    "other": "wall time inside no stage: the Python loop and profiler bookkeeping",
}
_PARTS = ("decoder: attention", "decoder: MLP", "decoder: lm heads")  # nested in "decoder step"


# --- small pieces: synchronisation, memory, validation --------------------------------------

def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are real (CUDA and Apple MPS)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":  # free the last run's tensors first (RSS is a high-water mark)
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """``(MiB, metric)``: CUDA max allocated since the reset, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    try:  # ru_maxrss: the process's high-water mark since it started (cannot be reset)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10), "process_max_rss"
    except ImportError:  # Windows: the current RSS after the run, if psutil is installed
        try:
            import psutil
        except ImportError:
            return float("nan"), "unavailable"
        return psutil.Process().memory_info().rss / 2**20, "process_rss"


def _count(name: str, value, low: int) -> int:
    """``value`` as an int if it is a whole number >= ``low`` (numpy ints too), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}.")
    check_range(name, int(value), low, None)
    return int(value)


def _as_list(name: str, values, convert) -> list:
    """One value or a non-empty sequence -> a list of ``convert(value)`` (which validates)."""
    values = [values] if isinstance(values, numbers.Number) else list(values)
    if not values:
        raise ConfigError(f"{name} is empty; give at least one value.")
    return [convert(v) for v in values]


def _seconds(value) -> float:
    check_range("duration", value, 0, 600, low_open=True)
    return float(value)


def _texts(prompts, what: str = "prompts") -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError(f"{what} must be a non-empty string or list of them, got {prompts!r}.")
    return prompts


def _check_generator(generator) -> MusicGenerator:
    if not isinstance(generator, MusicGenerator):
        raise ConfigError(f"expected a MusicGenerator, got {type(generator).__name__}; use "
                          "mg.MusicGenerator('debug', progress=False).")
    return generator


# --- whole generations --------------------------------------------------------------------

def profile_generation(generator: MusicGenerator, prompts: str | Sequence[str],
                       durations: Sequence[float] = (1.0, 2.0),
                       batch_sizes: Sequence[int] = (1, 2), repeats: int = 3, warmup: int = 1,
                       seed: int = 0, **settings):
    """Time ``generator.generate`` for every (duration, batch size), ``warmup + repeats`` times.

    Args:
        generator: the :class:`MusicGenerator` to time (its backend, device and dtype are
            recorded in every row).
        prompts: one prompt or several; a batch of B cycles through them.
        durations: seconds of audio per item, each in (0, 600].
        batch_sizes: items generated together, each >= 1.
        repeats: timed runs per (duration, batch size), >= 1.
        warmup: runs before them that pay one-time costs (kernels, allocator, lazy init),
            >= 0. They are kept in the table with ``warmup=True``: :func:`profile_summary`
            and the plots leave them out; filter with ``df[~df.warmup]`` yourself.
        seed: the seed of every run (item i uses ``seed + i``).
        **settings: other :class:`GenerationConfig` fields, e.g. ``guidance_scale=1.0``.

    Returns:
        A pandas DataFrame, one row per run: ``model, device, backend, dtype, duration,
        audio_s, batch_size, repeat, warmup, guidance_scale, steps, load_s`` (the model's
        load time), ``first_step_s`` (text encoding + first decoder step), ``step_s`` (mean
        time of the later steps: ``(generate_s - first_step_s) / (steps - 1)``),
        ``steps_per_s`` (all steps, first included: ``Generation.timings``),
        ``steady_steps_per_s`` (``1 / step_s``), ``item_steps_per_s`` (``steps_per_s`` x B:
        frames made per second across the batch), ``generate_s``, ``decode_s`` (EnCodec),
        ``total_s``, ``rtf`` (``total_s / audio_s``), ``peak_memory_mb`` and
        ``memory_metric``: ``cuda_max_allocated`` (reset before each run) on a GPU,
        ``process_max_rss`` on a CPU (the process's peak RSS so far, which never goes down).
    """
    import pandas as pd

    generator = _check_generator(generator)
    texts = _texts(prompts)
    durations = _as_list("durations", durations, _seconds)
    batch_sizes = _as_list("batch_sizes", batch_sizes, lambda b: _count("batch size", b, 1))
    repeats, warmup = _count("repeats", repeats, 1), _count("warmup", warmup, 0)
    if "duration" in settings or "seed" in settings:
        raise ConfigError("pass durations=[...] and seed=... as their own arguments, not in "
                          "**settings.")
    config = generator.config.replace(seed=seed, **settings)     # validates every setting now
    model, device = generator.model, generator.model.device
    rows = []
    for duration in durations:
        for batch in batch_sizes:
            items = [texts[i % len(texts)] for i in range(batch)]
            run_config = config.replace(duration=float(duration))
            for run in range(warmup + repeats):
                _reset_peak(device)
                out = generator.generate(items, progress=False, **vars(run_config))
                t = out.timings
                memory, metric = _peak_memory(device)
                step_s = (t["generate_s"] - t["first_step_s"]) / max(t["steps"] - 1, 1)
                rows.append(dict(
                    model=model.name, device=str(device), backend=generator.backend.name,
                    dtype=str(model.dtype).replace("torch.", ""), duration=float(duration),
                    audio_s=out.duration, batch_size=batch,
                    repeat=run if run < warmup else run - warmup, warmup=run < warmup,
                    guidance_scale=config.guidance_scale, steps=t["steps"], load_s=t["load_s"],
                    first_step_s=t["first_step_s"], step_s=step_s,
                    steps_per_s=t["steps_per_s"], steady_steps_per_s=1 / max(step_s, 1e-12),
                    item_steps_per_s=t["steps_per_s"] * batch, generate_s=t["generate_s"],
                    decode_s=t["decode_s"], total_s=t["total_s"], rtf=t["rtf"],
                    peak_memory_mb=memory, memory_metric=metric))
    return pd.DataFrame(rows)


_TIMINGS = ["steps", "first_step_s", "step_s", "steps_per_s", "steady_steps_per_s",
            "item_steps_per_s", "generate_s", "decode_s", "total_s", "rtf", "peak_memory_mb"]
_SETUP = ["model", "device", "backend", "dtype", "guidance_scale"]  # kept as group keys


def profile_summary(df):
    """Medians of the timed runs (warm-up left out) per set-up, duration and batch size.

    Tables of several generators may be concatenated first (``pd.concat([t1, t2])``): the
    set-up columns (model, device, backend, dtype, guidance_scale) stay group keys. Adds
    ``runs``, the number of timed runs behind each median.
    """
    missing = sorted({"duration", "batch_size", "warmup", *_TIMINGS} - set(df.columns))
    if missing:
        raise ConfigError(f"the table lacks columns {missing}; pass profile_generation's result.")
    timed = df[~df["warmup"].astype(bool)]
    if timed.empty:
        raise ConfigError("the table has no timed runs (every row is a warm-up); use repeats >= 1.")
    keys = [c for c in _SETUP if c in df.columns] + ["duration", "batch_size"]
    groups = timed.groupby(keys, sort=False)
    summary = groups[_TIMINGS].median()
    summary["runs"] = groups.size()
    return summary.reset_index().sort_values(keys, kind="stable", ignore_index=True)


# --- one generation, stage by stage -------------------------------------------------------

class _Stages:
    """``record_function`` ranges for the profiler; on a GPU each range ends synchronised."""

    def __init__(self, device: torch.device):
        self.device, self.open = device, []

    @contextlib.contextmanager
    def __call__(self, stage: str):
        self.enter(stage)
        try:
            yield
        finally:
            self.exit()

    def enter(self, stage: str):
        rf = torch.profiler.record_function(f"mg::{stage}")
        rf.__enter__()
        self.open.append(rf)

    def exit(self):
        _sync(self.device)  # the range then includes the GPU work it launched
        self.open.pop().__exit__(None, None, None)

    def hook(self, first: torch.nn.Module, last: torch.nn.Module, stage: str) -> list:
        """Label everything from ``first``'s forward to the end of ``last``'s as ``stage``."""
        return [first.register_forward_pre_hook(lambda *_: self.enter(stage)),
                last.register_forward_hook(lambda *_: self.exit())]


def _decoder_modules(generator: MusicGenerator):
    """``(layers, lm_heads)`` of the backend's decoder: native's own or transformers'."""
    decoder = getattr(generator.backend, "decoder", None)
    if decoder is not None and hasattr(decoder, "layers"):
        return decoder.layers, decoder.lm_heads
    causal = generator.model.model.decoder                           # MusicgenForCausalLM
    return causal.model.decoder.layers, causal.lm_heads


@contextlib.contextmanager
def _instrument(generator: MusicGenerator, stages: _Stages):
    """Hooks that label attention, MLP and heads inside every decoder step; removed after."""
    layers, heads = _decoder_modules(generator)
    # a block in one C++ call (native on a CPU with our kernels) has nothing inside to label:
    # profile its Python forward, the same operators with the same bits (the layers are shared
    # by the model's backends: other generations meanwhile take that forward too)
    fused = [(layer, layer.decode_step) for layer in layers
             if getattr(layer, "decode_step", None) is not None]
    try:
        for layer, _ in fused:
            layer.decode_step = None
        yield from _hooks(layers, heads, stages)
    finally:
        for layer, step in fused:
            layer.decode_step = step


def _hooks(layers, heads, stages: _Stages):
    """The hooks of :func:`_instrument`, removed when its ``with`` block ends."""
    handles, patched = [], []
    for layer in layers:
        for name in ("self_attn", "encoder_attn"):
            attn = getattr(layer, name, None)
            if attn is None:
                continue
            handles += stages.hook(attn, attn, "decoder: attention")
            if hasattr(attn, "cross"):  # native calls attn.cross(...) directly: wrap the method
                def cross(*args, _f=attn.cross, **kwargs):
                    with stages("decoder: attention"):
                        return _f(*args, **kwargs)
                attn.cross = cross
                patched.append(attn)
        handles += stages.hook(layer.fc1, layer.fc2, "decoder: MLP")
    handles += stages.hook(heads[0], heads[-1], "decoder: lm heads")
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn in patched:
            del attn.cross
        while stages.open:  # an error inside a range: close what is still open
            stages.exit()


def breakdown(generator: MusicGenerator, prompt: str | Sequence[str], duration: float = 1.0,
              *, seed: int = 0, warmup: int = 1, trace_path: str | None = None, **settings):
    """Profile one generation and split its time into stages (see ``BREAKDOWN_STAGES``).

    The loop is the generator's own: ``generate`` runs with ``generator.stages`` set, so the
    labels ``MusicGenerator._window`` puts around each stage become
    ``torch.profiler.record_function`` ranges; forward hooks on the decoder's blocks (native
    or transformers) label attention, MLP and heads inside each step. On a GPU the warm-up
    run captures the decode step's CUDA graphs (kept by the backend), so the profiled run
    replays them: a replayed step is one "decoder step" range, with no attention/MLP split.
    On a CPU with our kernels the profiled steps run each block's Python forward (the same
    operators and bits; a block in one C++ call would hide the split), so they are slower
    than unprofiled ones. A stage's seconds are the CPU wall time of its ranges; on a GPU
    every range ends with a synchronisation, so it includes the GPU work it launched (the syncs cost a few
    microseconds each: the total is a little above an unprofiled run). The profiler adds a
    few microseconds per operator too, which matters for tiny models: read the shares.

    Args:
        generator: the :class:`MusicGenerator` to profile.
        prompt: one text prompt, or a list (a batch).
        duration: seconds of audio, in (0, the model's window] (one window, no long form).
        seed: item i uses ``seed + i``, as in ``generate``.
        warmup: unprofiled runs first, >= 0 (one-time costs are not a stage).
        trace_path: also write a Chrome/Perfetto trace of the profiled run there.
        **settings: other :class:`GenerationConfig` fields, e.g. ``guidance_scale=1.0``.

    Returns:
        DataFrame ``stage, seconds, share, includes`` with every stage of
        ``BREAKDOWN_STAGES`` (shares sum to 1); ``df.attrs`` holds ``wall_s``, ``steps``,
        ``device``, ``backend``, ``replayed_graphs`` (the steps were CUDA-graph replays: their
        time is all in "decoder: other", whose ``includes`` then says so).
    """
    import pandas as pd

    generator = _check_generator(generator)
    texts = _texts(prompt, "prompt")
    check_range("duration", duration, 0, generator.max_duration, low_open=True,
                hint="breakdown profiles one window; time long form with profile_generation.")
    config = generator.config.replace(duration=float(duration), seed=_count("seed", seed, 0),
                                      **settings)
    device = generator.model.device

    def run():
        return generator.generate(texts, progress=False, **dataclasses.asdict(config))

    for _ in range(_count("warmup", warmup, 0)):   # also captures CUDA graphs (pooled, reused)
        run()
    stages, replays = _Stages(device), getattr(generator.backend, "replays", 0)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        with _instrument(generator, stages):
            generator.stages = stages               # the loop's own labels (generator._stage)
            try:
                _sync(device)
                start = time.perf_counter()
                tokens = run().tokens
                wall = time.perf_counter() - start
            finally:
                generator.stages = None
    if trace_path is not None:
        prof.export_chrome_trace(str(trace_path))
    seconds = dict.fromkeys([*BREAKDOWN_STAGES, "decoder step"], 0.0)
    for event in prof.events():  # our CPU ranges (the GPU copies of the labels are skipped)
        name = event.name.removeprefix("mg::")
        if event.name.startswith("mg::") and event.device_type == torch.autograd.DeviceType.CPU:
            seconds[name] += event.cpu_time_total / 1e6
    seconds["decoder: other"] = max(seconds.pop("decoder step") - sum(seconds[p] for p in _PARTS),
                                    0.0)
    seconds["other"] = max(wall - sum(seconds.values()), 0.0)
    total = sum(seconds.values())
    includes = dict(BREAKDOWN_STAGES)
    # Replayed CUDA graphs run the whole step as one launch: no per-layer split to read, and
    # with a fused draw the sampling is inside it (an H200 run: 81 % "decoder: other", 0 % MLP).
    replayed = device.type == "cuda" and getattr(generator.backend, "replays", 0) > replays
    if replayed:
        includes["decoder: other"] = ("the whole decode step, replayed as one CUDA graph: "
                                      "attention, MLP, heads" + (", CFG and the draw" if getattr(
                                          generator.backend, "fuses_draw", False) else ""))
    df = pd.DataFrame({"stage": list(BREAKDOWN_STAGES),
                       "seconds": [seconds[s] for s in BREAKDOWN_STAGES],
                       "share": [seconds[s] / total for s in BREAKDOWN_STAGES],
                       "includes": list(includes.values())})
    steps = tokens.shape[-1] + max(codebook_delays(tokens.shape[1], generator.model.audio_channels))
    df.attrs.update(wall_s=wall, steps=int(steps), device=str(device),
                    backend=generator.backend.name, replayed_graphs=replayed)
    return df


@torch.no_grad()
def kv_cache_comparison(generator: MusicGenerator, prompt: str = "music",
                        lengths: Sequence[int] = (8, 32, 128), repeats: int = 5, seed: int = 0):
    """Time one decoder step at position n with a KV cache vs recomputing all n positions.

    With the cache, step n feeds one column and attends to n cached keys/values; without one
    (a plain transformer forward), step n re-runs the decoder on all n columns, so a clip of
    S steps costs about S²/2 column-passes instead of S. CFG rows are included (2 rows).

    Returns:
        DataFrame ``length, cached_step_s, recompute_s, ratio``: medians of ``repeats`` timed
        runs, after one untimed warm-up run per length.
    """
    import pandas as pd

    generator = _check_generator(generator)
    model, backend = generator.model, generator.backend
    limit = int(model.config.decoder.max_position_embeddings) - 1
    lengths = _as_list("lengths", lengths, lambda n: _count("length", n, 1))
    for n in lengths:
        check_range("length", n, 1, limit, hint="the decoder has no positions beyond that.")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt must be one non-empty string, got {prompt!r}.")
    cond = backend.encode_text([prompt, None])                       # [cond; uncond] rows
    rng = torch.Generator().manual_seed(seed)
    vocab = model.special_token
    rows = []
    for n in lengths:
        tokens = torch.randint(0, vocab, (2, model.num_codebooks, n), generator=rng)
        tokens = tokens.to(model.device)                             # [2, K, n]
        cached, full = [], []
        for _ in range(1 + _count("repeats", repeats, 1)):          # the first is a warm-up
            state = backend.start(cond, max_len=n + 1)
            if n > 1:
                backend.step(tokens[..., :-1], state)                # fill the cache (untimed)
            cached.append(_timed(model.device, backend.step, tokens[..., -1:], state))
            full.append(_timed(model.device, backend.step, tokens,
                               backend.start(cond, max_len=n + 1)))
        c, f = statistics.median(cached[1:]), statistics.median(full[1:])
        rows.append(dict(length=n, cached_step_s=c, recompute_s=f, ratio=f / c))
    return pd.DataFrame(rows)


def _timed(device: torch.device, fn, *args) -> float:
    _sync(device)
    start = time.perf_counter()
    fn(*args)
    _sync(device)
    return time.perf_counter() - start


# --- plots (matplotlib loads on first use) ------------------------------------------------

def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    return ax


def _lines(summary, x: str, always: str):
    """Split a summary into one line per value of ``always`` and of every set-up that varies."""
    keys = [k for k in _SETUP if k in summary.columns and summary[k].nunique() > 1] + [always]
    for values, part in summary.groupby(keys, sort=False):
        label = " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
        yield label, part.sort_values(x)


def plot_scaling(df, ax=None, y: str = "steps_per_s"):
    """Decoder steps/s (median of the timed runs) vs batch size, one line per duration.

    ``y="item_steps_per_s"`` plots throughput instead: frames made per second, all items.
    """
    summary, ax = profile_summary(df), _axes(ax)
    if y not in _TIMINGS:
        raise ConfigError(f"y={y!r} is not a timing column; choose one of {_TIMINGS}.")
    for label, part in _lines(summary, "batch_size", "duration"):
        ax.plot(part["batch_size"], part[y], marker="o", label=f"{label} s")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size", ylabel=y.replace("_", " "), title="batch-size scaling")
    ax.legend(title="duration")
    return ax


def plot_rtf(df, ax=None):
    """Real-time factor (median) vs duration, one line per batch size; RTF 1 = real time."""
    summary, ax = profile_summary(df), _axes(ax)
    for label, part in _lines(summary, "duration", "batch_size"):
        ax.plot(part["duration"], part["rtf"], marker="o", label=f"B = {label}")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="real time")
    ax.set(xlabel="seconds of audio", ylabel="RTF (compute s / audio s)", title="real-time factor")
    ax.legend()
    return ax


def plot_breakdown(df, ax=None):
    """Horizontal bars: each stage's share of the time of a :func:`breakdown`."""
    missing = sorted({"stage", "share", "seconds"} - set(df.columns))
    if missing:
        raise ConfigError(f"the table lacks columns {missing}; pass breakdown's result.")
    ax = _axes(ax)
    ax.barh(df["stage"], 100 * df["share"])
    for i, (share, sec) in enumerate(zip(df["share"], df["seconds"])):
        ax.text(100 * share, i, f" {sec * 1e3:.0f} ms", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="share of the time (%)", title="where one generation's time goes")
    return ax
