"""The job store alone (serve/jobs.py): restarts, cancel races, what may be stored, retention.

Everything runs on a fresh SQLite file per test; no model, no service. The worker and the
service around the store are tested in test_serve_worker.py and test_serve.py.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from musicgen_edu.serve.jobs import Job, SQLiteJobStore


@pytest.fixture
def store(tmp_path):
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


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
    # the process dies: a and b were running
    assert store.requeue_running(2) == {"queued": 1, "failed": 0, "cancelled": 1}
    assert store.get(a.id).status == "queued" and store.get(b.id).status == "cancelled"
    assert [j.id for j in store.claim(1)] == [a.id]             # second run of a ...
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
    assert store.requeue_running(2)["queued"] == 1
    store.claim(1)                                              # started 3 times, died twice
    assert store.requeue_running(2)["failed"] == 1
    assert store.get(a.id).attempts == 3 and "stopped 2 times" in store.get(a.id).error
    b = store.add(job())
    store.claim(1)
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
    with sqlite3.connect(store.path) as db:                     # what another writer could leave
        db.execute("UPDATE jobs SET error = CAST(X'6261642080' AS TEXT) WHERE id = ?", (a.id,))
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
    store.requeue_running(2)
    late = store.add(job(batch_key="k"))
    assert [j.id for j in store.claim(8)] == [killer.id]               # alone now: it kills
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
