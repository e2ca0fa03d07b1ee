"""Durability: a real server killed with SIGKILL mid-queue, restarted on the same store.

Also the graceful path: stopping a server re-queues its running job, and the next start
finishes it. Everything runs on loopback with the offline debug model; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

import musicgen_edu as mg

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(storage: Path, port: int, log: Path, **settings) -> subprocess.Popen:
    """``musicgen-edu serve`` on loopback with the debug model, plus MUSICGEN_<settings> (and
    the suite's MUSICGEN_CPU_PATHS file, see conftest.py), once it is ready."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MUSICGEN_") or k == "MUSICGEN_CPU_PATHS"}
    env.update(MUSICGEN_STORAGE_DIR=str(storage), MUSICGEN_BATCH_WAIT_S="0",
               MUSICGEN_LOG_JSON="true", MUSICGEN_DEVICE="cpu", MUSICGEN_RATE_LIMIT_PER_MINUTE="0",
               MUSICGEN_DEFAULT_MODEL="debug")
    env.update({f"MUSICGEN_{k.upper()}": str(v) for k, v in settings.items()})
    with open(log, "w") as err:                      # the server keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "musicgen_edu", "serve", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"server exited during start-up: {log.read_text()[-2000:]}"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server not ready within 120 s")


def start(storage: Path, port: int, log: Path) -> subprocess.Popen:
    """A server that decodes one prompt at a time (restarts are about jobs, not batches)."""
    return serve(storage, port, log, max_batch_size=1, max_prompts=1)


def jobs_of(url: str) -> dict[str, dict]:
    return {j["id"]: j for j in httpx.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]}


def test_kill_9_mid_queue_then_restart_completes_every_job_once(tmp_path):
    storage, port = tmp_path / "store", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(storage, port, tmp_path / "first.log")
    try:
        bodies = [{"prompt": f"clip {i}", "duration": 2.0, "seed": 100 + i} for i in range(5)]
        ids = [httpx.post(f"{url}/v1/generate", json=b, timeout=10).json()["id"] for b in bodies]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:          # kill once one is done and one is running
            jobs = jobs_of(url)
            statuses = [jobs[i]["status"] for i in ids]
            if "succeeded" in statuses and "running" in statuses and jobs[
                    ids[statuses.index("running")]]["step"] > 0:
                break
            time.sleep(0.05)
        before = jobs_of(url)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = [i for i in ids if before[i]["status"] == "succeeded"]
    running_at_kill = [i for i in ids if before[i]["status"] == "running"]
    assert done_before and len(running_at_kill) == 1
    assert any(before[i]["status"] == "queued" for i in ids)       # killed mid-queue

    proc = start(storage, port, tmp_path / "second.log")             # same store, same port
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            after = jobs_of(url)
            if all(after[i]["status"] == "succeeded" for i in ids):
                break
            time.sleep(0.1)
        assert len(after) == len(ids)                                 # nothing duplicated
        assert all(after[i]["status"] == "succeeded" for i in ids), after
        for i in done_before:                                         # not redone
            assert after[i]["attempts"] == 1 and after[i]["finished_at"] == before[i]["finished_at"]
        assert after[running_at_kill[0]]["attempts"] == 2             # re-queued, run again
        assert sorted(p.name for p in (storage / "audio").iterdir()) == sorted(
            f"{i}_0.wav" for i in ids)                                # one file per job
        solo = mg.MusicGenerator("debug", device="cpu", progress=False)
        for body, job_id in zip(bodies, ids):
            wav, _ = sf.read(storage / "audio" / f"{job_id}_0.wav", dtype="float32")
            ref = solo.generate(body["prompt"], duration=2.0, seeds=[body["seed"]]).wav[0, 0]
            np.testing.assert_allclose(wav, ref.numpy(), atol=1e-4)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal (exit status -15)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert '"event": "service stopped"' in (tmp_path / "second.log").read_text()


def test_graceful_stop_requeues_the_running_job(tmp_path):
    settings = dict(storage_dir=tmp_path / "store", shutdown_grace_s=0, device="cpu",
                    rate_limit_per_minute=0)
    server = mg.start_server(port=0, **settings)
    try:
        job_id = httpx.post(f"{server.url}/v1/generate", timeout=10,
                            json={"prompt": "long", "duration": 10, "seed": 1}).json()["id"]
        for _ in range(600):
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
            if job["status"] == "running" and job["step"] > 0:
                break
            time.sleep(0.02)
    finally:
        server.stop()
    assert not server.thread.is_alive()
    store = mg.serve.SQLiteJobStore(tmp_path / "store" / "jobs.sqlite3")
    assert store.get(job_id).status == "queued" and store.get(job_id).attempts == 1
    store.close()
    with mg.start_server(port=0, **settings) as server:
        for _ in range(1200):
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
            if job["status"] == "succeeded":
                break
            time.sleep(0.05)
        assert job["status"] == "succeeded" and job["attempts"] == 2
