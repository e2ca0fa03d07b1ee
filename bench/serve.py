"""The service past one process against the generator alone, side by side on one machine.

Two measurements of the same requests (``--requests`` prompts of ``--duration`` s on the debug
model, one seed each), one after the other in one run:

* **raw**: one in-process :class:`MusicGenerator` decoding them in batches of
  ``max_batch_size`` (8), all cores to itself, the best of three runs (the issue's yardstick);
* **one process**: ``musicgen-edu serve`` on SQLite with one worker thread, the service
  before Redis (the row to beat);
* **service**: ``--apis`` API processes (``musicgen-edu serve --workers 0``) and
  ``--workers`` worker processes (``musicgen-edu worker``, one CPU thread each) on one
  redis-server with its append-only file on (``appendfsync always``), as deploy/ runs them
  (tests/serve_processes.py starts them). Every request at once from an asyncio client,
  alternating between the replicas; each job's latency is its ``finished_at`` minus the
  moment the client sent it; throughput is requests over first send to last finish.

Writes ``bench/results/serve/scale_<machine>.{md,csv}``. Time nothing else meanwhile: the two
cores are easily disturbed. Usage::

    python bench/serve.py                         # 200 requests, 2 APIs, 2 workers
    python bench/serve.py --requests 100 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

import musicgen_edu as mg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]   # the process harness, machine_name

KEY = "bench-key-0001"


def prompts(n: int) -> list[str]:
    return [f"lo-fi piano sketch number {i}" for i in range(n)]


def raw(n: int, duration: float, batch: int) -> dict:
    """Clips per second of one in-process generator, batches of ``batch``."""
    gen = mg.MusicGenerator("debug")                   # the service's defaults: native backend
    gen.generate(prompts(batch), duration=duration, seeds=list(range(batch)), progress=False)
    texts, seeds, runs = prompts(n), [10_000 + i for i in range(n)], []
    for _ in range(3):                    # the best of three: the most this loop can do here
        start = time.perf_counter()
        for i in range(0, n, batch):
            gen.generate(texts[i:i + batch], duration=duration, seeds=seeds[i:i + batch],
                         progress=False)
        runs.append(time.perf_counter() - start)
    seconds = min(runs)
    return {"setup": f"raw: one MusicGenerator, batches of {batch}, "
                     f"{torch.get_num_threads()} threads (best of 3)", "requests": n,
            "seconds": seconds, "per_s": n / seconds, "p50_s": None, "p99_s": None,
            "batches": f"{batch} (fixed)"}


async def send_all(urls: list[str], n: int, duration: float) -> list[tuple[float, str]]:
    import httpx

    async with httpx.AsyncClient(timeout=120, headers={"X-API-Key": KEY}) as client:
        async def one(i: int) -> tuple[float, str]:
            sent = time.time()
            answer = await client.post(f"{urls[i % len(urls)]}/v1/generate", json={
                "prompt": prompts(n)[i], "seed": 10_000 + i, "duration": duration,
                "model": "debug"})
            answer.raise_for_status()
            return sent, answer.json()["id"]

        return await asyncio.gather(*(one(i) for i in range(n)))


def finished(url: str, ids: set[str], timeout: float = 600) -> dict[str, dict]:
    import httpx

    done, deadline = {}, time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as client:
        while len(done) < len(ids):
            for job in client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]:
                if job["id"] in ids and job["status"] in ("succeeded", "failed", "cancelled"):
                    done[job["id"]] = job
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - len(done)} jobs not finished")
            time.sleep(0.25)
    return done


SETTINGS = {"MUSICGEN_API_KEYS": f"{KEY}:admin:bench", "MUSICGEN_RATE_LIMIT_PER_MINUTE": "0",
            "MUSICGEN_LOG_LEVEL": "warning"}


class OneProcess:
    """``musicgen-edu serve`` alone on SQLite, one worker thread: the service before Redis."""

    def __init__(self, folder: Path, n: int):
        import subprocess

        from serve_processes import wait_ready
        from test_serve_restart import free_port

        port = free_port()
        env = {**os.environ, **SETTINGS, "MUSICGEN_MAX_QUEUE": str(10 * n),
               "MUSICGEN_STORAGE_DIR": str(folder / "storage"), "MUSICGEN_API_PORT": str(port)}
        self.process = subprocess.Popen([str(Path(sys.executable).with_name("musicgen-edu")),
                                         "serve"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        self.api_urls = [f"http://127.0.0.1:{port}"]
        wait_ready(port, self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def service(n: int, duration: float, apis: int, workers: int, folder: Path) -> dict:
    from serve_processes import Deployment

    d = OneProcess(folder, n) if apis == 0 else Deployment(
        folder, apis=apis, workers=workers, settings={**SETTINGS,
                                                      "MUSICGEN_MAX_QUEUE": str(10 * n)})
    try:
        warm = asyncio.run(send_all(d.api_urls, 8 * max(1, workers), duration))  # models, kernels
        finished(d.api_urls[0], {i for _, i in warm})
        sent = asyncio.run(send_all(d.api_urls, n, duration))
        jobs = finished(d.api_urls[0], {i for _, i in sent})
    finally:
        d.stop()
    assert {j["status"] for j in jobs.values()} == {"succeeded"}, "a job did not succeed"
    latency = sorted(jobs[i]["finished_at"] - t for t, i in sent)
    seconds = max(j["finished_at"] for j in jobs.values()) - min(t for t, _ in sent)
    sizes = Counter(j["result"]["batch_size"] for j in jobs.values())
    setup = ("service: one process (musicgen-edu serve), SQLite, 1 worker thread" if apis == 0
             else f"service: {apis} API + {workers} worker processes (1 thread each), "
                  "redis-server (AOF always)")
    return {"setup": setup, "requests": n, "seconds": seconds,
            "per_s": n / seconds, "p50_s": statistics.median(latency),
            "p99_s": latency[min(n - 1, round(0.99 * n))],
            "batches": ", ".join(f"{size}: {count} jobs" for size, count in sorted(sizes.items()))}


def table(rows: list[dict], machine: str, duration: float) -> str:
    base = rows[0]["per_s"]
    lines = [f"# The service past one process against the generator alone ({machine})", "",
             f"Debug model, {duration:g} s clips, one seed per request; `python bench/serve.py`."
             " Latency: a job's finish minus its request's send (the service rows).", "",
             "| setup | requests | seconds | requests/s | share of raw | p50 latency s | "
             "p99 latency s | batch sizes formed |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p50 = "" if r["p50_s"] is None else f"{r['p50_s']:.2f}"
        p99 = "" if r["p99_s"] is None else f"{r['p99_s']:.2f}"
        lines.append(f"| {r['setup']} | {r['requests']} | {r['seconds']:.2f} | {r['per_s']:.1f} "
                     f"| {r['per_s'] / base:.0%} | {p50} | {p99} | {r['batches']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1],
                        help="worker processes of each Redis row")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the one-process SQLite row (the service before Redis)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve"))
    args = parser.parse_args()
    rows = [raw(args.requests, args.duration, 8)]
    print(rows[-1], flush=True)
    if not args.no_single:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(service(args.requests, args.duration, 0, 1, Path(folder)))
        print(rows[-1], flush=True)
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(service(args.requests, args.duration, args.apis, workers, Path(folder)))
        print(rows[-1], flush=True)
    import pandas as pd
    from decode import machine_name

    machine, out = machine_name(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"scale_{machine}.csv", index=False)
    (out / f"scale_{machine}.md").write_text(table(rows, machine, args.duration))
    print(table(rows, machine, args.duration))


if __name__ == "__main__":
    main()
