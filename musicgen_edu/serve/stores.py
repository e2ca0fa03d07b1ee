"""The setting ``store`` -> a :class:`~musicgen_edu.serve.jobs.JobStore` (jobs.py says which).

``sqlite``: ``storage_dir/jobs.sqlite3`` (sqlite_store.py); ``redis``: the server at
``redis_url``, keys under ``redis_prefix``, leases of ``lease_s`` (redis_store.py).
"""

from __future__ import annotations

from ..settings import Settings
from .jobs import JobStore

__all__ = ["open_store"]


def open_store(settings: Settings) -> JobStore:
    """The job store the settings choose."""
    if settings.store == "redis":
        from .redis_store import RedisJobStore

        return RedisJobStore(settings.redis_url, prefix=settings.redis_prefix,
                             lease_s=settings.lease_s)
    from .sqlite_store import SQLiteJobStore

    return SQLiteJobStore(settings.storage_dir / "jobs.sqlite3")
