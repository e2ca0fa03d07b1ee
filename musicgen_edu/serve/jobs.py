"""Jobs and the job store: the service's queue and its memory, behind one small contract.

A job is one request's life::

    queued -> running -> succeeded | failed | cancelled -> files deleted (``expired_at``)
                 |
                 +-> queued   graceful shutdown interrupted it (``requeue``), or its worker
                              died in it and it has died in fewer than ``max_attempts`` runs
                              (``requeue_running``; at the cap it ends failed)

The :class:`JobStore` protocol is everything the API and the worker need from storage; two
stores keep it, chosen by the setting ``store`` (stores.py, ``open_store``):

    sqlite_store.py   one SQLite file: one process owns it (app.py locks its folder); the
                      embedded default, nothing to run beside the service
    redis_store.py    one Redis server shared by any number of API and worker processes

The contract, by who calls it::

    add / get / list                 the API: create and read jobs (owner-filtered)
    wait_for_jobs(timeout)           the worker: block until a job may have been queued
    claim(max_items)                 the worker: take the oldest queued job, and queued jobs
                                     with the same ``batch_key`` (dynamic batching), atomically,
                                     under a new **lease** (``job.lease``, a random token)
    renew(ids, lease)                the worker, every ``lease_s / 3``: keep its claim; answers
                                     the ids it still holds (a lease that ran out may be gone)
    progress(ids, step, total)       the worker: one write for every job of a run
    finish / fail                    the worker: end a running job; ``finish`` ends it
                                     ``cancelled`` instead if a cancel was asked for meanwhile
    request_cancel / cancel          DELETE: a queued job ends now, a running one at its next step
    cancelled(ids)                   the worker, at each step: which jobs of its run a DELETE
                                     asked to cancel (one query for the whole run)
    requeue / requeue_running        back to the queue: a graceful stop; jobs whose worker died
    expiring / expire                retention: ended jobs whose files are due, and marking them
    counts / find_cached             metrics; the result cache (never an expired job)

**Leases fence the worker's writes.** Every write a worker makes to a job it runs
(``progress``, ``finish``, ``fail``, ``cancel``, ``requeue``) passes ``lease=job.lease`` and
changes nothing unless the job is still running under that lease. A worker that stalled past
its lease (or was cut off from the store) and comes back late finds the job re-run by another
and its own result refused: a job ends exactly once. ``lease=None`` (the API, tests) writes
whatever the lease.

Whatever a store holds is JSON that any client can read: stores refuse non-finite numbers
(inf, NaN) with a ``ValueError``, and :meth:`Job.public` answers JSON-safe values whatever an
older version wrote: non-finite numbers as ``null``, characters UTF-8 cannot encode (a lone
surrogate) as ``?`` (json_values.py).
"""

from __future__ import annotations

import builtins
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .json_values import json_safe

__all__ = ["FINISHED", "STATUSES", "Job", "JobStore", "new_job_id", "new_lease", "died_error"]

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
    lease: str = ""                 # the token of the run holding it ("" = none; jobs.py)

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/jobs/{id}`` shows (no owner, no internal keys), JSON-safe."""
        out = {k: v for k, v in asdict(self).items()
               if k not in ("owner", "batch_key", "cache_key", "params", "lease")}
        out["progress"] = {"step": self.step, "total": self.total,
                           "fraction": self.step / self.total if self.total else 0.0}
        out["request"] = {k: v for k, v in self.params.items() if not k.startswith("_")}
        if isinstance(out["request"].get("rows"), list):   # a batch table: its size, not its
            out["request"]["rows"] = len(out["request"]["rows"])  # cells (listings stay small)
        return json_safe(out)


class JobStore(Protocol):
    """What the service needs from a job store (see the module docstring for who calls what).

    After the method ``list`` below, ``list`` in this class body names that method, so the
    type is written ``builtins.list`` there (the stores likewise).
    """

    # True: other processes use this store too, so a worker's heartbeat re-queues the jobs
    # of workers that died (requeue_running by lease deadline: Redis). False: one process
    # owns it and settles its dead predecessor's jobs once, at start-up (SQLite).
    shared: bool

    def add(self, job: Job) -> Job: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(self, owner: str | None = None, limit: int = 100) -> list[Job]: ...
    def wait_for_jobs(self, timeout: float) -> bool: ...
    def claim(self, max_items: int) -> builtins.list[Job]: ...
    def renew(self, job_ids: builtins.list[str], lease: str) -> set[str]: ...
    def progress(self, job_ids: builtins.list[str], step: int, total: int,
                 lease: str | None = None) -> None: ...
    def finish(self, job_id: str, result: dict[str, Any],
               lease: str | None = None) -> str | None: ...
    def fail(self, job_id: str, error: str, lease: str | None = None) -> bool: ...
    def cancel(self, job_id: str, lease: str | None = None) -> bool: ...
    def request_cancel(self, job_id: str) -> str: ...
    def cancelled(self, job_ids: builtins.list[str]) -> set[str]: ...
    def requeue(self, job_id: str, lease: str | None = None) -> bool: ...
    def requeue_running(self, max_attempts: int) -> dict[str, int]: ...
    def expiring(self, finished_before: float, limit: int = 100) -> builtins.list[Job]: ...
    def expire(self, job_id: str, at: float) -> builtins.list[str]: ...
    def counts(self) -> dict[str, int]: ...
    def find_cached(self, cache_key: str) -> Job | None: ...
    def close(self) -> None: ...


def new_lease() -> str:
    """A claim's token: unguessable, so no other run can write under it."""
    return uuid.uuid4().hex


def died_error(died: int, max_attempts: int) -> str:
    """Why a job a worker died in ``died`` times ends failed (both stores say it alike)."""
    return (f"the service stopped {died} times while running this job (setting "
            f"max_attempts={max_attempts}); not retried, as the request itself may stop it. "
            "Submit a changed request (shorter, fewer prompts) or ask the operator to raise "
            "max_attempts.")
