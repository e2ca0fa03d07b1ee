"""Jobs and the job store: the service's queue and its memory, behind one small interface.

A job is one request's life::

    queued -> running -> succeeded | failed | cancelled -> files deleted (``expired_at``)
                 |
                 +-> queued   graceful shutdown interrupted it (``requeue``), or the process
                              died in it and it has died in fewer than ``max_attempts`` runs
                              (``requeue_running`` at the next start; at the cap it ends failed)

The :class:`JobStore` protocol is everything the API and the worker need from storage, so a
Redis store can later take the place of :class:`SQLiteJobStore` without touching either:

    add / get / list                 the API: create and read jobs (owner-filtered)
    claim(max_items)                 the worker: take the oldest queued job, and queued jobs
                                     with the same ``batch_key`` (dynamic batching), atomically
    progress(ids, step, total)       the worker: one write for every job of a run
    finish / fail                    the worker: end a running job; ``finish`` ends it
                                     ``cancelled`` instead if a cancel was asked for meanwhile
    request_cancel / cancel          DELETE: a queued job ends now, a running one at its next step
    cancelled(ids)                   the worker, at each step: which jobs of its run a DELETE
                                     asked to cancel (one query for the whole run)
    requeue / requeue_running        back to the queue: a graceful stop, a restart
    expiring / expire                retention: ended jobs whose files are due, and marking them
    counts / find_cached             metrics; the result cache (never an expired job)

SQLite (one file, WAL journal, ``synchronous=FULL``) makes every status change durable
before it is acknowledged, so ``kill -9`` loses no finished or queued job. ``claim`` runs in a
``BEGIN IMMEDIATE`` transaction, so two worker threads never take the same job. One service
process owns a store (app.py locks its folder): at start-up it settles every job left
``running``, which is only right if no other process is running them.

What is stored is JSON that any client can read: the store refuses non-finite numbers (inf,
NaN) with a ``ValueError``, and :meth:`Job.public` answers JSON-safe values whatever an older
version wrote: non-finite numbers as ``null``, characters UTF-8 cannot encode (a lone
surrogate) as ``?`` (json_values.py), and bytes of the file that are not UTF-8 as U+FFFD.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .json_values import finite_json, json_safe, valid_text

__all__ = ["FINISHED", "STATUSES", "Job", "JobStore", "SQLiteJobStore", "new_job_id"]

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
    params: dict[str, Any]          # prompts, negatives, seeds, settings, uploaded files
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
    interrupted: int = 0            # of those, runs a graceful shutdown stopped and re-queued
    cancel_requested: bool = False
    error: str | None = None        # why it failed
    result: dict[str, Any] | None = None  # files, seeds, timings, sample rate, batch size, cached
    expired_at: float | None = None  # when retention deleted its files (None: still kept;
    #                                  a result then also says "expired": true)

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/jobs/{id}`` shows (no owner, no internal keys), JSON-safe."""
        out = {k: v for k, v in asdict(self).items()
               if k not in ("owner", "batch_key", "cache_key", "params")}
        out["progress"] = {"step": self.step, "total": self.total,
                           "fraction": self.step / self.total if self.total else 0.0}
        out["request"] = {k: v for k, v in self.params.items() if not k.startswith("_")}
        if isinstance(out["request"].get("rows"), list):   # a batch table: its size, not its
            out["request"]["rows"] = len(out["request"]["rows"])  # cells (listings stay small)
        return json_safe(out)


class JobStore(Protocol):
    """What the service needs from a job store (SQLite here; Redis in the scale-out issue).

    After the method ``list`` below, ``list`` in this class body names that method, so the
    type is written ``builtins.list`` there (SQLiteJobStore likewise).
    """

    def add(self, job: Job) -> Job: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(self, owner: str | None = None, limit: int = 100) -> list[Job]: ...
    def claim(self, max_items: int) -> builtins.list[Job]: ...
    def progress(self, job_ids: builtins.list[str], step: int, total: int) -> None: ...
    def finish(self, job_id: str, result: dict[str, Any]) -> str | None: ...
    def fail(self, job_id: str, error: str) -> bool: ...
    def cancel(self, job_id: str) -> bool: ...
    def request_cancel(self, job_id: str) -> str: ...
    def cancelled(self, job_ids: builtins.list[str]) -> set[str]: ...
    def requeue(self, job_id: str) -> bool: ...
    def requeue_running(self, max_attempts: int) -> dict[str, int]: ...
    def expiring(self, finished_before: float, limit: int = 100) -> builtins.list[Job]: ...
    def expire(self, job_id: str, at: float) -> builtins.list[str]: ...
    def counts(self) -> dict[str, int]: ...
    def find_cached(self, cache_key: str) -> Job | None: ...
    def close(self) -> None: ...


_COLUMNS = ("id", "owner", "kind", "model", "status", "batch_key", "cache_key", "items",
            "created_at", "started_at", "finished_at", "step", "total", "attempts",
            "interrupted", "cancel_requested", "error", "params", "result", "expired_at")
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    kind TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, batch_key TEXT NOT NULL,
    cache_key TEXT NOT NULL, items INTEGER NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, step INTEGER NOT NULL, total INTEGER NOT NULL,
    attempts INTEGER NOT NULL, cancel_requested INTEGER NOT NULL, error TEXT,
    params TEXT NOT NULL, result TEXT, interrupted INTEGER NOT NULL DEFAULT 0, expired_at REAL);"""
# columns added since the first version: a store file written before them gains them on open
_ADDED = {"interrupted": "INTEGER NOT NULL DEFAULT 0", "expired_at": "REAL"}
_INDEXES = """CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_cache ON jobs (cache_key, status);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expired_at, finished_at);"""


class SQLiteJobStore:
    """:class:`JobStore` in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.text_factory = lambda raw: raw.decode("utf-8", "replace")  # never fail a read
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            self._db.executescript(_INDEXES)

    # --- rows <-> jobs ------------------------------------------------------------------------
    @staticmethod
    def _job(row: Sequence[Any]) -> Job:
        values = dict(zip(_COLUMNS, row))
        values["params"] = json.loads(values["params"])
        values["result"] = json.loads(values["result"]) if values["result"] else None
        values["cancel_requested"] = bool(values["cancel_requested"])
        return Job(**values)

    def _select(self, where: str, args: Sequence[Any] = (), tail: str = "") -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE {where} "
                                    f"{tail}", args).fetchall()
        return [self._job(r) for r in rows]

    def _update(self, job_id: str, sets: str, args: Sequence[Any] = (), when: str = "1") -> bool:
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND ({when})",
                                   (*args, job_id))
        return cur.rowcount == 1

    # --- the interface --------------------------------------------------------------------------
    def add(self, job: Job) -> Job:
        """Store a new job; ValueError if its params or result hold inf or NaN."""
        values = asdict(job)
        values["params"] = finite_json(job.params, job.id, "params")
        values["result"] = (finite_json(job.result, job.id, "result") if job.result is not None
                            else None)
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

    def claim(self, max_items: int) -> builtins.list[Job]:
        """Take the oldest queued job and, if it has a batch key, more queued jobs with the same
        key (oldest first) while their prompts add up to at most ``max_items``.

        A job the process already died in (``attempts > interrupted``) runs alone and is never
        taken as a batch-mate: if it kills the process again, it alone reaches
        ``max_attempts``, not the requests that happened to share its batch."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status = "
                                       "'queued' ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return []
                head = self._job(row)
                jobs, items = [head], head.items
                if head.batch_key and head.attempts == head.interrupted:
                    for row in self._db.execute(
                            f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status = 'queued' AND "
                            "batch_key = ? AND id != ? AND attempts = interrupted ORDER BY seq",
                            (head.batch_key, head.id)):
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

    def progress(self, job_ids: builtins.list[str], step: int, total: int) -> None:
        """Step ``step`` of ``total`` for every running job of a run: one statement, one commit."""
        with self._lock:
            self._db.execute(f"UPDATE jobs SET step = ?, total = ? WHERE status = 'running' AND "
                             f"id IN ({', '.join('?' * len(job_ids))})", (step, total, *job_ids))

    def finish(self, job_id: str, result: dict[str, Any]) -> str | None:
        """End a running job in one statement: ``cancelled`` if a cancel was asked for (even
        after the worker's last check), else ``succeeded`` with ``result``.

        Returns:
            The status it ended in; None if it was not running. ValueError (nothing written)
            if ``result`` holds inf or NaN.
        """
        text = finite_json(result, job_id, "result")
        with self._lock:
            rows = self._db.execute(
                "UPDATE jobs SET finished_at = ?, "
                "status = CASE cancel_requested WHEN 0 THEN 'succeeded' ELSE 'cancelled' END, "
                "result = CASE cancel_requested WHEN 0 THEN ? ELSE NULL END, "
                "step = CASE cancel_requested WHEN 0 THEN total ELSE step END "
                "WHERE id = ? AND status = 'running' RETURNING status",
                (time.time(), text, job_id)).fetchall()
        return rows[0][0] if rows else None

    def fail(self, job_id: str, error: str) -> bool:
        return self._update(job_id, "status = 'failed', finished_at = ?, error = ?",
                            (time.time(), valid_text(error)), "status = 'running'")

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

    def cancelled(self, job_ids: builtins.list[str]) -> set[str]:
        """Which of ``job_ids`` a cancel was asked for: one query for every job of a run."""
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM jobs WHERE cancel_requested = 1 AND id IN "
                                    f"({', '.join('?' * len(job_ids))})", job_ids).fetchall()
        return {row[0] for row in rows}

    def requeue(self, job_id: str) -> bool:
        """Put a running job back in the queue: graceful shutdown interrupted it on purpose, so
        the run counts in ``interrupted`` and not against ``max_attempts``. One statement: a
        cancel that was asked for meanwhile wins (the job ends ``cancelled``)."""
        return self._update(job_id, "status = CASE cancel_requested WHEN 0 THEN 'queued' ELSE "
                            "'cancelled' END, finished_at = CASE cancel_requested WHEN 0 THEN "
                            "NULL ELSE ? END, step = 0, total = 0, "
                            "interrupted = interrupted + 1", (time.time(),), "status = 'running'")

    def requeue_running(self, max_attempts: int) -> dict[str, int]:
        """At start-up: settle the jobs a dead process left running. A job the process died
        in ``max_attempts`` times (runs started minus graceful interruptions) ends ``failed``:
        a request that kills the server would kill it at every restart. A job with a cancel
        request ends ``cancelled``; the rest are queued.

        Returns:
            How many went to each status: ``{"queued": 1, "failed": 0, "cancelled": 0}``.
        """
        moved = {"queued": 0, "failed": 0, "cancelled": 0}
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for job_id, died, cancel in self._db.execute(
                        "SELECT id, attempts - interrupted, cancel_requested FROM jobs "
                        "WHERE status = 'running'").fetchall():
                    if cancel:
                        self._update(job_id, "status = 'cancelled', finished_at = ?", (now,))
                        moved["cancelled"] += 1
                    elif died >= max_attempts:
                        error = (f"the service stopped {died} times while running this job "
                                 f"(setting max_attempts={max_attempts}); not retried, as the "
                                 "request itself may stop it. Submit a changed request (shorter, "
                                 "fewer prompts) or ask the operator to raise max_attempts.")
                        self._update(job_id, "status = 'failed', finished_at = ?, error = ?",
                                     (now, error))
                        moved["failed"] += 1
                    else:
                        self._update(job_id, "status = 'queued', step = 0, total = 0")
                        moved["queued"] += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return moved

    def expiring(self, finished_before: float, limit: int = 100) -> builtins.list[Job]:
        """Ended jobs that finished before ``finished_before`` and whose files are still kept,
        oldest first (what the retention sweep deletes next)."""
        return self._select("expired_at IS NULL AND finished_at < ? AND status IN "
                            "('succeeded', 'failed', 'cancelled')", (finished_before,),
                            f"ORDER BY finished_at LIMIT {int(limit)}")

    def expire(self, job_id: str, at: float) -> builtins.list[str]:
        """Record that retention deleted ``job_id``'s files at ``at`` (``expired_at``, and
        ``result["expired"]`` for whoever reads the result), and the same for every
        result-cache copy listing the same files (a cache hit shares its origin's files).

        Returns:
            The ids marked (none if the job is missing or already expired).
        """
        with self._lock:
            job = self.get(job_id)
            if job is None or job.expired_at is not None:
                return []
            jobs = [job]
            if job.cache_key and job.result is not None:
                copies = self._select("cache_key = ? AND status = 'succeeded' AND "
                                      "expired_at IS NULL AND id != ?", (job.cache_key, job.id))
                jobs += [c for c in copies
                         if c.result and c.result.get("files") == job.result.get("files")]
            rows = [(at, None if j.result is None else json.dumps(
                {**j.result, "expired": True, "expired_at": at}), j.id) for j in jobs]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("UPDATE jobs SET expired_at = ?, result = ? WHERE id = ?",
                                     rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [j.id for j in jobs]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {**dict.fromkeys(STATUSES, 0), **dict(rows)}

    def find_cached(self, cache_key: str) -> Job | None:
        """The newest succeeded job with ``cache_key`` whose files are kept (not expired)."""
        found = self._select("cache_key = ? AND status = 'succeeded' AND expired_at IS NULL",
                             (cache_key,), "ORDER BY seq DESC LIMIT 1")
        return found[0] if found else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
