"""Replay the decode step as one CUDA graph instead of ~600 kernel launches from Python.

On a GPU, one MusicGen decode step is hundreds of small kernels; launched one by one from
Python, the launches can cost more than the arithmetic (as gpt-fast found for small batches;
not yet measured in this project, which has had no GPU so far). A CUDA graph records the kernels of one call *with their memory
addresses*; replaying it is a single launch. The price: everything the step reads or writes
must stay at fixed addresses with fixed shapes. So the token column and the position are
copied into static tensors, the KV cache and the text keys/values are the generation's own
preallocated tensors, attention covers the whole cache under a mask
(:meth:`NativeDecoder.step_static`), and the logits land in a static output tensor.

This is the manual form of ``torch.compile(mode="reduce-overhead")`` used by
pytorch-labs/gpt-fast (``generate.py``), following PyTorch's "CUDA Graphs" notes
(``torch.cuda.graph``: warm up on a side stream, capture, replay).
"""

from __future__ import annotations

import torch

__all__ = ["GraphedStep"]


class GraphedStep:
    """One captured one-token decode step, bound to one generation's state.

    Call it with a token column ``[N, K, 1]``, the position (int) to write and the state; it
    returns the logits ``[N, K, V]``. On a CPU (no graphs) the same static buffers are used and
    the step runs eagerly, which is how the tests check the plumbing without a GPU. It keeps
    no reference to the state (the state holds it), so a finished generation's KV cache is
    freed as soon as the generation is dropped.
    """

    def __init__(self, decoder, state, tokens: torch.Tensor):
        self.decoder = decoder
        self.tokens = tokens.clone()                                        # static input [N, K, 1]
        self.pos = torch.full((1,), state.pos, dtype=torch.long, device=tokens.device)
        self.graph = None
        if tokens.device.type != "cuda":
            return
        with torch.cuda.device(tokens.device):   # streams and capture on the model's GPU
            # Warm up on a side stream (allocator pools, cuBLAS workspaces), then capture. The
            # warm-up writes this position's keys/values, which the real step rewrites.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    decoder.step_static(self.tokens, self.pos, state)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = decoder.step_static(self.tokens, self.pos, state)  # static output

    def __call__(self, tokens: torch.Tensor, pos: int, state) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.pos.fill_(pos)                      # a kernel argument, no host-device sync
        if self.graph is None:
            self.logits = self.decoder.step_static(self.tokens, self.pos, state)
        else:
            self.graph.replay()                  # reads and writes the state's own tensors
        return self.logits.clone()              # the next replay overwrites the static output
