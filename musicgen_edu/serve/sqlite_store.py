"""The SQLite job store: the :class:`~musicgen_edu.serve.jobs.JobStore` contract in one file.

The embedded default (setting ``store = "sqlite"``): nothing to run beside the service. One
file, WAL journal, ``synchronous=FULL``: every status change is durable before it is
acknowledged, so ``kill -9`` loses no finished or queued job. ``claim`` runs in a
``BEGIN IMMEDIATE`` transaction, so two worker threads never take the same job. One service
process owns a store (app.py locks its folder), so at start-up every job left ``running`` is
one its dead predecessor ran: ``requeue_running`` settles all of them, whatever their lease
(leases still fence the worker threads' writes). Several processes share a Redis store
instead (redis_store.py).

Bytes of the file that are not UTF-8 are read as U+FFFD: a damaged row never fails a read.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .jobs import STATUSES, Job, died_error, new_lease
from .json_values import finite_json, valid_text

__all__ = ["SQLiteJobStore"]

_COLUMNS = ("id", "owner", "kind", "model", "status", "batch_key", "cache_key", "items",
            "created_at", "started_at", "finished_at", "step", "total", "attempts",
            "interrupted", "cancel_requested", "error", "params", "result", "expired_at", "lease")
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    kind TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, batch_key TEXT NOT NULL,
    cache_key TEXT NOT NULL, items INTEGER NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, step INTEGER NOT NULL, total INTEGER NOT NULL,
    attempts INTEGER NOT NULL, cancel_requested INTEGER NOT NULL, error TEXT,
    params TEXT NOT NULL, result TEXT, interrupted INTEGER NOT NULL DEFAULT 0, expired_at REAL,
    lease TEXT NOT NULL DEFAULT '');"""
# columns added since the first version: a store file written before them gains them on open
_ADDED = {"interrupted": "INTEGER NOT NULL DEFAULT 0", "expired_at": "REAL",
          "lease": "TEXT NOT NULL DEFAULT ''"}
_INDEXES = """CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_cache ON jobs (cache_key, status);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expired_at, finished_at);"""


class SQLiteJobStore:
    """:class:`JobStore` in one SQLite file; safe to share between threads of one process."""

    shared = False                         # one process: its start-up settles dead runs

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.text_factory = lambda raw: raw.decode("utf-8", "replace")  # never fail a read
        self._lock = threading.RLock()
        self._queued = threading.Event()   # set: a job was queued since the last wait_for_jobs
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

    def _update(self, job_id: str, sets: str, args: Sequence[Any] = (), when: str = "1",
                lease: str | None = None) -> bool:
        """One UPDATE of ``job_id`` where ``when`` holds (and, given a lease, it is the job's)."""
        fence, fence_args = ("AND lease = ?", (lease,)) if lease is not None else ("", ())
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND ({when}) {fence}",
                                   (*args, job_id, *fence_args))
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
        if job.status == "queued":
            self._queued.set()
        return job

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block until a job was queued since the last call (True) or ``timeout`` s passed."""
        woke = self._queued.wait(timeout)
        self._queued.clear()
        return woke

    def get(self, job_id: str) -> Job | None:
        found = self._select("id = ?", (job_id,))
        return found[0] if found else None

    def list(self, owner: str | None = None, limit: int = 100) -> list[Job]:
        if owner is None:
            return self._select("1", (), f"ORDER BY seq DESC LIMIT {int(limit)}")
        return self._select("owner = ?", (owner,), f"ORDER BY seq DESC LIMIT {int(limit)}")

    def claim(self, max_items: int) -> builtins.list[Job]:
        """Take the oldest queued job and, if it has a batch key, more queued jobs with the same
        key (oldest first) while their prompts add up to at most ``max_items``, all under one
        new lease (``job.lease``).

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
                now, lease = time.time(), new_lease()
                for job in jobs:
                    self._db.execute("UPDATE jobs SET status = 'running', started_at = ?, "
                                     "attempts = attempts + 1, lease = ? WHERE id = ?",
                                     (now, lease, job.id))
                    job.status, job.started_at, job.attempts = "running", now, job.attempts + 1
                    job.lease = lease
                self._db.execute("COMMIT")
                return jobs
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def renew(self, job_ids: builtins.list[str], lease: str) -> set[str]:
        """Which of ``job_ids`` still run under ``lease`` (one process: leases never run out)."""
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM jobs WHERE status = 'running' AND lease = ? "
                                    f"AND id IN ({', '.join('?' * len(job_ids))})",
                                    (lease, *job_ids)).fetchall()
        return {row[0] for row in rows}

    def progress(self, job_ids: builtins.list[str], step: int, total: int,
                 lease: str | None = None) -> None:
        """Step ``step`` of ``total`` for every running job of a run: one statement, one commit."""
        fence = "" if lease is None else "AND lease = ? "
        with self._lock:
            self._db.execute(f"UPDATE jobs SET step = ?, total = ? WHERE status = 'running' "
                             f"{fence}AND id IN ({', '.join('?' * len(job_ids))})",
                             (step, total, *([] if lease is None else [lease]), *job_ids))

    def finish(self, job_id: str, result: dict[str, Any],
               lease: str | None = None) -> str | None:
        """End a running job in one statement: ``cancelled`` if a cancel was asked for (even
        after the worker's last check), else ``succeeded`` with ``result``.

        Returns:
            The status it ended in; None if it was not running (under ``lease``, if given).
            ValueError (nothing written) if ``result`` holds inf or NaN.
        """
        text = finite_json(result, job_id, "result")
        fence, fence_args = ("AND lease = ? ", (lease,)) if lease is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "UPDATE jobs SET finished_at = ?, "
                "status = CASE cancel_requested WHEN 0 THEN 'succeeded' ELSE 'cancelled' END, "
                "result = CASE cancel_requested WHEN 0 THEN ? ELSE NULL END, "
                "step = CASE cancel_requested WHEN 0 THEN total ELSE step END "
                f"WHERE id = ? AND status = 'running' {fence}RETURNING status",
                (time.time(), text, job_id, *fence_args)).fetchall()
        return rows[0][0] if rows else None

    def fail(self, job_id: str, error: str, lease: str | None = None) -> bool:
        return self._update(job_id, "status = 'failed', finished_at = ?, error = ?",
                            (time.time(), valid_text(error)), "status = 'running'", lease)

    def cancel(self, job_id: str, lease: str | None = None) -> bool:
        """End a queued or running job as cancelled (the worker calls it once a run stopped)."""
        return self._update(job_id, "status = 'cancelled', finished_at = ?", (time.time(),),
                            "status IN ('queued', 'running')", lease)

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

    def requeue(self, job_id: str, lease: str | None = None) -> bool:
        """Put a running job back in the queue: graceful shutdown interrupted it on purpose, so
        the run counts in ``interrupted`` and not against ``max_attempts``. One statement: a
        cancel that was asked for meanwhile wins (the job ends ``cancelled``)."""
        moved = self._update(job_id, "status = CASE cancel_requested WHEN 0 THEN 'queued' ELSE "
                            "'cancelled' END, finished_at = CASE cancel_requested WHEN 0 THEN "
                            "NULL ELSE ? END, step = 0, total = 0, "
                            "interrupted = interrupted + 1", (time.time(),), "status = 'running'",
                            lease)
        if moved:
            self._queued.set()
        return moved

    def requeue_running(self, max_attempts: int) -> dict[str, int]:
        """At start-up: settle the jobs a dead process left running (all running jobs: this
        process owns the file). A job the process died
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
                        self._update(job_id, "status = 'failed', finished_at = ?, error = ?",
                                     (now, died_error(died, max_attempts)))
                        moved["failed"] += 1
                    else:
                        self._update(job_id, "status = 'queued', step = 0, total = 0")
                        moved["queued"] += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if moved["queued"]:
            self._queued.set()
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

