"""Jobs and the job store: the service's queue and its memory, behind one small interface.

A job is one request's life: ``queued -> running -> succeeded | failed | cancelled`` (a
running job whose process died goes back to ``queued`` when the service restarts). The
:class:`JobStore` protocol is everything the API and the worker need from storage, so a
Redis store can later take the place of :class:`SQLiteJobStore` without touching either:

    add / get / list                 the API: create and read jobs (owner-filtered)
    claim(max_items)                 the worker: take the oldest queued job, and queued jobs
                                     with the same ``batch_key`` (dynamic batching), atomically
    progress / finish / fail         the worker: report
    request_cancel / cancel          DELETE: a queued job ends now, a running one at its next step
    requeue_running / counts / find_cached

SQLite (one file, WAL journal, ``synchronous=FULL``) makes every status change durable
before it is acknowledged, so ``kill -9`` loses no finished or queued job. ``claim`` runs in a
``BEGIN IMMEDIATE`` transaction, so two worker threads never take the same job. One service
process owns a store (app.py locks its folder): at start-up it re-queues every job left
``running``, which is only right if no other process is running them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Job", "JobStore", "SQLiteJobStore", "STATUSES", "FINISHED", "new_job_id"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


def new_job_id() -> str:
    """32 hex characters: unguessable, and safe in paths and URLs."""
    return uuid.uuid4().hex


@dataclass
class Job:
    """One request's work and state. ``params`` and ``result`` are plain JSON values."""

    owner: str                      # who may see it (the API key's owner; admins see all)
    kind: str                       # generate | continue | melody | stream | batch
    model: str                      # model name, as configured
    params: dict                    # prompts, negatives, seeds, settings, uploaded files
    id: str = field(default_factory=new_job_id)
    status: str = "queued"          # one of STATUSES
    batch_key: str = ""             # equal non-empty keys may be decoded as one batch
    cache_key: str = ""             # equal non-empty keys give identical results
    items: int = 1                  # prompts (rows of the batch it adds to)
    created_at: float = field(default_factory=time.time)  # Unix seconds
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0                   # decoder steps done ...
    total: int = 0                  # ... of this many (0 = not started)
    attempts: int = 0               # times a worker started it (> 1 after a restart)
    cancel_requested: bool = False
    error: str | None = None        # why it failed
    result: dict | None = None      # files, seeds, timings, sample rate, batch size, cached

    def public(self) -> dict:
        """What ``GET /v1/jobs/{id}`` shows (no owner, no internal keys)."""
        out = {k: v for k, v in asdict(self).items()
               if k not in ("owner", "batch_key", "cache_key", "params")}
        out["progress"] = {"step": self.step, "total": self.total,
                           "fraction": self.step / self.total if self.total else 0.0}
        out["request"] = {k: v for k, v in self.params.items() if not k.startswith("_")}
        return out


class JobStore(Protocol):
    """What the service needs from a job store (SQLite here; Redis in the scale-out issue)."""

    def add(self, job: Job) -> Job: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(self, owner: str | None = None, limit: int = 100) -> list[Job]: ...
    def claim(self, max_items: int) -> list[Job]: ...
    def progress(self, job_id: str, step: int, total: int) -> None: ...
    def finish(self, job_id: str, result: dict) -> bool: ...
    def fail(self, job_id: str, error: str) -> bool: ...
    def cancel(self, job_id: str) -> bool: ...
    def request_cancel(self, job_id: str) -> str: ...
    def cancel_requested(self, job_id: str) -> bool: ...
    def requeue(self, job_id: str) -> bool: ...
    def requeue_running(self) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def find_cached(self, cache_key: str) -> Job | None: ...
    def close(self) -> None: ...


_COLUMNS = ("id", "owner", "kind", "model", "status", "batch_key", "cache_key", "items",
            "created_at", "started_at", "finished_at", "step", "total", "attempts",
            "cancel_requested", "error", "params", "result")
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    kind TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, batch_key TEXT NOT NULL,
    cache_key TEXT NOT NULL, items INTEGER NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, step INTEGER NOT NULL, total INTEGER NOT NULL,
    attempts INTEGER NOT NULL, cancel_requested INTEGER NOT NULL, error TEXT,
    params TEXT NOT NULL, result TEXT);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_cache ON jobs (cache_key, status);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);"""


class SQLiteJobStore:
    """:class:`JobStore` in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
            self._db.executescript(_SCHEMA)

    # --- rows <-> jobs ------------------------------------------------------------------------
    @staticmethod
    def _job(row) -> Job | None:
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row))
        values["params"] = json.loads(values["params"])
        values["result"] = json.loads(values["result"]) if values["result"] else None
        values["cancel_requested"] = bool(values["cancel_requested"])
        return Job(**values)

    def _select(self, where: str, args=(), tail: str = "") -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE {where} "
                                    f"{tail}", args).fetchall()
        return [self._job(r) for r in rows]

    def _update(self, job_id: str, sets: str, args=(), when: str = "1") -> bool:
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND ({when})",
                                   (*args, job_id))
        return cur.rowcount == 1

    # --- the interface --------------------------------------------------------------------------
    def add(self, job: Job) -> Job:
        values = asdict(job)
        values["params"] = json.dumps(job.params)
        values["result"] = json.dumps(job.result) if job.result is not None else None
        values["cancel_requested"] = int(job.cancel_requested)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(_COLUMNS))})",
                             [values[c] for c in _COLUMNS])
        return job

    def get(self, job_id: str) -> Job | None:
        found = self._select("id = ?", (job_id,))
        return found[0] if found else None

    def list(self, owner: str | None = None, limit: int = 100) -> list[Job]:
        if owner is None:
            return self._select("1", (), f"ORDER BY seq DESC LIMIT {int(limit)}")
        return self._select("owner = ?", (owner,), f"ORDER BY seq DESC LIMIT {int(limit)}")

    def claim(self, max_items: int) -> list[Job]:
        """Take the oldest queued job and, if it has a batch key, more queued jobs with the same
        key (oldest first) while their prompts add up to at most ``max_items``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                head = self._job(self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status = 'queued' "
                    "ORDER BY seq LIMIT 1").fetchone())
                if head is None:
                    self._db.execute("COMMIT")
                    return []
                jobs, items = [head], head.items
                if head.batch_key:
                    for row in self._db.execute(
                            f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status = 'queued' AND "
                            "batch_key = ? AND id != ? ORDER BY seq", (head.batch_key, head.id)):
                        job = self._job(row)
                        if items + job.items <= max_items:
                            jobs.append(job)
                            items += job.items
                now = time.time()
                for job in jobs:
                    self._db.execute("UPDATE jobs SET status = 'running', started_at = ?, "
                                     "attempts = attempts + 1 WHERE id = ?", (now, job.id))
                    job.status, job.started_at, job.attempts = "running", now, job.attempts + 1
                self._db.execute("COMMIT")
                return jobs
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def progress(self, job_id: str, step: int, total: int) -> None:
        self._update(job_id, "step = ?, total = ?", (step, total), "status = 'running'")

    def finish(self, job_id: str, result: dict) -> bool:
        return self._update(job_id, "status = 'succeeded', finished_at = ?, result = ?, step = total",
                            (time.time(), json.dumps(result)), "status = 'running'")

    def fail(self, job_id: str, error: str) -> bool:
        return self._update(job_id, "status = 'failed', finished_at = ?, error = ?",
                            (time.time(), error), "status = 'running'")

    def cancel(self, job_id: str) -> bool:
        """End a queued or running job as cancelled (the worker calls it once a run stopped)."""
        return self._update(job_id, "status = 'cancelled', finished_at = ?", (time.time(),),
                            "status IN ('queued', 'running')")

    def request_cancel(self, job_id: str) -> str:
        """Cancel a queued job now, or flag a running one; return the status it is left in."""
        with self._lock:
            if self._update(job_id, "status = 'cancelled', finished_at = ?", (time.time(),),
                            "status = 'queued'"):
                return "cancelled"
            if self._update(job_id, "cancel_requested = 1", (), "status = 'running'"):
                return "cancelling"          # the worker ends it at its next step
            job = self.get(job_id)
            return job.status if job else "missing"

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()
        return bool(row and row[0])

    def requeue(self, job_id: str) -> bool:
        """Put a running job back in the queue (graceful shutdown interrupted it)."""
        return self._update(job_id, "status = 'queued', step = 0, total = 0", (),
                            "status = 'running'")

    def requeue_running(self) -> int:
        """At start-up: jobs left running by a dead process go back to the queue."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status = 'queued', step = 0, total = 0 "
                                   "WHERE status = 'running' AND cancel_requested = 0")
            self._db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? "
                             "WHERE status = 'running'", (time.time(),))
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {**dict.fromkeys(STATUSES, 0), **dict(rows)}

    def find_cached(self, cache_key: str) -> Job | None:
        found = self._select("cache_key = ? AND status = 'succeeded'", (cache_key,),
                             "ORDER BY seq DESC LIMIT 1")
        return found[0] if found else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
