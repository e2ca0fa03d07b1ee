"""The job store contract (serve/jobs.py), on both stores: SQLite and a real redis-server.

Restarts, leases, cancel races, what may be stored, retention. Every test runs on a fresh
SQLite file and on a fresh key prefix of one redis-server (tests/redis_server.py); no model, no
service. The worker and the service around the store are tested in test_serve_worker.py and
test_serve.py; several processes on one Redis in test_serve_scale.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest
from redis_server import RedisServer

from musicgen_edu.serve.jobs import Job
from musicgen_edu.serve.redis_store import RedisJobStore
from musicgen_edu.serve.sqlite_store import SQLiteJobStore


class Clock:
    """The Redis store's wall clock, moved by hand: leases run out when a test says so."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    else:
        s = RedisJobStore(request.getfixturevalue("redis_url"), prefix=uuid.uuid4().hex,
                          lease_s=30, clock=Clock())
    yield s
    s.close()


def test_a_store_declares_whether_other_processes_share_it(store):
    """Workers' heartbeats re-queue dead workers' jobs only on a shared store: on SQLite that
    would take the running jobs of this very process (it owns every running job there)."""
    assert store.shared is isinstance(store, RedisJobStore)


def died(store) -> None:
    """The process running the claimed jobs dies. SQLite learns it at the next start (every
    running job is the dead process's); Redis once their lease has run out."""
    if isinstance(store, RedisJobStore):
        store.clock.now += store.lease_s + 1


def job(**fields) -> Job:
    values = {"owner": "lab1", "kind": "generate", "model": "debug",
              "params": {"prompts": ["x"], "negatives": [None], "seeds": [1], "settings": {}}}
    return Job(**{**values, **fields})


# --- restarts: the attempts cap ------------------------------------------------------------------
def test_requeue_running_fails_a_job_the_service_died_in_max_attempts_times(store):
    a, b, c = store.add(job()), store.add(job()), store.add(job())
    assert [j.id for j in store.claim(1)] == [a.id]
    assert [j.id for j in store.claim(1)] == [b.id]
    assert store.request_cancel(b.id) == "cancelling"
    died(store)                                                 # a and b were running
    assert store.requeue_running(2) == {"queued": 1, "failed": 0, "cancelled": 1}
    assert store.get(a.id).status == "queued" and store.get(b.id).status == "cancelled"
    assert [j.id for j in store.claim(1)] == [a.id]             # second run of a ...
    died(store)
    assert store.requeue_running(2) == {"queued": 0, "failed": 1, "cancelled": 0}   # ... dies too
    failed = store.get(a.id)
    assert failed.status == "failed" and failed.attempts == 2 and failed.finished_at is not None
    assert "stopped 2 times" in failed.error and "max_attempts=2" in failed.error
    assert "not retried" in failed.error
    assert store.get(c.id).status == "queued"                   # never started: untouched
    assert store.requeue_running(2) == {"queued": 0, "failed": 0, "cancelled": 0}


def test_graceful_requeue_does_not_count_against_max_attempts(store):
    a = store.add(job())
    store.claim(1)
    assert store.requeue(a.id)                                  # graceful shutdown
    assert (store.get(a.id).attempts, store.get(a.id).interrupted) == (1, 1)
    store.claim(1)                                              # started twice, died once
    died(store)
    assert store.requeue_running(2)["queued"] == 1
    store.claim(1)                                              # started 3 times, died twice
    died(store)
    assert store.requeue_running(2)["failed"] == 1
    assert store.get(a.id).attempts == 3 and "stopped 2 times" in store.get(a.id).error
    b = store.add(job())
    store.claim(1)
    died(store)
    assert store.requeue_running(1)["failed"] == 1              # the cap is the argument
    assert "max_attempts=1" in store.get(b.id).error


# --- cancel vs finish -----------------------------------------------------------------------------
def test_finish_after_a_late_cancel_ends_cancelled(store):
    a, b = store.add(job()), store.add(job())
    store.claim(1)
    store.progress([a.id], 7, 53)
    assert store.request_cancel(a.id) == "cancelling"           # DELETE after the last check
    assert store.finish(a.id, {"files": ["audio/a_0.wav"]}) == "cancelled"
    ended = store.get(a.id)
    assert ended.status == "cancelled" and ended.result is None and ended.step == 7
    assert store.finish(a.id, {"files": []}) is None            # not running any more
    store.claim(1)
    store.progress([b.id], 7, 53)
    assert store.finish(b.id, {"files": ["audio/b_0.wav"]}) == "succeeded"
    done = store.get(b.id)
    assert done.status == "succeeded" and done.result == {"files": ["audio/b_0.wav"]}
    assert done.step == done.total == 53
    assert store.request_cancel(b.id) == "succeeded"            # too late: nothing to cancel


def test_cancelled_names_the_jobs_of_a_run_a_cancel_was_asked_for(store):
    run = [store.add(job(batch_key="k")) for _ in range(3)]
    queued = store.add(job(batch_key="other"))
    store.claim(8)
    ids = [j.id for j in run]
    assert store.cancelled(ids) == set()
    assert store.request_cancel(run[1].id) == "cancelling"
    assert store.request_cancel(queued.id) == "cancelled"       # queued: ended now, no flag
    assert store.cancelled(ids + [queued.id, "0" * 32]) == {run[1].id}
    for j in (run[0], run[2]):
        store.request_cancel(j.id)
    assert store.cancelled(ids) == set(ids)
    assert store.cancelled([]) == set()


# --- progress -------------------------------------------------------------------------------------
def test_progress_updates_every_running_job_of_a_run(store):
    run = [store.add(job(batch_key="k")) for _ in range(3)]
    waiting = store.add(job(batch_key="other"))
    assert {j.id for j in store.claim(8)} == {j.id for j in run}
    store.progress([j.id for j in run] + [waiting.id], 12, 53)
    assert [(store.get(j.id).step, store.get(j.id).total) for j in run] == [(12, 53)] * 3
    assert (store.get(waiting.id).step, store.get(waiting.id).total) == (0, 0)  # queued: no


# --- what may be stored ---------------------------------------------------------------------------
def test_store_refuses_non_finite_numbers_and_names_the_job(store):
    bad = job(params={"prompts": ["x"], "settings": {"temperature": float("inf")}})
    with pytest.raises(ValueError, match=rf"job {bad.id}: params\['settings'\]\['temperature'\] "
                                         r"= inf cannot be stored"):
        store.add(bad)
    assert store.get(bad.id) is None
    a = store.add(job())
    store.claim(1)
    with pytest.raises(ValueError, match=rf"job {a.id}: result\['timings'\]\['total_s'\] = nan"):
        store.finish(a.id, {"files": [], "timings": {"total_s": float("nan")}})
    assert store.get(a.id).status == "running"                  # nothing written
    assert store.fail(a.id, "prompt '\ud800' broke it")        # not UTF-8: stored with '?'
    assert store.get(a.id).error == "prompt '?' broke it"


def test_public_is_json_safe_whatever_the_job_holds():
    odd = job(params={"prompts": ["\ud800 piano"], "settings": {"top_p": float("nan")},
                      "\udcff": [float("-inf"), 1.5]},
              error="bad \udcff", result={"audio_s": float("inf"), "files": ["a.wav"]})
    out = odd.public()
    json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8")  # what a response does
    assert out["request"]["prompts"] == ["? piano"] and out["request"]["settings"]["top_p"] is None
    assert out["request"]["?"] == [None, 1.5] and out["error"] == "bad ?"
    assert out["result"] == {"audio_s": None, "files": ["a.wav"]}


def test_rows_that_are_not_valid_utf8_still_read(store):
    a = store.add(job())
    if isinstance(store, RedisJobStore):                        # what another writer could leave
        store.redis.hset(store._key("job", a.id), "error", b"bad \x80")
    else:
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE jobs SET error = CAST(X'6261642080' AS TEXT) WHERE id = ?",
                       (a.id,))
    assert store.get(a.id).error == "bad \ufffd"
    assert [j.id for j in store.list()] == [a.id]


# --- retention ------------------------------------------------------------------------------------
def ended(store, finished_at: float, files: list[str], **fields) -> Job:
    return store.add(job(status="succeeded", finished_at=finished_at, result={"files": files},
                         **fields))


def test_expiring_and_expire_cover_cache_copies_and_leave_the_cache(store):
    origin = ended(store, 100.0, ["audio/o_0.wav"], cache_key="k")
    copy = ended(store, 150.0, ["audio/o_0.wav"], cache_key="k")        # a cache hit of origin
    other = ended(store, 120.0, ["audio/x_0.wav"], cache_key="k")       # same key, own files
    failed = store.add(job(status="failed", finished_at=90.0, error="no"))
    store.add(job())                                                     # queued: never due
    assert [j.id for j in store.expiring(130.0)] == [failed.id, origin.id, other.id]
    assert [j.id for j in store.expiring(130.0, limit=1)] == [failed.id]
    assert store.find_cached("k").id == other.id                         # newest succeeded
    assert store.expire(origin.id, 500.0) == [origin.id, copy.id]
    assert store.get(copy.id).expired_at == 500.0 and store.get(other.id).expired_at is None
    assert store.get(copy.id).result == {"files": ["audio/o_0.wav"], "expired": True,
                                         "expired_at": 500.0}          # what clients read
    assert store.get(other.id).result == {"files": ["audio/x_0.wav"]}
    assert store.expire(origin.id, 600.0) == []                          # once
    assert [j.id for j in store.expiring(200.0)] == [failed.id, other.id]
    assert store.expire(failed.id, 500.0) == [failed.id]                 # no result: the column
    assert store.get(failed.id).result is None and store.get(failed.id).expired_at == 500.0
    store.expire(other.id, 500.0)
    assert store.find_cached("k") is None                                # no expired files
    assert store.get(origin.id).public()["expired_at"] == 500.0


_FIRST_SCHEMA = """CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    kind TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, batch_key TEXT NOT NULL,
    cache_key TEXT NOT NULL, items INTEGER NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, step INTEGER NOT NULL, total INTEGER NOT NULL,
    attempts INTEGER NOT NULL, cancel_requested INTEGER NOT NULL, error TEXT,
    params TEXT NOT NULL, result TEXT);"""


def test_a_store_file_from_the_first_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_FIRST_SCHEMA)
        db.execute("INSERT INTO jobs (id, owner, kind, model, status, batch_key, cache_key, "
                   "items, created_at, step, total, attempts, cancel_requested, params) VALUES "
                   "('a', 'lab1', 'generate', 'debug', 'running', '', '', 1, 1.0, 3, 53, 1, 0, "
                   "'{\"prompts\": [\"x\"]}')")
    db.close()
    store = SQLiteJobStore(path)
    try:
        old = store.get("a")
        assert (old.interrupted, old.expired_at, old.step) == (0, None, 3)
        assert store.requeue("a") and store.get("a").interrupted == 1
    finally:
        store.close()


def test_a_job_the_process_died_in_runs_alone_and_is_no_batch_mate(store):
    """A request that kills the process must not take its batch-mates down with it: after a
    death it runs alone, so it alone reaches max_attempts."""
    killer, mate = store.add(job(batch_key="k")), store.add(job(batch_key="k"))
    assert [j.id for j in store.claim(8)] == [killer.id, mate.id]      # batched, then a crash
    died(store)
    store.requeue_running(2)
    late = store.add(job(batch_key="k"))
    assert [j.id for j in store.claim(8)] == [killer.id]               # alone now: it kills
    died(store)
    assert store.requeue_running(2) == {"queued": 0, "failed": 1, "cancelled": 0}   # again
    assert store.get(killer.id).status == "failed"
    assert store.get(mate.id).status == "queued" and store.get(mate.id).attempts == 1
    assert [j.id for j in store.claim(8)] == [mate.id]       # it died once too: alone as well
    assert [j.id for j in store.claim(8)] == [late.id]


def test_a_cancel_during_a_graceful_requeue_wins(store):
    a = store.add(job())
    store.claim(1)
    assert store.request_cancel(a.id) == "cancelling"
    store.requeue(a.id)                                      # shutdown interrupts the run
    assert store.get(a.id).status == "cancelled" and store.get(a.id).finished_at is not None
    assert store.claim(1) == []


# --- leases ---------------------------------------------------------------------------------------
def test_a_claim_holds_one_lease_that_fences_every_worker_write(store):
    a, b = store.add(job(batch_key="k")), store.add(job(batch_key="k"))
    run = store.claim(8)
    lease = run[0].lease
    assert len(lease) == 32 and {j.lease for j in run} == {lease}    # one run, one lease
    assert "lease" not in run[0].public()                             # never shown to clients
    assert store.renew([a.id, b.id], lease) == {a.id, b.id}
    assert store.renew([a.id], "f" * 32) == set()                     # not its lease
    store.progress([a.id, b.id], 5, 50, lease="f" * 32)               # a stranger's progress
    assert store.get(a.id).step == 0
    store.progress([a.id, b.id], 5, 50, lease=lease)
    assert store.get(a.id).step == 5
    assert store.finish(a.id, {"files": []}, lease="f" * 32) is None  # fenced: nothing written
    assert not store.fail(b.id, "late", lease="f" * 32)
    assert not store.requeue(b.id, lease="f" * 32) and not store.cancel(b.id, lease="f" * 32)
    assert store.get(a.id).status == store.get(b.id).status == "running"
    assert store.finish(a.id, {"files": ["a.wav"]}, lease=lease) == "succeeded"
    assert store.fail(b.id, "bad request", lease=lease)
    assert store.renew([a.id, b.id], lease) == set()                  # ended: nothing to hold


def test_a_late_worker_never_overwrites_the_run_that_replaced_it(store):
    """Worker 1 stalls past its lease; the job runs again under worker 2's lease. Worker 1's
    progress, result and failure are refused; the job ends once, with worker 2's result."""
    a = store.add(job())
    (first,) = store.claim(1)
    died(store)                            # SQLite: the next start; Redis: the lease ran out
    assert store.requeue_running(2) == {"queued": 1, "failed": 0, "cancelled": 0}
    (second,) = store.claim(1)
    assert second.id == a.id and second.lease != first.lease and second.attempts == 2
    assert store.renew([a.id], first.lease) == set()                  # the heartbeat sees it
    store.progress([a.id], 40, 50, lease=first.lease)
    assert store.finish(a.id, {"files": ["late.wav"]}, lease=first.lease) is None
    assert not store.fail(a.id, "late failure", lease=first.lease)
    assert store.get(a.id).status == "running" and store.get(a.id).step == 0
    assert store.finish(a.id, {"files": ["a.wav"]}, lease=second.lease) == "succeeded"
    assert store.finish(a.id, {"files": ["late.wav"]}, lease=first.lease) is None
    assert store.get(a.id).result == {"files": ["a.wav"]}


def test_wait_for_jobs_wakes_when_a_job_is_queued(store):
    store.wait_for_jobs(0.01)                        # whatever earlier adds left
    begin = time.monotonic()
    assert not store.wait_for_jobs(0.2)
    assert time.monotonic() - begin >= 0.15          # it waited: nothing was queued
    later = threading.Timer(0.1, store.add, args=(job(),))
    later.start()
    assert store.wait_for_jobs(10)
    later.join()


def test_counts_follow_every_change_of_status(store):
    a, b, c = store.add(job()), store.add(job()), store.add(job())
    store.claim(1)
    store.request_cancel(b.id)
    assert store.counts() == {"queued": 1, "running": 1, "succeeded": 0, "failed": 0,
                              "cancelled": 1}
    store.finish(a.id, {"files": []})
    store.claim(1)
    store.requeue(c.id)
    assert store.counts() == {"queued": 1, "running": 0, "succeeded": 1, "failed": 0,
                              "cancelled": 1}
    assert [j.id for j in store.list()] == [c.id, b.id, a.id]           # newest first
    assert [j.id for j in store.list("lab1", limit=1)] == [c.id]
    assert store.list("someone else") == []


# --- Redis only: what several processes share ------------------------------------------------------
@pytest.fixture
def redis_pair(redis_url):
    """Two stores on one prefix: what two processes see."""
    prefix, clock = uuid.uuid4().hex, Clock()
    one, two = (RedisJobStore(redis_url, prefix=prefix, lease_s=30, clock=clock)
                for _ in range(2))
    yield one, two
    one.close()
    two.close()


def test_two_processes_never_claim_the_same_job(redis_pair):
    """Claims from many threads of two stores at once: every job is taken exactly once."""
    one, two = redis_pair
    added = {one.add(job(batch_key=f"k{i % 3}")).id for i in range(60)}
    taken: list[str] = []
    lock = threading.Lock()

    def drain(store):
        while run := store.claim(4):
            with lock:
                taken.extend(j.id for j in run)

    threads = [threading.Thread(target=drain, args=(s,)) for s in (one, two) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(added)                      # each once, none lost
    assert two.counts()["running"] == 60 and one.counts()["queued"] == 0


def test_the_result_cache_is_shared(redis_pair):
    one, two = redis_pair
    a = one.add(job(cache_key="same"))
    one.claim(1)
    assert two.find_cached("same") is None                     # running: no result yet
    one.finish(a.id, {"files": ["a.wav"]})
    assert two.find_cached("same").id == a.id


def test_rate_limits_hold_across_replicas(redis_url):
    from musicgen_edu.serve.redis_limiter import RedisRateLimiter

    prefix = uuid.uuid4().hex
    one, two = (RedisRateLimiter(redis_url, per_minute=60, burst=3, prefix=prefix)
                for _ in range(2))
    assert [one.wait("key:a"), two.wait("key:a"), one.wait("key:a")] == [0, 0, 0]
    assert 0.5 < two.wait("key:a") <= 1.0                      # the burst is spent: ~1 s
    assert one.wait("key:b") == 0                               # another key: its own bucket
