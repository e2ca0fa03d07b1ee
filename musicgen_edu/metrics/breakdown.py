"""One generation, stage by stage: :func:`breakdown` under ``torch.profiler``.

Lecture 05 (``notebooks/05_latency.ipynb``, section 3). ``breakdown`` runs one ``generate``
under ``torch.profiler`` with a ``record_function`` label per stage (text encoding, decoder
attention / MLP / heads, sampling, codebook pattern, EnCodec decode): the labels live in the
generator's own loop (``MusicGenerator._stage``), free when nobody profiles, so the profiled
loop is the real one; forward hooks on the decoder's blocks (native or transformers) split
each step. ``BREAKDOWN_STAGES`` says what every stage's time includes. Whole-generation
timings are in ``profiling.py``; the bar chart is ``profiling_plots.plot_breakdown``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import torch

from ..backends.native import Block
from ..devices import synchronize  # a stage's range ends with its GPU work done
from ..errors import check_range
from ..generator import MusicGenerator
from ..patterns import codebook_delays
from .profiling import check_count, check_generator, check_prompts

__all__ = ["breakdown", "BREAKDOWN_STAGES"]

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




class Stages:
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
        synchronize(self.device)  # the range then includes the GPU work it launched
        self.open.pop().__exit__(None, None, None)

    def hook(self, first: torch.nn.Module, last: torch.nn.Module, stage: str) -> list:
        """Label everything from ``first``'s forward to the end of ``last``'s as ``stage``."""
        return [first.register_forward_pre_hook(lambda *_: self.enter(stage)),
                last.register_forward_hook(lambda *_: self.exit())]


def _decoder_modules(generator: MusicGenerator):
    """``(layers, lm_heads)`` of the backend's decoder: native's own or transformers'."""
    decoder = generator.backend.decoder                              # None: transformers'
    if decoder is not None:
        return decoder.layers, decoder.lm_heads
    causal = generator.model.model.decoder                           # MusicgenForCausalLM
    return causal.model.decoder.layers, causal.lm_heads


@contextlib.contextmanager
def _instrument(generator: MusicGenerator, stages: Stages):
    """Hooks that label attention, MLP and heads inside every decoder step; removed after."""
    layers, heads = _decoder_modules(generator)
    # a block in one C++ call (native on a CPU with our kernels) has nothing inside to label:
    # profile its Python forward, the same operators with the same bits (the layers are shared
    # by the model's backends: other generations meanwhile take that forward too)
    fused = [(layer, layer.block_kernel) for layer in layers
             if isinstance(layer, Block) and layer.block_kernel is not None]
    try:
        for layer, _ in fused:
            layer.block_kernel = None
        yield from _hooks(layers, heads, stages)
    finally:
        for layer, step in fused:
            layer.block_kernel = step


def _hooks(layers, heads, stages: Stages):
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


@contextlib.contextmanager
def without_kineto_banner():
    """Hold back the ``USDT: ... profiler_start`` / ``profiler_stop`` lines of torch's profiler.

    kineto (torch >= 2.11) writes them to the C-level stderr at every start and stop, and no
    setting silences them (``KINETO_LOG_LEVEL`` does not); a notebook shows them as red error
    text. File descriptor 2 goes to a temporary file meanwhile, and every other line written
    there (a real warning from C++) is passed on to ``sys.stderr`` afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not line.startswith("USDT:")]
            if kept:
                sys.stderr.write("".join(kept))


def breakdown(generator: MusicGenerator, prompt: str | Sequence[str], duration: float = 1.0,
              *, seed: int = 0, warmup: int = 1, trace_path: str | None = None, **settings):
    """Profile one generation and split its time into stages (see ``BREAKDOWN_STAGES``).

    The loop is the generator's own: ``generate`` runs with ``generator.stages`` set, so the
    labels the generator's decoding loop puts around each stage become
    ``torch.profiler.record_function`` ranges; forward hooks on the decoder's blocks (native
    or transformers) label attention, MLP and heads inside each step. On a GPU the warm-up
    run captures the decode step's CUDA graphs (kept by the backend), so the profiled run
    replays them: a replayed step is one "decoder step" range, with no attention/MLP split.
    On a CPU with our kernels the profiled steps run each block's Python forward (the same
    operators and bits; a block in one C++ call would hide the split), so they are slower
    than unprofiled ones. A stage's seconds are the CPU wall time of its ranges; on a GPU
    every range ends with a synchronisation, so it includes the GPU work it launched (the syncs
    cost a few microseconds each: the total is a little above an unprofiled run). The profiler
    adds a few microseconds per operator too, which matters for tiny models: read the shares.

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

    generator = check_generator(generator)
    texts = check_prompts(prompt, "prompt")
    check_range("duration", duration, 0, generator.max_duration, low_open=True,
                hint="breakdown profiles one window; time long form with profile_generation.")
    config = generator.config.replace(duration=float(duration), seed=check_count("seed", seed, 0),
                                      **settings)
    device = generator.model.device

    def run():
        return generator.generate(texts, progress=False, **dataclasses.asdict(config))

    for _ in range(check_count("warmup", warmup, 0)):   # also captures CUDA graphs (pooled, reused)
        run()
    stages, replays = Stages(device), generator.backend.replays
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with without_kineto_banner(), torch.profiler.profile(activities=activities) as prof:
        with _instrument(generator, stages):
            generator.stages = stages               # the loop's own labels (generator._stage)
            try:
                synchronize(device)
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
    # with a fused draw the sampling is inside it (bench/README.md, section "A replayed step in
    # the stage breakdown").
    replayed = device.type == "cuda" and generator.backend.replays > replays
    if replayed:
        includes["decoder: other"] = ("the whole decode step, replayed as one CUDA graph: "
                                      "attention, MLP, heads" + (
                                          ", CFG and the draw" if generator.backend.fuses_draw
                                          else ""))
    df = pd.DataFrame({"stage": list(BREAKDOWN_STAGES),
                       "seconds": [seconds[s] for s in BREAKDOWN_STAGES],
                       "share": [seconds[s] / total for s in BREAKDOWN_STAGES],
                       "includes": list(includes.values())})
    steps = tokens.shape[-1] + max(codebook_delays(tokens.shape[1], generator.model.audio_channels))
    df.attrs.update(wall_s=wall, steps=int(steps), device=str(device),
                    backend=generator.backend.name, replayed_graphs=replayed)
    return df
