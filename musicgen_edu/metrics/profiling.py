"""Latency profiling: where generation time goes, and how close it is to the hardware's limit.

Four tools for lecture 05 (``notebooks/05_latency.ipynb``):

* :func:`profile_generation` times whole ``MusicGenerator.generate`` calls over a grid of
  durations and batch sizes, from the generator's own ``Generation.timings`` (generator.py
  ``_complete``: it synchronises the GPU after the first step and after the loop, and the
  EnCodec output ends with ``.cpu()``, which waits for the GPU, so GPU timings are real);
* :func:`breakdown` runs one generation under ``torch.profiler`` with a ``record_function``
  label per stage (text encoding, decoder attention / MLP / heads, sampling, codebook pattern,
  EnCodec decode), by driving the backend's public pieces in the loop of
  ``MusicGenerator._window`` (``tests/test_profiling.py`` checks it makes the same tokens);
* :func:`kv_cache_comparison` shows why the KV cache matters: a cached step vs recomputing
  every position;
* :func:`decode_bound` is the memory-bandwidth lower bound of one decoder step — each step
  must read every decoder weight and the whole KV cache once — divided by a bandwidth
  :func:`measure_bandwidth` measures with a copy benchmark. It follows the roofline reasoning
  of Pope et al. 2022 ("Efficiently Scaling Transformer Inference", sec. 2) and of
  pytorch-labs/gpt-fast ("model size x tokens/s = achieved bandwidth").

Vocabulary: ``[B, K, S]`` tokens, ``[B, C, T]`` waveforms; "step" = one decoder call that
produces one token per codebook for every item; "rows" = ``2B`` with classifier-free
guidance (conditional + unconditional), ``B`` without.
"""

from __future__ import annotations

import contextlib
import gc
import numbers
import statistics
import sys
import time
from typing import Sequence

import torch

from ..errors import ConfigError, check_range
from ..generator import MusicGenerator
from ..models import MusicGenModel, resolve_device
from ..patterns import UNKNOWN, build_delay_grid, codebook_delays, undelay
from ..sampling import classifier_free_guidance, process_logits, sample_tokens

__all__ = ["profile_generation", "profile_summary", "breakdown", "kv_cache_comparison",
           "measure_bandwidth", "decode_bound", "plot_scaling", "plot_rtf", "plot_breakdown",
           "BREAKDOWN_STAGES"]

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
    "sampling": "classifier-free guidance, temperature, top-k, top-p, softmax, multinomial draws",
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


@torch.no_grad()
def _instrumented_run(generator: MusicGenerator, prompts: list[str], config, stages: _Stages):
    """``MusicGenerator._window`` for text prompts, one window, every stage labelled.

    Returns ``(tokens [B, K, F], wav [B, C, T])`` — the same as ``generate`` with this config.
    """
    model, backend, batch = generator.model, generator.backend, len(prompts)
    channels, k = model.audio_channels, model.num_codebooks
    frames = max(1, round(config.duration * model.frame_rate))
    rngs = [torch.Generator(device=model.device).manual_seed(config.seed + i)
            for i in range(batch)]
    guided = config.guidance_scale > 1                               # rows [cond; uncond]
    texts, melody_mask = prompts, [True] * batch
    if guided:
        texts, melody_mask = prompts + [None] * batch, melody_mask + [False] * batch
    with stages("text encoding"):
        cond = backend.encode_text(texts, melody_mask=melody_mask)   # N = 2B or B rows
    with stages("codebook pattern"):
        empty = torch.zeros(batch, k, 0, dtype=torch.long, device=model.device)
        grid = build_delay_grid(empty, frames, model.special_token, channels)  # [B, K, F+D+1]
    with stages("text encoding"):
        state = backend.start(cond, max_len=grid.shape[-1])
    feed = grid[:, :, :1]                                            # the BOS column
    for col in range(1, grid.shape[-1]):
        with stages("codebook pattern"):
            rows = feed.repeat(2, 1, 1) if guided else feed          # [N, K, 1]
        with stages("decoder step"):
            logits = backend.step(rows, state)                       # [N, K, V]
        with stages("sampling"):
            if guided:
                logits = classifier_free_guidance(logits[:batch], logits[batch:],
                                                  config.guidance_scale)
            if config.use_sampling:
                logits = process_logits(logits, temperature=config.temperature,
                                         top_k=config.top_k, top_p=config.top_p)
            sampled = sample_tokens(logits, rngs, greedy=not config.use_sampling)  # [B, K]
        with stages("codebook pattern"):
            known = grid[:, :, col]
            grid[:, :, col] = torch.where(known == UNKNOWN, sampled, known)
            feed = grid[:, :, col: col + 1]
    with stages("codebook pattern"):
        tokens = undelay(grid, frames, channels)                     # [B, K, F]
    with stages("audio decode"):
        wav = backend.decode_audio(tokens).cpu()                     # [B, C, T]
    return tokens.cpu(), wav


def breakdown(generator: MusicGenerator, prompt: str | Sequence[str], duration: float = 1.0,
              *, seed: int = 0, warmup: int = 1, trace_path: str | None = None, **settings):
    """Profile one generation and split its time into stages (see ``BREAKDOWN_STAGES``).

    The loop is the generator's own (``_window``) driven through public pieces —
    ``backend.encode_text / start / step / decode_audio``, ``sampling.py``, ``patterns.py``
    — with a ``torch.profiler.record_function`` range per stage; forward hooks on the
    decoder's blocks (native or transformers) label attention, MLP and heads inside each
    step. A stage's seconds are the CPU wall time of its ranges; on a GPU every range ends
    with a synchronisation, so it includes the GPU work it launched (the syncs cost a few
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
        ``device``, ``backend``.
    """
    import pandas as pd

    generator = _check_generator(generator)
    texts = _texts(prompt, "prompt")
    check_range("duration", duration, 0, generator.max_duration, low_open=True,
                hint="breakdown profiles one window; time long form with profile_generation.")
    config = generator.config.replace(duration=float(duration), seed=_count("seed", seed, 0),
                                      **settings)
    device = generator.model.device
    for _ in range(_count("warmup", warmup, 0)):
        _instrumented_run(generator, texts, config, _Stages(device))
    stages = _Stages(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        with _instrument(generator, stages):
            _sync(device)
            start = time.perf_counter()
            tokens, _ = _instrumented_run(generator, texts, config, stages)
            wall = time.perf_counter() - start
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
    df = pd.DataFrame({"stage": list(BREAKDOWN_STAGES),
                       "seconds": [seconds[s] for s in BREAKDOWN_STAGES],
                       "share": [seconds[s] / total for s in BREAKDOWN_STAGES],
                       "includes": list(BREAKDOWN_STAGES.values())})
    steps = tokens.shape[-1] + max(codebook_delays(tokens.shape[1], generator.model.audio_channels))
    df.attrs.update(wall_s=wall, steps=int(steps), device=str(device),
                    backend=generator.backend.name)
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


# --- the physical limit: bytes per step / memory bandwidth --------------------------------

def measure_bandwidth(device: str | torch.device | None = None, size_mb: float = 256,
                      repeats: int = 10) -> float:
    """Memory bandwidth in GB/s (1e9 bytes/s): the median of timed ``dst.copy_(src)``.

    A copy reads ``size`` bytes and writes ``size`` bytes, so it moves ``2 x size``; the
    source is filled first (untouched pages would all map to one zero page and flatter the
    CPU). One untimed copy warms up; GPU copies are synchronised before and after.

    Args:
        device: ``None``/"auto" (cuda > mps > cpu) or a device.
        size_mb: MiB per tensor, in [1, 16384]; use a size well above the CPU's caches.
        repeats: timed copies, >= 1.
    """
    dev = resolve_device("auto" if device is None else device)
    check_range("size_mb", size_mb, 1, 16384)
    n = int(size_mb * 2**20) // 4                                   # float32 elements
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)                                                  # warm-up, touches dst
    times = [_timed(dev, dst.copy_, src) for _ in range(_count("repeats", repeats, 1))]
    return 2 * n * 4 / statistics.median(times) / 1e9


def _weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the decoder weights one step reads (each tensor once, however shared).

    Left out: the embedding tables (a step reads K rows of them), the position table, and
    the cross-attention key/value projections (applied to the text once per generation).
    """
    skip = ("embed_tokens", "positions", "encoder_attn.k_proj", "encoder_attn.v_proj")
    seen, total = set(), 0
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        key = id(t) if t.is_mkldnn else t.data_ptr()      # packed CPU weights have no pointer
        if any(s in name for s in skip) or key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def decode_bound(model, device=None, batch_size: int = 1, cache_len: int | None = None,
                 cfg: bool = True, text_len: int = 0, bandwidth_gbs: float | None = None,
                 size_mb: float = 256) -> dict:
    """The fastest one decoder step can be if reading memory were its only cost.

    Each step reads every decoder weight once (whatever the batch) and the KV cache of every
    row::

        kv_bytes = 2 (keys, values) x layers x rows x heads x head_dim x cache_len x dtype bytes
        bound_s_per_step = (weight_bytes + kv_bytes [+ text kv]) / bandwidth

    with ``rows = 2 x batch_size`` under classifier-free guidance. Real steps also compute,
    launch kernels and run Python, so measured steps/s stays below ``bound_steps_per_s``.

    Args:
        model: a loaded MusicGenModel, or a MusicGenerator (then its backend's decoder
            weights are counted, e.g. int8 for "native-int8").
        device: where to measure the bandwidth; default the model's device.
        batch_size: items per step, >= 1.
        cache_len: cached positions a step attends to; default half a full window (the
            average over a 30 s clip). Use ``steps // 2`` for a clip of ``steps`` steps.
        cfg: classifier-free guidance on (doubles the rows).
        text_len: text tokens cross-attended (adds their cached keys/values; 0 = ignore).
        bandwidth_gbs: a known bandwidth in GB/s instead of measuring one.
        size_mb: tensor size of the bandwidth benchmark.

    Returns:
        dict ``model, device, dtype, batch_size, rows, cache_len, weight_bytes, kv_bytes,
        bytes_per_step, bandwidth_gbs, bound_s_per_step, bound_steps_per_s``.
    """
    if isinstance(model, MusicGenerator):
        decoder = getattr(model.backend, "decoder", None)            # native: its own weights
        mg_model = model.model
        decoder = mg_model.model.decoder if decoder is None else decoder
    elif isinstance(model, MusicGenModel):
        decoder, mg_model = model.model.decoder, model
    else:
        raise ConfigError(f"expected a MusicGenModel or MusicGenerator, got "
                          f"{type(model).__name__}; use mg.load_model('debug').")
    cfg_dec = mg_model.config.decoder
    layers, heads = int(cfg_dec.num_hidden_layers), int(cfg_dec.num_attention_heads)
    head_dim = int(cfg_dec.hidden_size) // heads
    rows = _count("batch_size", batch_size, 1) * (2 if cfg else 1)
    if cache_len is None:
        cache_len = int(mg_model.max_duration * mg_model.frame_rate) // 2
    _count("cache_len", cache_len, 0)
    _count("text_len", text_len, 0)
    dtype_bytes = torch.empty((), dtype=mg_model.dtype).element_size()
    weight_bytes = _weight_bytes(decoder)
    text_len = 0 if mg_model.is_melody else text_len                 # melody: text is in the cache
    kv_bytes = 2 * layers * rows * heads * head_dim * (cache_len + text_len) * dtype_bytes
    if bandwidth_gbs is None:
        bandwidth_gbs = measure_bandwidth(device or mg_model.device, size_mb)
    check_range("bandwidth_gbs", bandwidth_gbs, 0, None, low_open=True)
    total = weight_bytes + kv_bytes
    bound = total / (bandwidth_gbs * 1e9)
    return dict(model=mg_model.name, device=str(device or mg_model.device),
                dtype=str(mg_model.dtype).replace("torch.", ""), batch_size=batch_size,
                rows=rows, cache_len=cache_len, text_len=text_len, weight_bytes=weight_bytes,
                kv_bytes=kv_bytes, bytes_per_step=total, bandwidth_gbs=float(bandwidth_gbs),
                bound_s_per_step=bound, bound_steps_per_s=1 / bound)


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
