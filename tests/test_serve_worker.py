"""The worker (serve/worker.py) in a real service on the offline ``debug`` model: a failing
batch-mate, progress writes, a cancel that arrives after the last check, what may be stored,
restarts, and retention (:func:`sweep_expired` with a made-up clock).

Faults are injected by wrapping the pooled generator's ``generate`` or the worker's store;
the generation itself is real, and good jobs are compared with the library's solo result.
"""

from __future__ import annotations

import os
import sqlite3
import time

import numpy as np
import pytest
from test_serve import (  # the service helpers; clean_env is autouse: no MUSICGEN_* variables
    H,
    audio_of,
    clean_env,  # noqa: F401
    make_client,
    wait_job,
    wait_ready,
    wav_bytes,
)

import musicgen_edu as mg
from musicgen_edu.errors import GenerationError
from musicgen_edu.serve.jobs import Job
from musicgen_edu.serve.retention import sweep_expired
from musicgen_edu.serve.sqlite_store import SQLiteJobStore
from musicgen_edu.settings import load_settings

BODY = {"duration": 0.5, "temperature": 0.9}      # one batch_key for every job of a test


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A service that waits 1 s for batch-mates, so jobs posted together run as one batch."""
    with make_client(tmp_path_factory.mktemp("worker"), batch_wait_s=1.0, max_batch_size=8) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def solo():
    return mg.MusicGenerator("debug", progress=False)


def post(client, prompt: str, seed: int) -> str:
    r = client.post("/v1/generate", json={**BODY, "prompt": prompt, "seed": seed},
                    headers=H["user"])
    assert r.status_code == 202, r.text
    return r.json()["id"]


class SpyStore:
    """The worker's store, recording progress writes and cancel checks; ``before_finish`` runs
    ahead of finish."""

    def __init__(self, inner, before_finish=None):
        self.inner, self.before_finish, self.writes = inner, before_finish, []
        self.cancel_checks = []             # the job ids of each cancelled() query

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def progress(self, job_ids, step, total, lease=None):
        self.writes.append((list(job_ids), step, total, time.monotonic()))
        return self.inner.progress(job_ids, step, total, lease=lease)

    def cancelled(self, job_ids):
        self.cancel_checks.append(list(job_ids))
        return self.inner.cancelled(job_ids)

    def finish(self, job_id, result, lease=None):
        if self.before_finish is not None:
            self.before_finish(job_id)
        return self.inner.finish(job_id, result, lease=lease)


# --- a failing batch-mate -------------------------------------------------------------------------
def test_a_poisoned_batch_mate_fails_alone(client, solo, monkeypatch):
    gen = client.app.state.service.pool.get("debug")
    real, calls = gen.generate, []

    def generate(prompts, **kwargs):
        calls.append(list(prompts))
        if "poison" in prompts:
            raise GenerationError("prompt 'poison' breaks the model (a test fault)")
        return real(prompts, **kwargs)

    monkeypatch.setattr(gen, "generate", generate)
    good, bad = post(client, "calm harp", 1), post(client, "poison", 2)
    good_job, bad_job = wait_job(client, good), wait_job(client, bad)
    assert calls[0] == ["calm harp", "poison"]                # they did run as one batch
    assert bad_job["status"] == "failed" and "'poison' breaks the model" in bad_job["error"]
    assert good_job["status"] == "succeeded", good_job
    assert good_job["result"]["batch_jobs"] == 1              # its retry ran alone
    ref = solo.generate("calm harp", seeds=[1], **BODY).wav[0].numpy()
    np.testing.assert_allclose(audio_of(client, good)[0], ref, atol=1e-4)


def test_an_internal_error_in_a_batch_also_fails_only_its_job(client, monkeypatch):
    gen = client.app.state.service.pool.get("debug")
    real = gen.generate

    def generate(prompts, **kwargs):
        if "crash" in prompts:
            raise RuntimeError("CUDA out of memory (a test fault)")
        return real(prompts, **kwargs)

    monkeypatch.setattr(gen, "generate", generate)
    ids = [post(client, "crash", 3), post(client, "soft rain", 4), post(client, "slow bass", 5)]
    jobs = [wait_job(client, i) for i in ids]
    assert [j["status"] for j in jobs] == ["failed", "succeeded", "succeeded"]
    assert jobs[0]["error"] == "internal error (RuntimeError): CUDA out of memory (a test fault)"


# --- progress -------------------------------------------------------------------------------------
def test_one_progress_write_per_report_for_every_job_of_a_run(client, monkeypatch):
    svc = client.app.state.service
    spy = SpyStore(svc.worker.store)
    monkeypatch.setattr(svc.worker, "store", spy)
    body = {**BODY, "duration": 6.0}                # long enough for several reports
    ids = [client.post("/v1/generate", json={**body, "prompt": f"clip {i}", "seed": 10 + i},
                       headers=H["user"]).json()["id"] for i in range(3)]
    jobs = [wait_job(client, i) for i in ids]
    assert [j["result"]["batch_jobs"] for j in jobs] == [3, 3, 3]
    assert len(spy.writes) >= 3 and all(sorted(w[0]) == sorted(ids) for w in spy.writes)
    assert spy.writes[-1][1] == spy.writes[-1][2] == jobs[0]["total"]      # the last step
    assert len(spy.writes) < jobs[0]["total"] / 2                           # not every step
    gaps = [b[3] - a[3] for a, b in zip(spy.writes[:-2], spy.writes[1:-1])]
    assert all(gap >= 0.45 for gap in gaps), gaps        # every 0.5 s (less thread jitter)


def test_one_cancel_query_per_step_for_every_job_of_a_run(client, monkeypatch):
    """The tracker asks the store which jobs of its run were cancelled once per decoder step,
    in one query naming all of them (not one query per job)."""
    svc = client.app.state.service
    spy = SpyStore(svc.worker.store)
    monkeypatch.setattr(svc.worker, "store", spy)
    ids = [post(client, f"clip {i}", 40 + i) for i in range(3)]
    jobs = [wait_job(client, i) for i in ids]
    assert [j["result"]["batch_jobs"] for j in jobs] == [3, 3, 3]
    assert all(sorted(check) == sorted(ids) for check in spy.cancel_checks)
    assert len(spy.cancel_checks) == jobs[0]["total"]              # one per step, not per job


def test_a_run_stops_once_every_job_of_it_is_cancelled(client, monkeypatch):
    svc = client.app.state.service
    spy = SpyStore(svc.worker.store)
    monkeypatch.setattr(svc.worker, "store", spy)
    body = {**BODY, "duration": 6.0}                # long enough to cancel while it runs
    ids = [client.post("/v1/generate", json={**body, "prompt": f"long {i}", "seed": 50 + i},
                       headers=H["user"]).json()["id"] for i in range(2)]
    deadline = time.monotonic() + 60
    while not spy.cancel_checks:                    # the run has begun its steps
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [client.delete(f"/v1/jobs/{i}", headers=H["user"]).status_code for i in ids] \
        == [202, 202]
    jobs = [wait_job(client, i) for i in ids]
    assert [j["status"] for j in jobs] == ["cancelled", "cancelled"]
    assert len(spy.cancel_checks) < jobs[0]["total"] and jobs[0]["step"] < jobs[0]["total"]


# --- cancel vs finish -----------------------------------------------------------------------------
def test_a_cancel_after_the_last_check_ends_cancelled_without_files(client, monkeypatch):
    svc = client.app.state.service
    answers = []
    spy = SpyStore(svc.worker.store, before_finish=lambda job_id: answers.append(
        client.delete(f"/v1/jobs/{job_id}", headers=H["user"])))   # the DELETE comes late
    monkeypatch.setattr(svc.worker, "store", spy)
    job_id = post(client, "late cancel", 21)
    job = wait_job(client, job_id)
    assert answers[0].status_code == 202 and answers[0].json()["status"] == "cancelling"
    assert job["status"] == "cancelled" and job["result"] is None
    assert not list((svc.storage / "audio").glob(f"{job_id}*"))


def test_a_store_error_while_saving_one_job_settles_every_job_of_the_run(client, monkeypatch):
    """A job whose result cannot be stored (a full disk, a locked database) fails alone; its
    batch-mates still end succeeded, nothing is left running."""
    svc = client.app.state.service
    ids = []

    def before_finish(job_id):
        if job_id == ids[0]:
            raise sqlite3.OperationalError("database or disk is full (a test fault)")

    monkeypatch.setattr(svc.worker, "store", SpyStore(svc.worker.store, before_finish))
    ids.extend([post(client, "full disk", 31), post(client, "still fine", 32)])
    jobs = [wait_job(client, i) for i in ids]
    assert [j["status"] for j in jobs] == ["failed", "succeeded"], jobs
    assert "OperationalError" in jobs[0]["error"]
    assert not list((svc.storage / "audio").glob(f"{ids[0]}*"))


# --- what may be stored ---------------------------------------------------------------------------
def test_a_non_finite_result_fails_the_job_instead_of_breaking_reads(client, monkeypatch):
    gen = client.app.state.service.pool.get("debug")
    real = gen.generate

    def generate(prompts, **kwargs):
        out = real(prompts, **kwargs)
        out.timings["rtf"] = float("nan")
        return out

    monkeypatch.setattr(gen, "generate", generate)
    job = wait_job(client, post(client, "nan timings", 31))
    assert job["status"] == "failed" and "['timings']['rtf'] = nan" in job["error"], job
    assert client.get("/v1/jobs", headers=H["user"]).status_code == 200


def test_listings_survive_any_stored_value(client):
    """A row an older version wrote: inf/NaN in its JSON, a lone surrogate, invalid UTF-8."""
    job_id = "f" * 32
    with sqlite3.connect(client.app.state.service.storage / "jobs.sqlite3") as db:
        db.execute("INSERT INTO jobs (id, owner, kind, model, status, batch_key, cache_key, "
                   "items, created_at, finished_at, step, total, attempts, cancel_requested, "
                   "error, params, result) VALUES (?, 'lab1', 'generate', 'debug', 'failed', '', "
                   "'', 1, 1.0, 2.0, 0, 0, 1, 0, CAST(X'6261642080' AS TEXT), ?, ?)",
                   (job_id, '{"prompts": ["\\ud800 harp"], "settings": {"top_p": NaN}}',
                    '{"audio_s": Infinity, "files": []}'))
    db.close()
    r = client.get(f"/v1/jobs/{job_id}", headers=H["user"])
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["request"] == {"prompts": ["? harp"], "settings": {"top_p": None}}
    assert job["result"] == {"audio_s": None, "files": []} and job["error"] == "bad \ufffd"
    r = client.get("/v1/jobs", params={"limit": 500}, headers=H["user"])
    assert r.status_code == 200 and job_id in [j["id"] for j in r.json()["jobs"]]


# --- uploads end with their job -------------------------------------------------------------------
def test_an_upload_is_deleted_when_its_job_ends(client):
    uploads = client.app.state.service.storage / "uploads"
    r = client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(), "audio/wav")},
                    data={"request": '{"prompt": "go on", "duration": 1.0, "seed": 3}'},
                    headers=H["user"])
    assert r.status_code == 202, r.text
    assert list(uploads.glob(f"{r.json()['id']}.*"))                  # kept while queued
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded" and not list(uploads.glob(f"{job['id']}.*"))
    assert audio_of(client, job["id"])[1] == 32000                    # the result stays


# --- restarts and retention -----------------------------------------------------------------------
def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_start_up_settles_what_the_last_process_left(tmp_path):
    storage = tmp_path / "store"
    store = SQLiteJobStore(storage / "jobs.sqlite3")
    params = {"prompts": ["x"], "negatives": [None], "seeds": [1], "settings": {"duration": 0.5}}
    twice = Job(owner="lab1", kind="continue", model="debug", params=dict(params),
                status="running", attempts=2)                  # the process died in it twice
    twice.params["_upload"] = touch(storage / "uploads" / f"{twice.id}.wav").relative_to(
        storage).as_posix()
    store.add(twice)
    once = store.add(Job(owner="lab1", kind="generate", model="debug", params=params,
                         status="running", attempts=1))
    old = store.add(Job(owner="lab1", kind="generate", model="debug", params=params,
                        status="succeeded", finished_at=1000.0,   # 1970: long past retention
                        result={"files": [f"audio/{'a' * 32}_0.wav"]}, id="a" * 32))
    clip = touch(storage / "audio" / f"{old.id}_0.wav")
    store.close()
    with make_client(tmp_path, max_attempts=2) as c:                # the next start
        failed = c.get(f"/v1/jobs/{twice.id}", headers=H["user"]).json()
        assert failed["status"] == "failed" and "stopped 2 times" in failed["error"]
        assert "max_attempts=2" in failed["error"]
        rerun = wait_job(c, once.id)
        assert rerun["status"] == "succeeded" and rerun["attempts"] == 2
        for _ in range(200):                                        # the start-up sweep
            if c.get(f"/v1/jobs/{old.id}", headers=H["user"]).json()["expired_at"]:
                break
            time.sleep(0.05)
        assert c.get(f"/v1/jobs/{old.id}", headers=H["user"]).json()["expired_at"] > 1000.0
        assert not clip.exists() and not (storage / twice.params["_upload"]).exists()


def test_sweep_expired_deletes_uploads_and_results_when_due(tmp_path):
    storage, t = tmp_path / "store", 1_000_000.0                     # t: when the jobs ended
    store = SQLiteJobStore(storage / "jobs.sqlite3")

    def add(status="succeeded", kind="generate", finished_at=t, **fields) -> Job:
        job = Job(owner="lab1", kind=kind, model="debug", params={}, status=status, **fields)
        job.finished_at = None if status in ("queued", "running") else finished_at
        if kind == "continue":
            job.params["_upload"] = f"uploads/{job.id}.wav"
            touch(storage / job.params["_upload"])
        if status == "succeeded" and job.result is None:
            job.result = {"files": [f"audio/{job.id}_0.wav"]}
            touch(storage / job.result["files"][0])
        return store.add(job)

    gen = add(cache_key="k")
    touch(storage / "audio" / f"{gen.id}_0.mp3")                      # a format conversion
    hit = add(finished_at=t + 50, cache_key="k", result={**gen.result, "cached": True})
    cont = add(kind="continue")
    requeued = add(kind="continue", status="queued", attempts=1)     # it runs again
    table = add(kind="batch", status="failed")
    touch(storage / "batches" / table.id / "row_0.wav")
    newer = add(finished_at=t + 95)
    orphan, fresh = (touch(storage / "uploads" / f"{c * 32}.wav") for c in "ed")
    left = touch(storage / "uploads" / f".{'c' * 32}.wav.tmp")        # a crash mid-write
    writing = touch(storage / "uploads" / f".{'b' * 32}.wav.tmp")     # a write under way
    for path in (orphan, left):
        os.utime(path, (t - 4000, t - 4000))
    os.utime(fresh, (t, t))
    os.utime(writing, (t, t))

    def sweep(now, **retention):
        values = {"upload_retention_s": 10.0, "result_retention_s": 100.0, **retention}
        return sweep_expired(store, storage, load_settings(storage_dir=storage, **values), now)

    assert sweep(t + 5) == {"uploads": 2, "results": 0}     # the orphan and the crash's file
    assert not orphan.exists() and not left.exists() and fresh.exists() and writing.exists()
    assert (storage / cont.params["_upload"]).exists()
    assert sweep(t + 10) == {"uploads": 1, "results": 0}              # cont ended 10 s ago
    assert not (storage / cont.params["_upload"]).exists()
    assert sweep(t + 99) == {"uploads": 0, "results": 0}
    assert all(store.get(j.id).expired_at is None for j in (gen, hit, cont, table, newer))
    assert sweep(t + 101) == {"uploads": 0, "results": 3}             # gen, cont, table
    assert not list((storage / "audio").glob(f"{gen.id}_*"))
    assert not (storage / "audio" / f"{cont.id}_0.wav").exists()
    assert not (storage / "batches" / table.id).exists()
    expired = [store.get(j.id).expired_at for j in (gen, hit, cont, table, newer)]
    assert expired == [t + 101] * 4 + [None]                           # hit: a copy of gen
    assert store.get(hit.id).result["expired"] is True                  # what the API reads
    assert store.find_cached("k") is None                              # the hit's files are gone
    assert (storage / requeued.params["_upload"]).exists()             # not ended: kept
    late = sweep(t + 10**6, result_retention_s=0.0)                   # 0: results kept forever
    assert late == {"uploads": 2, "results": 0}                  # old by now: orphan, tmp file
    assert not fresh.exists() and not writing.exists()
    assert (storage / newer.result["files"][0]).exists()
    store.close()


@pytest.mark.parametrize("shared", [True, False])
def test_the_heartbeat_requeues_dead_workers_jobs_only_on_a_shared_store(tmp_path, shared):
    """Every lease_s / 3 the heartbeat renews its leases and, where other processes share the
    store (Redis), re-queues jobs whose worker died; on a store one process owns (SQLite) that
    call would take this process's own running jobs, so it never happens there."""
    from musicgen_edu.serve.monitoring import Metrics
    from musicgen_edu.serve.pool import ModelPool
    from musicgen_edu.serve.worker import Worker

    settings = load_settings(storage_dir=tmp_path, lease_s=1.0, workers=1)
    store = SpyStore(SQLiteJobStore(tmp_path / "jobs.sqlite3"))
    store.shared, calls = shared, []
    store.requeue_running = lambda max_attempts: calls.append(max_attempts) or {"queued": 0}
    worker = Worker(settings, store, ModelPool(settings), Metrics())
    worker.start()
    time.sleep(1.0)                                   # about three beats
    worker.stop(0.0)
    assert (len(calls) >= 2) if shared else calls == []
    assert all(n == settings.max_attempts for n in calls)
