"""Waiting for a device: the one helper every wall-clock timing in the package needs.

CUDA and Apple MPS run kernels asynchronously: a call returns when the work is queued, not
done, so a timer read right after it measures the queueing. :func:`synchronize` waits for the
queued work first (``torch.cuda.synchronize``, ``torch.mps.synchronize``); on a CPU the work is
already done. Used by the generator's own timings (``Generation.timings``) and by
``metrics.profiling`` / ``metrics.breakdown``.
"""

from __future__ import annotations

import torch

__all__ = ["synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA or MPS) so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
