"""The Ray executor of BatchRunner: one model per actor, batches to whichever actor is free.

Follows Ray's actor-pool pattern (``ray.util.ActorPool``)::

    driver: groups of items -> chunks of max_batch_size
              |  pool.map_unordered(actor.run, chunks)
    actor 0 (GPU 0): MusicGenerator loaded once -> generate chunk -> (chunk, wav, sr, timings)
    actor 1 (GPU 1): ...
              v
    driver: writes every file and manifest line itself (actors never touch the folder)

One actor per GPU, or ``num_workers`` CPU actors; more actors than devices share them
fractionally, so none waits forever. The driver hands over what to load (a :class:`WorkerSpec`)
and the groups of items; each actor runs ``group.generate_group``, as the local executor
does, so this file knows nothing of the runner. Needs ``pip install 'musicgen-edu[ray]'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .group import generate_group

if TYPE_CHECKING:
    from .table import BatchItem

__all__ = ["WorkerSpec", "RayWorker", "run_on_ray"]


@dataclass(frozen=True)
class WorkerSpec:
    """What every actor loads: the driver's model, dtype and backend."""

    model: str          # a model name for load_model ("debug", "facebook/musicgen-small", ...)
    device: str         # where it runs on a cluster without GPUs ("auto" is used with GPUs)
    dtype: object       # "auto", "float32", ... or a torch.dtype
    backend: str        # a backend's registry name: "native", "native-int8", "transformers"


class RayWorker:
    """A Ray actor body: loads the model once, then generates batches sent by the driver."""

    def __init__(self, spec: WorkerSpec):
        from ..generator import MusicGenerator

        self.generator = MusicGenerator(spec.model, device=spec.device, dtype=spec.dtype,
                                        backend=spec.backend, progress=False)

    def run(self, items: list[BatchItem], batch_size: int) -> list[tuple]:
        """Generate ``items`` (one settings group) ``batch_size`` at a time; wavs as numpy."""
        return [(chunk, None if wav is None else wav.numpy(), sr, timings, error)
                for chunk, wav, sr, timings, error in generate_group(self.generator, items,
                                                                     batch_size)]


def run_on_ray(groups: list[list[BatchItem]], spec: WorkerSpec, max_batch_size: int,
               num_workers: int | None = None) -> Iterator[tuple]:
    """Yield ``(chunk, wav, sample_rate, timings, error)`` per chunk, as actors finish them.

    Args:
        groups: the items to generate, one list per settings group.
        spec: what each actor loads (the runner's model, dtype and backend).
        max_batch_size: the most items per chunk sent to an actor (halved there on OOM).
        num_workers: how many actors (default: one per GPU, or 1 without GPUs).
    """
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ConfigError("executor='ray' needs Ray: pip install 'musicgen-edu[ray]' (or "
                          "pip install ray), or use executor='local'.") from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1)
    workers = num_workers or gpus or 1
    # one GPU (or CPU) per actor; more actors than devices share them, so none waits forever
    options = ({"num_gpus": min(1.0, gpus / workers)} if gpus
               else {"num_cpus": min(1.0, cpus / workers)})
    if gpus:
        spec = dataclasses.replace(spec, device="auto")
    worker = ray.remote(**options)(RayWorker)
    actors = [worker.remote(spec) for _ in range(workers)]
    chunks = [items[i:i + max_batch_size] for items in groups
              for i in range(0, len(items), max_batch_size)]
    try:
        pool = ActorPool(actors)
        for results in pool.map_unordered(
                lambda actor, chunk: actor.run.remote(chunk, max_batch_size), chunks):
            yield from results
    finally:
        for actor in actors:
            ray.kill(actor)
