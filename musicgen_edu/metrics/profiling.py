"""Latency profiling: where generation time goes, and how close it is to the hardware's limit.

Tools for lecture 05 (``notebooks/05_latency.ipynb``); their plots are in ``profiling_plots.py``:

* :func:`profile_generation` times whole ``MusicGenerator.generate`` calls over a grid of
  durations and batch sizes, from the generator's own ``Generation.timings`` (generator.py
  ``_complete``: it synchronises the GPU after the first step and after the loop, and the
  EnCodec output ends with ``.cpu()``, which waits for the GPU, so GPU timings are real);
* :func:`profile_variants` compares settings or generators (CFG on/off, backends) with their
  runs taken in turns, so a burst of load on a shared machine slows every variant alike;
* :func:`~musicgen_edu.metrics.breakdown.breakdown`, the split of one generation by stage,
  lives in ``breakdown.py``;
* :func:`kv_cache_comparison` shows why the KV cache matters: a cached step vs recomputing
  every position;
* the memory-bandwidth lower bound of a step, :func:`~musicgen_edu.metrics.bound.decode_bound`
  and :func:`~musicgen_edu.metrics.bound.measure_bandwidth`, lives in ``bound.py``.

Vocabulary: ``[B, K, S]`` tokens, ``[B, C, T]`` waveforms; "step" = one decoder call that
produces one token per codebook for every item; "rows" = ``2B`` with classifier-free
guidance (conditional + unconditional), ``B`` without.
"""

from __future__ import annotations

import gc
import numbers
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence

import torch

from ..devices import synchronize  # wait for queued GPU work before a clock read
from ..errors import ConfigError, check_range
from ..generator import MusicGenerator

__all__ = ["profile_generation", "profile_variants", "profile_summary", "kv_cache_comparison",
           "cpu_load"]

# --- small pieces: synchronisation, memory, validation --------------------------------------

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


def cpu_load() -> float | None:
    """Runnable processes per CPU core this process may use, averaged over the last minute.

    ``os.getloadavg()[0]`` divided by the cores; None where the OS does not say (Windows). A
    timing run counts itself (about 1 on an idle machine); above 1 per core the cores are
    shared, and timings measure the other programs too: rerun on a quiet machine.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return load / max(cores or 1, 1)


def check_count(name: str, value, low: int) -> int:
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


def check_prompts(prompts, what: str = "prompts") -> list[str]:
    """One prompt or a non-empty list of non-blank prompts -> a list; else ConfigError naming
    ``what`` (``"prompts"``, or ``"prompt"`` for ``breakdown``)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError(f"{what} must be a non-empty string or list of them, got {prompts!r}.")
    return prompts


def check_generator(generator) -> MusicGenerator:
    """``generator`` itself if it is a :class:`MusicGenerator`; else ConfigError saying how to
    make one."""
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

    generator = check_generator(generator)
    texts = check_prompts(prompts)
    durations = _as_list("durations", durations, _seconds)
    batch_sizes = _as_list("batch_sizes", batch_sizes, lambda b: check_count("batch size", b, 1))
    repeats, warmup = check_count("repeats", repeats, 1), check_count("warmup", warmup, 0)
    if "duration" in settings or "seed" in settings:
        raise ConfigError("pass durations=[...] and seed=... as their own arguments, not in "
                          "**settings.")
    config = generator.config.replace(seed=seed, **settings)     # validates every setting now
    rows = []
    for duration in durations:
        for batch in batch_sizes:
            items = [texts[i % len(texts)] for i in range(batch)]
            run_config = config.replace(duration=float(duration))
            rows += [_timed_run(generator, items, run_config, run, warmup)
                     for run in range(warmup + repeats)]
    return pd.DataFrame(rows)


def _timed_run(generator: MusicGenerator, items: list[str], config, run: int,
               warmup: int) -> dict:
    """One ``generate`` of ``items`` with ``config``: a row of :func:`profile_generation`."""
    model, device = generator.model, generator.model.device
    _reset_peak(device)
    out = generator.generate(items, progress=False, **vars(config))
    t = out.timings
    memory, metric = _peak_memory(device)
    step_s = (t["generate_s"] - t["first_step_s"]) / max(t["steps"] - 1, 1)
    batch = len(items)
    return dict(
        model=model.name, device=str(device), backend=generator.backend.name,
        dtype=str(model.dtype).replace("torch.", ""), duration=config.duration,
        audio_s=out.duration, batch_size=batch,
        repeat=run if run < warmup else run - warmup, warmup=run < warmup,
        guidance_scale=config.guidance_scale, steps=t["steps"], load_s=t["load_s"],
        first_step_s=t["first_step_s"], step_s=step_s,
        steps_per_s=t["steps_per_s"], steady_steps_per_s=1 / max(step_s, 1e-12),
        item_steps_per_s=t["steps_per_s"] * batch, generate_s=t["generate_s"],
        decode_s=t["decode_s"], total_s=t["total_s"], rtf=t["rtf"],
        peak_memory_mb=memory, memory_metric=metric)


def profile_variants(variants: Mapping[str, tuple[MusicGenerator, Mapping]],
                     prompts: str | Sequence[str], duration: float = 1.0, batch_size: int = 1,
                     repeats: int = 5, warmup: int = 1, seed: int = 0):
    """Time several variants of a generation in turns: run r of each before run r + 1 of any.

    ``profile_generation`` of one setting after another lets a burst of load on a shared
    machine (another program, a test run, the notebook's own plotting) land on one setting
    only, and a median of a few runs then compares the burst, not the settings. Taking the
    runs in turns spreads load over every variant alike.

    Args:
        variants: name -> ``(generator, settings)``, settings being :class:`GenerationConfig`
            fields, e.g. ``{"no CFG": (gen, {"guidance_scale": 1.0}), "CFG 3": (gen, {})}``
            or one generator per backend with ``{}``. At least one.
        prompts: one prompt or several; a batch cycles through them.
        duration: seconds of audio per item, in (0, 600].
        batch_size: items generated together, >= 1.
        repeats: timed runs per variant, >= 1.
        warmup: runs before them, >= 0 (every variant's warm-up runs come first, in turns too).
        seed: the seed of every run (item i uses ``seed + i``).

    Returns:
        :func:`profile_generation`'s table plus a ``variant`` column (a set-up key of
        :func:`profile_summary`, which sorts the variants by name).
    """
    import pandas as pd

    if not isinstance(variants, Mapping) or not variants:
        raise ConfigError(f"variants must be a non-empty dict name -> (generator, settings), "
                          f"got {variants!r}.")
    texts = check_prompts(prompts)
    items = [texts[i % len(texts)] for i in range(check_count("batch size", batch_size, 1))]
    repeats, warmup = check_count("repeats", repeats, 1), check_count("warmup", warmup, 0)
    runs = {}
    for name, pair in variants.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Mapping)):
            raise ConfigError(f"variant {name!r} must be (generator, settings dict), got {pair!r}.")
        generator, settings = check_generator(pair[0]), dict(pair[1])
        if {"duration", "seed"} & set(settings):
            raise ConfigError(f"variant {name!r}: pass duration= and seed= to profile_variants, "
                              "not in its settings.")
        runs[name] = (generator, generator.config.replace(duration=_seconds(duration),
                                                          seed=seed, **settings))
    rows = []
    for run in range(warmup + repeats):
        for name, (generator, config) in runs.items():
            rows.append({"variant": name, **_timed_run(generator, items, config, run, warmup)})
    return pd.DataFrame(rows)


# the timing columns of a profile table (medians in profile_summary, plot_scaling's y choices)
TIMING_COLUMNS = ["steps", "first_step_s", "step_s", "steps_per_s", "steady_steps_per_s",
                  "item_steps_per_s", "generate_s", "decode_s", "total_s", "rtf", "peak_memory_mb"]
# the set-up columns a summary groups by (and plots tell lines apart by)
SETUP_COLUMNS = ["variant", "model", "device", "backend", "dtype", "guidance_scale"]


def profile_summary(df):
    """Medians of the timed runs (warm-up left out) per set-up, duration and batch size.

    Tables of several generators may be concatenated first (``pd.concat([t1, t2])``): the
    set-up columns (variant, model, device, backend, dtype, guidance_scale) stay group keys. Adds
    ``runs``, the number of timed runs behind each median.
    """
    missing = sorted({"duration", "batch_size", "warmup", *TIMING_COLUMNS} - set(df.columns))
    if missing:
        raise ConfigError(f"the table lacks columns {missing}; pass profile_generation's result.")
    timed = df[~df["warmup"].astype(bool)]
    if timed.empty:
        raise ConfigError("the table has no timed runs (every row is a warm-up); use repeats >= 1.")
    keys = [c for c in SETUP_COLUMNS if c in df.columns] + ["duration", "batch_size"]
    groups = timed.groupby(keys, sort=False)
    summary = groups[TIMING_COLUMNS].median()
    summary["runs"] = groups.size()
    return summary.reset_index().sort_values(keys, kind="stable", ignore_index=True)


@torch.no_grad()
def kv_cache_comparison(generator: MusicGenerator, prompt: str = "music",
                        lengths: Sequence[int] = (8, 32, 128), repeats: int = 15,
                        seed: int = 0):
    """Time one decoder step at position n with a KV cache vs recomputing all n positions.

    With the cache, step n feeds one column and attends to n cached keys/values; without one
    (a plain transformer forward), step n re-runs the decoder on all n columns, so a clip of
    S steps costs about S²/2 column-passes instead of S. CFG rows are included (2 rows).

    Returns:
        DataFrame ``length, cached_step_s, recompute_s, ratio``: medians of ``repeats`` timed
        runs, after one untimed warm-up run per length. The lengths are timed in turns (one
        run of each, then the next), so a burst of load on a shared machine is not read as
        a difference between lengths.
    """
    import pandas as pd

    generator = check_generator(generator)
    model, backend = generator.model, generator.backend
    limit = int(model.config.decoder.max_position_embeddings) - 1
    lengths = _as_list("lengths", lengths, lambda n: check_count("length", n, 1))
    for n in lengths:
        check_range("length", n, 1, limit, hint="the decoder has no positions beyond that.")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt must be one non-empty string, got {prompt!r}.")
    cond = backend.encode_text([prompt, None])                       # [cond; uncond] rows
    rng = torch.Generator().manual_seed(seed)
    vocab = model.special_token
    tokens = {n: torch.randint(0, vocab, (2, model.num_codebooks, n), generator=rng)
              .to(model.device) for n in lengths}                   # [2, K, n] per length
    cached, full = {n: [] for n in lengths}, {n: [] for n in lengths}
    for _ in range(1 + check_count("repeats", repeats, 1)):              # the first is a warm-up
        for n in lengths:                     # every length in turn: load slows all alike
            state = backend.start(cond, max_len=n + 1)
            if n > 1:
                backend.step(tokens[n][..., :-1], state)            # fill the cache (untimed)
            cached[n].append(timed(model.device, backend.step, tokens[n][..., -1:], state))
            full[n].append(timed(model.device, backend.step, tokens[n],
                                  backend.start(cond, max_len=n + 1)))
    rows = []
    for n in lengths:
        c, f = statistics.median(cached[n][1:]), statistics.median(full[n][1:])
        rows.append({"length": n, "cached_step_s": c, "recompute_s": f, "ratio": f / c})
    return pd.DataFrame(rows)


def timed(device: torch.device, fn, *args) -> float:
    """Seconds ``fn(*args)`` takes, the device synchronised before and after (GPU work
    included)."""
    synchronize(device)
    start = time.perf_counter()
    fn(*args)
    synchronize(device)
    return time.perf_counter() - start
