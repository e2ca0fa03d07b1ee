"""One settings group of a batch: generated in the largest batch that fits, halved on OOM.

:class:`~musicgen_edu.batch.runner.BatchRunner` groups the items that share every setting but the
seed; each group goes through :func:`generate_group`, in this process (``executor="local"``)
or inside a Ray actor (``ray.py``). Both import it from here::

    items of one group -> chunks of batch_size -> generator.generate(prompts, seeds=...)
                                                   | out of memory: halve batch_size, retry
                                                   v
                          (chunk, wav [B, C, T], sample_rate, timings, None)  per chunk
                          (chunk, None, 0, {}, reason)                        if it failed
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .table import BatchItem

__all__ = ["generate_group"]

log = logging.getLogger(__name__)


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError)
                                    and "out of memory" in str(exc).lower())


def generate_group(generator, items: list[BatchItem], batch_size: int,
                   callback: Callable[[int, int], None] | None = None) -> Iterator[tuple]:
    """Generate items that share settings, ``batch_size`` at a time, halving it on OOM.

    Args:
        generator: a :class:`~musicgen_edu.generator.MusicGenerator` (anything with its
            ``generate``).
        items: one group: every setting equal except the seed.
        batch_size: the most items per generate call to try first.
        callback: passed to ``generate`` as ``callback(step, total)``.

    Yields:
        ``(chunk, wav [B, C, T] or None, sample_rate, timings, error)`` per generate call; a
        chunk that fails (OOM even alone, or any other error) comes back with its reason.
    """
    start = 0
    while start < len(items):
        chunk = items[start:start + batch_size]
        settings = {k: v for k, v in dataclasses.asdict(chunk[0].config).items() if k != "seed"}
        try:
            out = generator.generate([it.prompt for it in chunk], seeds=[it.seed for it in chunk],
                                     progress=False, callback=callback, **settings)
        except Exception as exc:
            if _is_oom(exc) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            if _is_oom(exc) and len(chunk) > 1:
                batch_size = len(chunk) // 2          # back off and retry the same items
                log.warning("out of memory at batch size %d; retrying with %d.", len(chunk),
                            batch_size)
                continue
            reason = f"{type(exc).__name__}: {exc}"
            if _is_oom(exc):
                reason = (f"out of memory even at batch size 1 ({exc}); try a shorter duration, "
                          "a smaller model or another device.")
            yield chunk, None, 0, {}, reason
        else:
            timings = dict(out.timings, batch_size=len(chunk))
            yield chunk, out.wav, out.sample_rate, timings, None
        start += len(chunk)
