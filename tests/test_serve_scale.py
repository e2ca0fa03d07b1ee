"""Past one process: two API replicas and two workers on one redis-server, on loopback.

The processes are the deployed commands (tests/serve_processes.py: ``musicgen-edu serve
--workers 0`` and ``musicgen-edu worker``, settings from ``MUSICGEN_*``), started once for the
module on a redis-server with its append-only file on (tests/redis_server.py). In order:

* 200 concurrent generate requests from an asyncio client, spread over both replicas: every
  job completes exactly once (the store's per-status counts would count a second finish),
  none is lost, batches of several requests form;
* a key's burst spent on one replica is spent on the other (429 there);
* a result cached by one replica's job is served by the other;
* ``WS /v1/stream`` on a replica plays audio decoded by a worker process (relay.py);
* a worker killed with ``kill -9`` mid-job: the job runs again elsewhere once its lease runs
  out, and succeeds once; a worker stopped with SIGTERM mid-job hands it back at once;
* an API process killed with ``kill -9`` among its requests: every request it accepted
  completes exactly once;
* redis-server killed with ``kill -9`` and restarted: queued and finished jobs are still there,
  and the queued ones run.

About a minute on 2 CPU cores, most of it starting processes (each imports torch).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from serve_processes import Deployment

pytestmark = pytest.mark.redis

KEYS = {f"user{i}": f"scale-key-{i:04d}" for i in range(10)}   # owner -> key
KEYS["watcher"] = "scale-admin-key"         # an admin: lists everyone's jobs while they run
BURST = 20                                  # each owner's 20 requests fit its burst exactly
PER_MINUTE = 600                            # 10 tokens/s: polling twice a second stays under
BODY = {"duration": 1.0, "model": "debug"}


def headers(owner: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[owner]}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    keys = ",".join(f"{key}:{'admin' if owner == 'watcher' else 'user'}:{owner}"
                    for owner, key in KEYS.items())
    d = Deployment(tmp_path_factory.mktemp("scale"), apis=2, workers=2, settings={
        "MUSICGEN_API_KEYS": keys, "MUSICGEN_RATE_LIMIT_BURST": str(BURST),
        "MUSICGEN_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
        "MUSICGEN_LEASE_S": "3", "MUSICGEN_SHUTDOWN_GRACE_S": "0",
        "MUSICGEN_MAX_QUEUE": "1000", "MUSICGEN_BATCH_WAIT_S": "0.05"})
    yield d
    d.stop()


def wait_all(url: str, ids: list[str], timeout: float = 180) -> list[dict]:
    """Poll the admin's job list twice a second until every job in ``ids`` has ended; the
    jobs as ``GET /v1/jobs`` shows them (the ids must be among the newest 500)."""
    deadline, done = time.monotonic() + timeout, {}
    with httpx.Client(base_url=url, headers=headers("watcher"), timeout=10) as client:
        while len(done) < len(ids):
            listing = client.get("/v1/jobs", params={"limit": 500})
            assert listing.status_code == 200, listing.text
            for job in listing.json()["jobs"]:
                if job["id"] in ids and job["status"] in ("succeeded", "failed", "cancelled"):
                    done[job["id"]] = job
            assert time.monotonic() < deadline, f"{len(ids) - len(done)} jobs still not ended"
            time.sleep(0.5)
    return [done[i] for i in ids]


def counts(deployment) -> dict[str, int]:
    import redis

    raw = redis.Redis.from_url(deployment.redis.url).hgetall("musicgen:counts")
    return {k.decode(): int(v) for k, v in raw.items() if int(v)}


def settled(deployment, timeout: float = 120) -> dict[str, int]:
    """The store's counts once no job is queued or running: a job stored by a request whose
    answer never came back (its API process killed) still runs, after the answered ones."""
    deadline = time.monotonic() + timeout
    while {"queued", "running"} & set(now := counts(deployment)):
        assert time.monotonic() < deadline, f"jobs never ended: {now}"
        time.sleep(0.5)
    return now


async def submit_all(urls: list[str], requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Every request at once, request i to replica i % 2."""
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(
            client.post(f"{urls[i % len(urls)]}/v1/generate", json=body, headers=headers(owner))
            for i, (owner, body) in enumerate(requests)))


def test_200_concurrent_requests_over_two_replicas_each_complete_exactly_once(deployment):
    requests = [(owner, {**BODY, "prompt": f"{owner} tune {n}", "seed": n})
                for n in range(BURST) for owner in KEYS if owner != "watcher"]
    answers = asyncio.run(submit_all(deployment.api_urls, requests))
    assert [a.status_code for a in answers] == [202] * 200, answers[0].text
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == 200
    jobs = wait_all(deployment.api_urls[1], ids)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert all(j["attempts"] == 1 for j in jobs)                  # nothing died: one run each
    assert counts(deployment) == {"succeeded": 200}               # a second finish would show
    storage = deployment.folder / "storage"
    assert all((storage / j["result"]["files"][0]).is_file() for j in jobs)
    assert max(j["result"]["batch_size"] for j in jobs) > 1      # dynamic batching happened


def test_a_burst_spent_on_one_replica_is_spent_on_the_other(deployment):
    one, two = deployment.api_urls
    with httpx.Client(timeout=30, headers=headers("user0")) as client:
        time.sleep(BURST * 60 / PER_MINUTE)                      # user0's bucket full again
        spent = [client.get(f"{one}/v1/jobs", params={"limit": 1}).status_code
                 for _ in range(BURST)]
        other = [client.get(f"{two}/v1/jobs", params={"limit": 1}) for _ in range(3)]
    assert spent == [200] * BURST
    # what refilled while those ran (10 tokens/s) lets one or two through; no fresh bucket
    assert [a.status_code for a in other].count(429) >= 2, [a.status_code for a in other]
    assert "rate limit exceeded" in next(a for a in other if a.status_code == 429).text


def test_a_result_cached_by_one_replica_is_served_by_the_other(deployment):
    one, two = deployment.api_urls
    body = {**BODY, "prompt": "cached across replicas", "seed": 777}
    with httpx.Client(timeout=30, headers=headers("user9")) as client:
        first = client.post(f"{one}/v1/generate", json=body).json()["id"]
    (done,) = wait_all(one, [first])
    with httpx.Client(timeout=30, headers=headers("user9")) as client:
        again = client.post(f"{two}/v1/generate", json=body).json()
    assert again["cached"] is True
    (hit,) = wait_all(two, [again["id"]])
    assert hit["result"]["files"] == done["result"]["files"]


def test_a_replica_streams_audio_decoded_by_a_worker_process(deployment):
    from websockets.sync.client import connect

    url = deployment.api_urls[0].replace("http", "ws") + "/v1/stream?api_key=" + KEYS["user8"]
    with connect(url) as ws:
        ws.send(json.dumps({**BODY, "prompt": "streamed through redis", "duration": 2.0,
                            "seed": 5}))
        start = json.loads(ws.recv(timeout=60))
        audio = b""
        while isinstance(message := ws.recv(timeout=60), bytes):
            audio += message
        done = json.loads(message)
    assert start["type"] == "start" and start["sample_rate"] > 0
    assert done["type"] == "done" and done["status"] == "succeeded"
    assert len(audio) == 4 * start["channels"] * 2 * start["sample_rate"]   # 2 s of float32


def running(deployment, owner: str, job_id: str, timeout: float = 60) -> dict:
    """The job once a worker has decoded a step of it (claimed, step 0, on a busy machine
    can last a while: the model loads and the prompt is encoded first)."""
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{deployment.api_urls[0]}/v1/jobs/{job_id}", headers=headers(owner)).json()
        if job["status"] == "running" and job["step"] > 0:
            return job
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.05)


def test_a_worker_killed_mid_job_leaves_it_to_another(deployment):
    before = counts(deployment)["succeeded"]
    assert deployment.terminate("worker2") == 0          # SIGTERM, idle: a clean exit
    long = {**BODY, "prompt": "killed mid-job", "duration": 30.0, "seed": 1}
    job_id = httpx.post(f"{deployment.api_urls[0]}/v1/generate", json=long,
                        headers=headers("user7")).json()["id"]
    running(deployment, "user7", job_id)                 # worker1 has it
    deployment.kill("worker1")                           # kill -9: no hand-back, a dead lease
    deployment.start("worker2", ["musicgen-edu", "worker"], "MUSICGEN_WORKER_PORT")
    (job,) = wait_all(deployment.api_urls[1], [job_id])
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["interrupted"] == 0
    # SIGTERM mid-job (grace 0 s): worker2 hands the job back at once, worker1 finishes it
    deployment.start("worker1", ["musicgen-edu", "worker"], "MUSICGEN_WORKER_PORT")
    deployment.wait_ready(["worker1", "worker2"])
    handed = httpx.post(f"{deployment.api_urls[0]}/v1/generate", json={**long, "seed": 2},
                        headers=headers("user6")).json()["id"]
    running(deployment, "user6", handed)
    for name in ("worker1", "worker2"):                  # whichever has it stops gracefully
        if f'"{handed}"' in deployment.log(name) or handed in deployment.log(name):
            assert deployment.terminate(name) == 0
            deployment.start(name, ["musicgen-edu", "worker"], "MUSICGEN_WORKER_PORT")
            break
    (job,) = wait_all(deployment.api_urls[1], [handed])
    assert job["status"] == "succeeded" and job["interrupted"] == 1 and job["attempts"] == 2
    assert counts(deployment) == {"succeeded": before + 2}   # each ended once


def test_an_api_process_killed_among_its_requests_loses_no_accepted_job(deployment):
    one = deployment.api_urls[0]

    async def flood() -> list[httpx.Response | BaseException]:
        async with httpx.AsyncClient(timeout=30) as client:
            posts = [client.post(f"{one}/v1/generate", headers=headers("user5"),
                                 json={**BODY, "prompt": f"mid-kill {n}", "seed": 900 + n})
                     for n in range(BURST)]
            tasks = [asyncio.ensure_future(p) for p in posts]
            await asyncio.sleep(0.15)
            deployment.kill("api1")                      # kill -9 while requests are in flight
            return await asyncio.gather(*tasks, return_exceptions=True)

    before = sum(counts(deployment).values())
    answers = asyncio.run(flood())
    accepted = [a.json()["id"] for a in answers
                if isinstance(a, httpx.Response) and a.status_code == 202]
    jobs = wait_all(deployment.api_urls[1], accepted)
    assert {j["status"] for j in jobs} <= {"succeeded"}
    after = settled(deployment)                             # unanswered ones run too
    assert sum(after.values()) - before >= len(accepted)    # every accepted job is stored ...
    assert set(after) == {"succeeded"}                      # ... and ended once, succeeded
    deployment.start("api1", ["musicgen-edu", "serve", "--workers", "0"], "MUSICGEN_API_PORT")
    deployment.wait_ready(["api1"])


def test_redis_restart_keeps_queued_and_finished_jobs(deployment):
    for name in ("worker1", "worker2"):
        assert deployment.terminate(name) == 0
    finished = counts(deployment)
    queued = [httpx.post(f"{deployment.api_urls[1]}/v1/generate", headers=headers("user4"),
                         json={**BODY, "prompt": f"survives {n}", "seed": 50 + n}).json()["id"]
              for n in range(5)]
    deployment.redis.restart()                           # kill -9, then the append-only file
    assert counts(deployment) == {**finished, "queued": 5}
    deployment.start("worker1", ["musicgen-edu", "worker"], "MUSICGEN_WORKER_PORT")
    jobs = wait_all(deployment.api_urls[0], queued)   # the replicas reconnect
    assert {j["status"] for j in jobs} == {"succeeded"}
