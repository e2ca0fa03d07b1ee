"""Retention: what a finished job leaves on disk, and when it goes.

Two settings bound the disk a service uses, whatever its clients send::

    upload_retention_s   an uploaded clip, after its job ended (0: the worker deletes it at
                         the end of the run; a re-queued job keeps it, it runs again)
    result_retention_s   a finished job's audio and batch folder (0: kept forever); the job's
                         record stays, marked ``expired_at``, and its files answer 410

:func:`sweep_expired` enforces both as of a given time; the worker runs it at start-up and at
most once a minute (``worker.SWEEP_EVERY_S``). An upload that no job owns (the request died
before its job was stored) goes after ``ORPHAN_UPLOAD_S``. With the Redis store every worker
process sweeps the shared ``storage_dir``: each step tolerates another sweep's deletions, and
``expire`` marks a job once.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..settings import Settings
from .jobs import FINISHED, JobStore

__all__ = ["delete_job_files", "sweep_expired", "ORPHAN_UPLOAD_S"]

ORPHAN_UPLOAD_S = 3600.0     # an upload with no job (a crash mid-request) goes after this long
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def delete_job_files(storage: Path, job_id: str) -> None:
    """Delete what a job saved: ``audio/<id>_*`` (clips and their flac/mp3 copies) and the
    folder ``batches/<id>/``. A cache hit owns no files (it lists its origin's), so none go."""
    for path in (storage / "audio").glob(f"{job_id}_*"):
        path.unlink(missing_ok=True)
    shutil.rmtree(storage / "batches" / job_id, ignore_errors=True)


def sweep_expired(store: JobStore, storage: Path, settings: Settings, now: float) -> dict[str, int]:
    """Enforce retention once, as of ``now`` (Unix seconds; tests pass a made-up clock).

    1. uploads (``uploads/<job id><ext>``) of jobs that ended ``upload_retention_s`` ago or
       more (a re-queued job has not ended: it keeps its upload), and after an hour any other
       file there (an upload no job owns, a temporary file a crash left);
    2. files of jobs that ended ``result_retention_s`` ago or more (0: keep forever), up to
       1000 jobs a sweep; each is marked ``expired_at = now`` (so the API can answer 410),
       and so are result-cache copies of it, whose files were its files.

    Returns:
        ``{"uploads": n, "results": m}``: files and jobs removed.
    """
    removed = {"uploads": 0, "results": 0}
    for path in sorted((storage / "uploads").glob("*")):
        job_id = path.name.split(".")[0]
        job = store.get(job_id) if _JOB_ID.match(job_id) else None  # ".x.tmp": a write
        if job is None:                   # under way, or a request that died before its job
            try:
                due = path.stat().st_mtime + ORPHAN_UPLOAD_S <= now
            except FileNotFoundError:     # another worker's sweep (Redis store) took it
                continue
        else:                             # a queued or running job still needs it
            ended = job.finished_at or 0.0
            due = job.status in FINISHED and ended + settings.upload_retention_s <= now
        if due:
            path.unlink(missing_ok=True)
            removed["uploads"] += 1
    if settings.result_retention_s > 0:
        for job in store.expiring(now - settings.result_retention_s, limit=1000):
            delete_job_files(storage, job.id)
            store.expire(job.id, now)
            removed["results"] += 1
    return removed
