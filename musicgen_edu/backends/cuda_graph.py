"""Replay the decode step as one CUDA graph instead of hundreds of kernel launches from Python.

On a GPU, one MusicGen decode step is hundreds of small kernels; launched one by one from
Python, the launches can cost more than the arithmetic (as gpt-fast found for small batches;
the figures for this decoder: bench/README.md, section "Kernel launches and CUDA graphs"). A
CUDA graph records the kernels of one call *with their memory addresses*; replaying it is a
single launch. The price: everything the step reads or writes must stay at fixed addresses
with fixed shapes. So the token column and the position are
copied into static tensors, the KV cache and the text keys/values are the generation's own
preallocated tensors, attention covers the whole cache under a mask
(:meth:`NativeDecoder.step_static`), and the logits land in a static output tensor. What is
captured is ``native.decode_step`` itself, in its fixed-shape form: with the counter sampler the
graph also runs classifier-free guidance, the filters and the draw (``sampling.Sampling.draw``,
seeds and step in static tensors): one launch per decode step.

Attention covers a bucket of the cache (256, 512, 1024, 1536, then multiples of 512 slots)
rather than all of it, with one graph per bucket: a fixed shape per graph, yet a step early in
a 30 s window does not pay for the whole window.

A ``NativeBackend`` runs its one-token steps through :func:`graphed_step`, which makes the
generation's :class:`GraphedStep`, replays (or first captures) it, and falls back to eager
decoding, with a warning, where capture fails.

This is the manual form of ``torch.compile(mode="reduce-overhead")`` used by
pytorch-labs/gpt-fast (``generate.py``), following PyTorch's "CUDA Graphs" notes
(``torch.cuda.graph``: warm up on a side stream, capture, replay).
"""

from __future__ import annotations

import functools
import time
import warnings

import torch

from ..sampling import Sampling
from .native import FixedShape, decode_step

__all__ = ["GraphedStep", "graphed_step", "CaptureError", "attention_length",
           "ATTENTION_BUCKETS", "keep_attention_off_cudnn"]


# Cache lengths the fixed-shape (CUDA-graph) step attends over: the smallest bucket that covers
# the position, then multiples of 512. Attention over the whole 30 s cache at every step would
# make step 10 cost as much as step 1500; with buckets a step reads at most ~2x what it needs,
# for one captured graph per bucket.
ATTENTION_BUCKETS = (256, 512, 1024, 1536)


class CaptureError(RuntimeError):
    """Capturing a step as a CUDA graph failed (an op this GPU, driver or profiler cannot
    capture). Only this is caught to decode on without graphs: an error of the step itself
    is raised as it is, not turned into a warning."""


def keep_attention_off_cudnn() -> None:
    """Switch PyTorch's cuDNN attention off for this process.

    On CUDA, PyTorch may pick cuDNN's fused attention, whose last bits can vary from run to
    run, so two identical generations may differ in a few tokens. "Same seed, same tokens" is
    a promise of this library, so a repeatable backend turns it off, for the whole process: the
    switch is global, and flipping it around each step would race between the server's worker
    threads. The price is a slower attention kernel (bench/README.md, section "cuDNN attention
    and repeatable tokens").
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


def attention_length(pos: int, max_len: int) -> int:
    """The bucket covering cache slots ``0 .. pos``, at most ``max_len``.

    For ``max_len = 3000``: positions 0 and 255 give 256, 256 gives 512, 1600 gives 2048 and
    2999 gives 3000.
    """
    bucket = next((b for b in ATTENTION_BUCKETS if pos < b), (pos // 512 + 1) * 512)
    return min(bucket, max_len)


class GraphedStep:
    """Captured one-token decode steps, one graph per attention bucket, for one generation.

    Call it with a token column ``[N, K, 1]``, the position (int) to write and the state; it
    returns the logits ``[N, K, V]`` (or, given a ``Sampling``, the drawn tokens ``[B, K]``).
    Attention covers the bucket of cache slots that holds the position
    (:func:`attention_length`), so a step early in a long window reads a short cache; each
    bucket's graph is captured the first time the position enters it. On a CPU (no
    graphs) the same static buffers and buckets are used and the step runs eagerly, which is
    how the tests check the plumbing without a GPU. It keeps no reference to the state (the
    state holds it), so a finished generation's KV cache is freed as soon as it is dropped.
    """

    def __init__(self, decoder, state, tokens: torch.Tensor, on_capture=None):
        self.decoder, self.on_capture = decoder, on_capture  # on_capture(seconds) per capture
        self.tokens = tokens.clone()                                        # static input [N, K, 1]
        self.pos = torch.full((1,), state.pos, dtype=torch.long, device=tokens.device)
        self.max_len = state.k_cache[0].shape[2]
        self.graphs: dict[tuple, tuple] = {}    # (length, Sampling) -> (CUDAGraph, static out)
        self.seeds: dict = {}                   # batch shape -> (static seeds, their source)
        self.step_no = torch.zeros(1, dtype=torch.long, device=tokens.device)  # the draw's clock
        self.lengths: list[int] = []            # buckets used, in order (for tests and timings)
        self.cuda = tokens.device.type == "cuda"

    def _capture(self, body) -> tuple:
        """Capture ``body()`` (one step on the static buffers) as a CUDA graph."""
        start = time.perf_counter()
        with torch.cuda.device(self.tokens.device):   # streams and capture on the model's GPU
            # Warm up on a side stream (allocator pools, cuBLAS workspaces), then capture. The
            # warm-up writes this position's keys/values, which the real step rewrites.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    body()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = body()
        torch.cuda.synchronize(self.tokens.device)
        if self.on_capture is not None:
            self.on_capture(time.perf_counter() - start)
        return graph, out                        # out: the graph's static output

    def _static_seeds(self, seeds: torch.Tensor) -> torch.Tensor:
        """The graph's copy of the items' seeds ``[B]``: one static buffer per batch size, into
        which a new generation's seeds are copied once."""
        static, source = self.seeds.get(seeds.shape, (None, None))
        if static is None:
            static = torch.empty_like(seeds)
        if source is not seeds:
            static.copy_(seeds)
            self.seeds[seeds.shape] = (static, seeds)
        return static

    def __call__(self, tokens: torch.Tensor, pos: int, state, sampling: Sampling | None = None,
                 seeds: torch.Tensor | None = None, step: int = 0,
                 replay: bool = True) -> torch.Tensor:
        """Logits ``[N, K, V]`` of the step at ``pos``; or, with a ``sampling.Sampling``, the
        tokens it draws (``seeds`` ``[B]``, counter ``step``) inside the same graph: one graph
        per bucket and ``sampling``. ``replay=False`` runs the same step eagerly on the same
        buffers, without capturing: the same kernels, the same numbers as a replay."""
        self.tokens.copy_(tokens)
        self.pos.fill_(pos)                      # a kernel argument, no host-device sync
        length = attention_length(pos, self.max_len)
        if not self.lengths or self.lengths[-1] != length:
            self.lengths.append(length)
        if sampling is not None and seeds is not None:
            seeds = self._static_seeds(seeds)
            self.step_no.fill_(step)

        # what the graph captures: the decode step itself, on the static buffers
        body = functools.partial(decode_step, self.decoder, self.tokens, state, sampling, seeds,
                                 self.step_no, fixed=FixedShape(self.pos, length))
        if not replay or not self.cuda:
            return body()
        key = (length, sampling)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(body)
            except RuntimeError as err:
                raise CaptureError(str(err)) from err
        graph, out = self.graphs[key]
        graph.replay()                           # reads and writes the state's own tensors
        return out.clone()                       # the next replay overwrites the static output


def graphed_step(backend, state, tokens: torch.Tensor, sampling: Sampling | None = None,
                 seeds: torch.Tensor | None = None, step: int = 0) -> torch.Tensor | None:
    """A ``NativeBackend``'s one-token step at ``state.pos`` through the state's
    :class:`GraphedStep` (made on first use): the logits, or the tokens ``sampling`` draws; then
    ``state.pos`` moves on. ``None``, with a warning, when capture failed: the backend then
    decodes eagerly (``NativeBackend._step``).

    Every one-token step runs the fixed-shape step, so a generation's arithmetic does not
    depend on what was captured before (on a GPU, the dynamic-shape step rounds bf16
    differently, so a pooled and a fresh generation would draw different tokens). Capture from
    the second one-token step on: a one-off step (a single-step probe, as in ``distributions.py``)
    is not worth a warm-up and a capture; a pooled state's graphs are replayed at once. The
    backend counts replays (``backend.replays``) and capture time (``backend.capture_s``).
    """
    replay = state.graph is not None or state.single_steps > 1
    if state.graph is None:
        def captured(seconds: float) -> None:
            backend.capture_s += seconds
        state.graph = GraphedStep(backend.decoder, state, tokens, on_capture=captured)
    try:
        out = state.graph(tokens, state.pos, state, sampling, seeds, step, replay=replay)
    except CaptureError as err:      # an op this GPU/driver cannot capture: run eagerly
        warnings.warn(f"CUDA graph capture failed, decoding without graphs: {err}", stacklevel=2)
        return None
    state.pos += 1
    backend.replays += replay
    return out
