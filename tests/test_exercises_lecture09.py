"""Lecture 09 exercise checks: the solutions pass, plausible wrong answers and None do not, and
each check's answer is what the running service does (FastAPI's TestClient, debug model)."""

import time

import pytest

pytest.importorskip("fastapi")

from conftest import fails, load_solutions, passes

import musicgen_edu as mg
from musicgen_edu.exercises.lecture09 import check_batches, check_cached, check_refused

PROMPTS = ["sad cello", "fast techno", "marching band", "rainy jazz piano"]
BODY = {"prompt": "calm lo-fi piano with soft drums", "duration": 0.2, "seed": 0}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def sol():
    return load_solutions("09_serving")


def settings_of(tmp_path, **overrides):
    values = {"default_model": "debug", "models": ["debug"], "storage_dir": tmp_path / "store",
              "rate_limit_per_minute": 60, "rate_limit_burst": 20, "max_batch_size": 8,
              "batch_wait_s": 1.0, "log_level": "warning"}
    return mg.load_settings(**{**values, **overrides})


def bodies_of(temperatures):
    return [{"prompt": p, "duration": 0.2, "seed": 10 + i, "temperature": t}
            for i, (p, t) in enumerate(zip(PROMPTS, temperatures))]


@pytest.mark.parametrize("temperatures, max_batch, right", [
    ([1.0] * 4, 8, 1), ([1.0, 0.8, 1.0, 0.8], 8, 2), ([1.0] * 4, 3, 2),
    ([0.7, 0.8, 0.9, 1.0], 8, 4)])
def test_batches(sol, tmp_path, temperatures, max_batch, right):
    settings = settings_of(tmp_path, max_batch_size=max_batch, max_prompts=max_batch)
    bodies = bodies_of(temperatures)
    answer = sol.solve_batches(bodies, max_batch)
    assert answer == right
    passes(check_batches(settings, bodies, answer))
    assert "replace None" in check_batches(settings, bodies, None).message
    if right > 1:
        one = check_batches(settings, bodies, 1)
        fails(one)
        assert "equal settings" in one.message
    if right < len(bodies):
        each = check_batches(settings, bodies, len(bodies))
        fails(each)
        assert "one batch per request" in each.message
    for wrong in (right + 1, str(right), right + 0.5):
        fails(check_batches(settings, bodies, wrong))


def test_cached(sol, tmp_path):
    settings = settings_of(tmp_path)
    cases = [(BODY, dict(BODY), True), (BODY, {**BODY, "seed": 1}, False),
             ({k: v for k, v in BODY.items() if k != "seed"},
              {k: v for k, v in BODY.items() if k != "seed"}, False),
             (BODY, {**BODY, "temperature": 0.5}, False)]
    for first, second, right in cases:
        answer = sol.solve_cached(first, second)
        assert answer is right
        passes(check_cached(settings, first, second, answer))
        fails(check_cached(settings, first, second, not answer))
        assert "replace None" in check_cached(settings, first, second, None).message
        fails(check_cached(settings, first, second, "yes"))
    no_seed = {k: v for k, v in BODY.items() if k != "seed"}
    assert "no seed" in check_cached(settings, no_seed, no_seed, False).message
    off = settings_of(tmp_path, result_cache=False)
    passes(check_cached(off, BODY, BODY, False))
    assert "result_cache=False" in check_cached(off, BODY, BODY, False).message


@pytest.mark.parametrize("per_minute, burst, requests", [(60, 20, 25), (6, 3, 5), (60, 20, 10),
                                                         (0, 5, 9)])
def test_refused(sol, tmp_path, per_minute, burst, requests):
    settings = settings_of(tmp_path, rate_limit_per_minute=per_minute, rate_limit_burst=burst)
    answer = sol.solve_refused(requests, burst) if per_minute else 0
    passes(check_refused(settings, requests, answer))
    assert "replace None" in check_refused(settings, requests, None).message
    if answer:
        fails(check_refused(settings, requests, 0))
        assert "burst" in check_refused(settings, requests, 0).message
        fails(check_refused(settings, requests, requests))
    for wrong in (answer + 1, str(answer), answer - 0.5):
        fails(check_refused(settings, requests, wrong))


def test_the_service_does_what_the_checks_say(tmp_path):
    """Batches and cache hits of a real app (worker thread, debug model), and its 429s."""
    from fastapi.testclient import TestClient

    from musicgen_edu.serve import create_app

    settings = settings_of(tmp_path, rate_limit_per_minute=0)
    mixed = bodies_of([1.0, 0.8, 1.0, 0.8])
    with TestClient(create_app(settings)) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        ids = [client.post("/v1/generate", json=b).json()["id"] for b in mixed]  # within 1 s
        jobs = [wait(client, i) for i in ids]
        batches = round(sum(1 / j["result"]["batch_jobs"] for j in jobs))
        assert batches == 2
        passes(check_batches(settings, mixed, batches))
        again = client.post("/v1/generate", json=mixed[0]).json()
        assert again["cached"] is True
        passes(check_cached(settings, mixed[0], mixed[0], again["cached"]))
    limited = settings_of(tmp_path / "limited", rate_limit_per_minute=6, rate_limit_burst=3,
                          workers=0)
    with TestClient(create_app(limited)) as client:
        codes = [client.get("/v1/models").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    passes(check_refused(limited, 5, codes.count(429)))


def wait(client, job_id, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']}")
