"""Batches: a table of generations -> a folder of clips + a manifest; resumable, local or Ray.

One concept in five files, each importing only the ones below it (lecture 06)::

    runner.py     BatchRunner, run_batch: check rows, group them, generate, commit; resume;
      |           the local executor
      +--> ray.py        the Ray executor: one model per actor, an ActorPool (the ray extra)
      |      |
      +------+--> group.py     generate_group: one settings group -> clips, halved on OOM
      |
      +--> manifest.py   the append-only, fsynced JSON-lines manifest and its reader
      |      |
      +------+--> table.py     rows from grids, CSV/JSONL, DataFrames; settings vs typos vs metadata

This file states the package's public API, the names the flat API re-exports
(``mg.BatchRunner``, ``mg.run_batch``, ``mg.grid``, ``mg.load_rows``, ``mg.read_manifest``)
and the manifest's file name. The batch modules log to ``musicgen_edu.batch.*``: configure
the ``musicgen_edu.batch`` logger to see or silence all of them.
"""

from .manifest import MANIFEST_NAME, read_manifest
from .runner import BatchRunner, run_batch
from .table import grid, load_rows

__all__ = ["BatchRunner", "run_batch", "grid", "load_rows", "read_manifest", "MANIFEST_NAME"]
