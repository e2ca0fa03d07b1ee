"""The worker: runs queued jobs off the event loop, batching compatible requests together.

The path of one job through a worker thread::

    store.wait_for_jobs(0.5)          sleep until a job is queued (any process may queue it)
    store.claim(max_batch_size)       the oldest queued job + queued jobs with its batch_key,
                                      under one lease that a heartbeat thread renews
    pool.get(model)                   a MusicGenerator, loaded on demand, LRU-unloaded past
                                      the memory budget (one instance per model per process;
                                      pool.py)
    generator.generate(all prompts, seeds=all seeds, callback=tracker)
        tracker(step, total)          progress to the store (one write for the whole run, at
                                      most every 0.5 s); raises to cancel or interrupt
    split the [B, C, T] result by job, save each item atomically, store.finish(job, lease)
    the job ended: its upload is deleted (upload_retention_s = 0), and its files too unless
                                      it succeeded (finish says "cancelled" if a DELETE came late)

**Dynamic batching.** Requests with the same model and sampling settings (everything but
prompt, negative prompt and seed) get the same ``batch_key`` and are decoded as one batch.
Because every item's random draws depend on its own seed alone (sampling.py: the counter
sampler's noise, or one ``torch.Generator`` per item), item i of the batch gets the tokens it
would get alone; its audio differs from the solo clip at most by the float rounding of
decoding several clips in one EnCodec call (one 16-bit step of a few samples;
docs/serving.md). If a batched run raises, each of its jobs runs again alone, so a
request that breaks the model fails by itself and its batch-mates get their solo results.

**Cancellation** is cooperative: the generator calls ``tracker(step, total)`` after every
decoder step (batch-table jobs: every step of every chunk); when every job of the run has
been cancelled it raises, and the run stops there with nothing saved. A job cancelled while
its batch-mates go on is dropped at the end.
**Graceful shutdown** waits ``shutdown_grace_s`` for running jobs, then interrupts them the
same way and puts them back in the queue (they run again, with the same seeds, next start).
**Leases** (jobs.py): every write about a claimed job passes its lease, so a run whose lease
was lost (this process stalled past ``lease_s``; another worker re-runs the job) writes
nothing; the heartbeat notices the loss and stops the run at its next step. With the Redis
store the heartbeat also re-queues jobs whose worker died (``requeue_running``: their lease
ran out); the SQLite store does that once, at start-up (app.py).
**Tracing** (tracing.py, when on): a run is a ``worker batch`` span linked to each job's
request, ``generate`` holds the generator's stages, and each job's ``queue wait``, ``encode
file`` and ``store`` are spans in its own request's trace.
**Retention**: :func:`sweep_expired` runs at start-up and at most once a minute; it deletes
uploads ``upload_retention_s`` after their job ended and results ``result_retention_s`` after
(the job keeps its record, with ``expired_at`` set).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import MusicGenEduError
from ..settings import Settings
from .jobs import Job, JobStore
from .monitoring import Metrics, get_logger
from .pool import ModelPool
from .relay import LocalRelay, Relay
from .retention import delete_job_files, sweep_expired
from .tracing import Tracing, job_context, trace_id

if TYPE_CHECKING:
    from ..generator import MusicGenerator

__all__ = ["Worker"]

log = get_logger()
PROGRESS_EVERY_S = 0.5       # at most one progress write per run this often (and at the end)
SWEEP_EVERY_S = 60.0         # retention sweeps: at start-up, then at most this often


class _Stop(BaseException):
    """Raised from the progress callback to end a run at the current step.

    A ``BaseException`` (like ``KeyboardInterrupt``): a signal, not an error, so code that
    reports every ``Exception`` per item (BatchRunner) lets it through.
    """

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why                  # "cancelled", "interrupted" or "lost" (the lease)


class _Tracker:
    """The generator's ``callback(step, total)``: progress, cancellation, shutdown."""

    def __init__(self, worker: Worker, jobs: list[Job], every_s: float = PROGRESS_EVERY_S,
                 report: bool = True):
        self.worker, self.every_s = worker, every_s
        self.ids = [job.id for job in jobs]
        self.lease = jobs[0].lease      # one claim, one lease for the whole run
        self.report = report            # False: progress is counted elsewhere (batch tables)
        self.last = 0.0

    def __call__(self, step: int, total: int) -> None:
        store = self.worker.store
        if self.worker.interrupting.is_set():
            raise _Stop("interrupted")
        if self.lease in self.worker.lost:              # another worker runs these jobs now
            raise _Stop("lost")
        if store.cancelled(self.ids) >= set(self.ids):  # one query for every job of the run
            raise _Stop("cancelled")
        now = time.monotonic()
        if self.report and (now - self.last >= self.every_s or step == total):
            self.last = now
            store.progress(self.ids, step, total, lease=self.lease)  # one write for the run


class Worker:
    """``settings.workers`` threads taking jobs from the store and running them.

    Args:
        settings: the service :class:`~musicgen_edu.settings.Settings`.
        store: where jobs live (:class:`~musicgen_edu.serve.jobs.JobStore`).
        pool: the :class:`ModelPool`.
        metrics: the service's :class:`~musicgen_edu.serve.monitoring.Metrics`.
        tracing: the service's spans (:class:`~musicgen_edu.serve.tracing.Tracing`; off if None).
        relay: where stream jobs' chunks go (relay.py; default: listeners in this process).
    """

    def __init__(self, settings: Settings, store: JobStore, pool: ModelPool, metrics: Metrics,
                 tracing: Tracing | None = None, relay: Relay | None = None):
        self.settings, self.store, self.pool, self.metrics = settings, store, pool, metrics
        self.tracing = tracing or Tracing()       # off unless the app passes its own
        self.relay = relay or LocalRelay()
        self.storage = Path(settings.storage_dir)
        self.interrupting = threading.Event()     # set: running jobs stop and are re-queued
        self.held: dict[str, list[str]] = {}      # lease -> ids of the run it holds
        self.lost: set[str] = set()               # leases the heartbeat found gone
        self._stopping = threading.Event()        # set: take no new jobs
        self._threads_done = threading.Event()    # set: the threads have ended (heartbeat too)
        self._threads: list[threading.Thread] = []
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0                    # time.monotonic() of the next sweep (0: now)

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.settings.workers):
            thread = threading.Thread(target=self._loop, name=f"musicgen-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.settings.workers:
            threading.Thread(target=self._heartbeat, name="musicgen-heartbeat",
                             daemon=True).start()

    def stop(self, grace_s: float) -> None:
        """Take no new jobs; let running ones finish for ``grace_s``, then re-queue them."""
        self._stopping.set()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.interrupting.set()
        for thread in self._threads:
            thread.join(30)
        if self.stopped():
            self._threads_done.set()

    def stopped(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def alive(self) -> bool:
        """Every worker thread is running (``/readyz`` says not ready otherwise)."""
        return all(t.is_alive() for t in self._threads)

    def _heartbeat(self) -> None:
        """Every ``lease_s / 3``: renew the leases of running runs (a lease found gone stops
        its run at the next step); on a shared store, re-queue jobs whose worker died."""
        while not self._threads_done.wait(self.settings.lease_s / 3):
            try:
                for lease, ids in list(self.held.items()):
                    if not self.store.renew(ids, lease):
                        self.lost.add(lease)
                if self.store.shared:
                    moved = self.store.requeue_running(self.settings.max_attempts)
                    if any(moved.values()):
                        log.warning("re-queued jobs of a worker that died", **moved)
            except Exception:  # the store is unreachable: the next beat tries again
                log.exception("lease heartbeat failed")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._sweep_if_due()
                if self.store.wait_for_jobs(0.5):
                    time.sleep(self.settings.batch_wait_s)   # let batch-mates arrive
                while not self._stopping.is_set():
                    jobs = self.store.claim(self.settings.max_batch_size)
                    if not jobs:
                        break
                    self.held[jobs[0].lease] = [j.id for j in jobs]
                    try:
                        self._run(jobs)
                    finally:
                        self.held.pop(jobs[0].lease, None)
                        self.lost.discard(jobs[0].lease)
                    self._sweep_if_due()                  # a queue that never empties too
            except Exception:  # a store error (disk full, locked): log it, keep the thread
                log.exception("worker loop error; retrying in 1 s")
                time.sleep(1)

    def _sweep_if_due(self) -> None:
        """Run :func:`sweep_expired` at the first call and then at most every minute."""
        with self._sweep_lock:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        removed = sweep_expired(self.store, self.storage, self.settings, time.time())
        if any(removed.values()):
            log.info("retention sweep", **removed)

    # --- one run --------------------------------------------------------------------------------
    def _run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` as one batch; if that raises, run each alone, so only a bad one fails."""
        import structlog

        ids = [j.params.get("_request_id") for j in jobs]
        structlog.contextvars.bind_contextvars(request_id=ids[0] if len(ids) == 1 else ids)
        traces = [trace_id(context) for j in jobs if (context := job_context(j)) is not None]
        if traces:                      # tracing on: a log line leads to its request's trace
            structlog.contextvars.bind_contextvars(
                trace_id=traces[0] if len(traces) == 1 else traces)
        try:
            with self.tracing.batch(jobs):             # spans: tracing.py
                error = self._attempt(jobs)
                if error is not None and len(jobs) > 1:   # one request may have broken the batch
                    log.warning("batch run failed; running its jobs one by one",
                                jobs=[j.id for j in jobs], error=f"{type(error).__name__}: {error}")
                    errors = [self._attempt([job]) for job in jobs]
                else:
                    errors = [error] * len(jobs)
                for job, exc in zip(jobs, errors):
                    if exc is not None:
                        message = str(exc) if isinstance(exc, MusicGenEduError) else (
                            f"internal error ({type(exc).__name__}): {exc}")
                        if self.store.fail(job.id, message, lease=job.lease):
                            self._ended(job, keep_files=False)
        finally:
            for job in jobs:
                if job.kind == "stream":
                    self.relay.publish(job.id, None)     # end of stream
            self.metrics.count_jobs(self.store.counts())
            structlog.contextvars.unbind_contextvars("request_id", "trace_id")

    def _attempt(self, jobs: list[Job]) -> Exception | None:
        """Decode ``jobs`` as one batch, save and finish them; settle a cancel or an interrupt.

        Returns:
            The error that stopped the run (a MusicGenEduError: a bad request; anything else: a
            bug or an out-of-memory), its traceback logged and dropped; the jobs are still
            running then. None when every job has been settled.
        """
        kind, start = jobs[0].kind, time.perf_counter()
        log.info("run started", jobs=[j.id for j in jobs], kind=kind, model=jobs[0].model,
                 items=sum(j.items for j in jobs))
        try:
            gen = self.pool.get(jobs[0].model)
            tracker = _Tracker(self, jobs, report=kind != "batch")
            if kind == "batch":
                with self.tracing.generate(gen, jobs):
                    results = [self._batch(jobs[0], gen, tracker)]
            else:
                results = self._generate(jobs, gen, tracker)
        except _Stop as stop:
            self._stopped(jobs, stop.why)
            return None
        except Exception as exc:
            if not isinstance(exc, MusicGenEduError):
                log.exception("run failed", jobs=[j.id for j in jobs])
            self.tracing.failed(exc)
            return exc.with_traceback(None)   # frees the run's tensors before any retry
        for job, result in zip(jobs, results):     # each job settled on its own: one that
            with self.tracing.job_span(job, "store"):  # cannot be stored never strands the rest
                self._finish(job, result)
        self.metrics.observe_run(kind, results, time.perf_counter() - start)
        return None

    def _stopped(self, jobs: list[Job], why: str) -> None:
        """Settle a run :class:`_Stop` ended: ``"interrupted"`` jobs go back to the queue
        unless a cancel was asked for (decided in the store, atomically); ``"cancelled"`` end;
        ``"lost"`` ones are another worker's now: nothing is written, nothing deleted."""
        for job in jobs:
            if why == "lost":
                continue
            if why == "interrupted":
                self.store.requeue(job.id, lease=job.lease)   # runs again: keeps its upload
                now = self.store.get(job.id)
                ended = now is not None and now.status == "cancelled"
            else:
                ended = self.store.cancel(job.id, lease=job.lease)
            if ended:
                self._ended(job, keep_files=False)
        log.info(f"run {why}", jobs=[j.id for j in jobs])

    def _finish(self, job: Job, result: dict[str, Any]) -> None:
        """Store one job's result (``failed`` if it cannot be stored) and settle its files."""
        try:
            # "cancelled" if a DELETE came late; None if the lease was lost: another worker
            # runs the job again and writes the same files, so this one touches nothing more
            status = self.store.finish(job.id, result, lease=job.lease)
            if status is None:
                log.warning("lease lost; this run's result is dropped", job=job.id)
                return
        except Exception as exc:  # inf or NaN in the result (ValueError), a full disk, ...
            log.exception("storing a result failed", job=job.id)
            status = "failed"
            try:
                self.store.fail(job.id, f"internal error ({type(exc).__name__}): {exc}",
                                lease=job.lease)
            except Exception:                   # the store is down: restart settles it
                log.exception("recording the failure failed", job=job.id)
        try:
            self._ended(job, keep_files=status == "succeeded")
        except OSError:
            log.exception("deleting a job's files failed", job=job.id)

    def _ended(self, job: Job, keep_files: bool) -> None:
        """``job`` ended: delete its upload now (``upload_retention_s`` = 0; else the sweep
        deletes it later) and, unless ``keep_files``, what it saved."""
        if not keep_files:
            delete_job_files(self.storage, job.id)
        upload = job.params.get("_upload")
        if upload and self.settings.upload_retention_s == 0:
            (self.storage / upload).unlink(missing_ok=True)

    def _generate(self, jobs: list[Job], gen: MusicGenerator,
                  tracker: _Tracker) -> list[dict[str, Any]]:
        """Decode all jobs' prompts as one batch; save and describe each job's share."""
        from ..audio import save_audio

        with self.tracing.generate(gen, jobs):
            wav, timings = self._decode(jobs, gen, tracker)               # [B, C, T]
        batch_size = sum(len(j.params["prompts"]) for j in jobs)
        results, offset = [], 0
        for job in jobs:
            files = []
            with self.tracing.job_span(job, "encode file"):
                for i in range(job.items):
                    path = self.storage / "audio" / f"{job.id}_{i}.wav"
                    save_audio(path, wav[offset + i], gen.sample_rate)
                    files.append(path.relative_to(self.storage).as_posix())
            offset += job.items
            results.append(dict(files=files, sample_rate=gen.sample_rate,
                                audio_s=wav.shape[-1] / gen.sample_rate, seeds=job.params["seeds"],
                                batch_size=batch_size, batch_jobs=len(jobs), cached=False,
                                timings={k: v for k, v in timings.items() if v is not None}))
        return results

    def _decode(self, jobs: list[Job], gen: MusicGenerator,
                tracker: _Tracker) -> tuple[torch.Tensor, dict[str, Any]]:
        """The audio of all jobs' prompts, decoded as one batch: ``([B, C, T], timings)``."""
        from ..audio import load_audio

        params, kind = jobs[0].params, jobs[0].kind
        prompts = [p for j in jobs for p in j.params["prompts"]]
        common = dict(negative_prompt=[n for j in jobs for n in j.params["negatives"]],
                      seeds=[s for j in jobs for s in j.params["seeds"]], callback=tracker,
                      progress=False, **params["settings"])
        if kind in ("continue", "melody"):
            clip, sr = load_audio(self.storage / params["_upload"])     # [C, T]
            if kind == "continue":
                out = gen.generate_continuation(clip, sr, prompts, **common)
            else:
                out = gen.generate_with_melody(prompts, clip, sr, **common)
            return out.wav, out.timings
        if kind == "stream":
            chunks, begin = [], time.perf_counter()
            for chunk in gen.stream(prompts, chunk_seconds=self.settings.stream_chunk_s, **common):
                chunks.append(chunk)                                     # [B, C, t]
                self.relay.publish(jobs[0].id, chunk, gen.sample_rate)
            return torch.cat(chunks, dim=-1), {"total_s": time.perf_counter() - begin}
        out = gen.generate(prompts, **common)
        return out.wav, out.timings

    def _batch(self, job: Job, gen: MusicGenerator, tracker: _Tracker) -> dict[str, Any]:
        """A CSV table through BatchRunner into the job's folder (resumes after a restart)."""
        from ..batch import BatchRunner

        folder = self.storage / "batches" / job.id
        rows, done = job.params["rows"], [0]
        total = job.params["valid_rows"]                 # progress counts items, not steps

        def on_item(record: dict[str, Any]) -> None:
            done[0] += 1
            self.store.progress([job.id], done[0], total, lease=job.lease)

        runner = BatchRunner(gen, folder, max_batch_size=self.settings.max_batch_size,
                             progress=False, resume=True, on_item=on_item, callback=tracker)
        table = runner.run(rows)
        ok = int((table["status"] == "ok").sum())
        files = [f"batches/{job.id}/{Path(p).name}" for p in table["path"].dropna()]
        return dict(files=files, manifest=f"batches/{job.id}/manifest.jsonl", rows=len(table),
                    ok=ok, failed=len(table) - ok, sample_rate=gen.sample_rate,
                    audio_s=float(table["audio_s"].fillna(0).sum()), cached=False,
                    errors=[e for e in table["error"].dropna().tolist()][:20])
