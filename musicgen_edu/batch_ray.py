"""The Ray executor of BatchRunner: one model per actor, batches to whichever actor is free.

Follows Ray's actor-pool pattern (``ray.util.ActorPool``)::

    driver: groups of items -> chunks of max_batch_size
              |  pool.map_unordered(actor.run, chunks)
    actor 0 (GPU 0): MusicGenerator loaded once -> generate chunk -> (chunk, wav, sr, timings)
    actor 1 (GPU 1): ...
              v
    driver: writes every file and manifest line itself (actors never touch the folder)

One actor per GPU, or ``num_workers`` CPU actors; more actors than devices share them
fractionally, so none waits forever. Needs ``pip install 'musicgen-edu[ray]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from .errors import ConfigError

if TYPE_CHECKING:
    from .batch import BatchRunner
    from .batch_table import BatchItem

__all__ = ["RayWorker", "run_on_ray"]


class RayWorker:
    """A Ray actor body: loads the model once, then generates batches sent by the driver."""

    def __init__(self, model: str, device: str, dtype, backend: str):
        from .generator import MusicGenerator

        self.generator = MusicGenerator(model, device=device, dtype=dtype, backend=backend,
                                        progress=False)

    def run(self, items: list[BatchItem], batch_size: int) -> list[tuple]:
        """Generate ``items`` (one settings group) ``batch_size`` at a time; wavs as numpy."""
        from .batch import generate_group

        return [(chunk, None if wav is None else wav.numpy(), sr, timings, error)
                for chunk, wav, sr, timings, error in generate_group(self.generator, items,
                                                                     batch_size)]


def _backend_name(runner: BatchRunner) -> str:
    """The registry name of the runner's backend, so actors rebuild the same one."""
    from .backends import BACKENDS

    backend = getattr(runner._generator, "backend", None)
    return next((name for name, cls in BACKENDS.items()
                 if isinstance(cls, type) and type(backend) is cls), runner.backend)


def run_on_ray(runner: BatchRunner, groups: list[list[BatchItem]]) -> Iterator[tuple]:
    """Yield ``(chunk, wav, sample_rate, timings, error)`` per chunk, as actors finish them."""
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
    workers = runner.num_workers or gpus or 1
    # one GPU (or CPU) per actor; more actors than devices share them, so none waits forever
    options = ({"num_gpus": min(1.0, gpus / workers)} if gpus
               else {"num_cpus": min(1.0, cpus / workers)})
    if runner._generator is not None:  # rebuild the caller's generator in each actor
        model = runner._generator.model
        spec = (model.name, "auto" if gpus else "cpu", model.dtype, _backend_name(runner))
    else:
        spec = (runner.model_name, "auto" if gpus else runner.device, runner.dtype,
                runner.backend)
    worker = ray.remote(**options)(RayWorker)
    actors = [worker.remote(*spec) for _ in range(workers)]
    size = runner.max_batch_size
    chunks = [items[i:i + size] for items in groups for i in range(0, len(items), size)]
    try:
        pool = ActorPool(actors)
        for results in pool.map_unordered(lambda actor, chunk: actor.run.remote(chunk, size),
                                          chunks):
            yield from results
    finally:
        for actor in actors:
            ray.kill(actor)
