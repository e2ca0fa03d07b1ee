"""``musicgen-edu worker``: generation in a process of its own, no HTTP API.

The same :class:`~musicgen_edu.serve.worker.Worker` as inside ``musicgen-edu serve``, on a
Redis store (``store = "redis"``) that API replicas started with ``serve --workers 0`` fill::

    API replicas (serve --workers 0)      Redis                 workers (this module)
    POST /v1/generate -> store.add  ->  queue, job hashes  ->  store.claim -> generate -> finish
    WS /v1/stream     <- relay      <-  chunk streams      <-  relay.publish

What it runs, start to stop:

* **start**: settle jobs whose lease ran out (a worker that died), load the default model
  in a thread, start ``workers`` generation threads and the lease heartbeat;
* **probes and metrics** on ``worker_port`` (0 = none): ``GET /healthz`` 200 while the
  process runs, ``GET /readyz`` 200 once the default model is loaded and every thread is
  alive (503 before, with the reason), ``GET /metrics`` its own Prometheus metrics (runs,
  batch sizes, steps/s, audio seconds, jobs by status);
* **SIGTERM / Ctrl-C**: take no new jobs, let running ones finish for ``shutdown_grace_s``,
  then hand them back (re-queued under a graceful interruption: another worker takes them at
  once, no ``max_attempts`` counted) and exit 0. ``kill -9`` loses nothing either: the jobs'
  leases run out and another worker re-runs them (redis_store.py).
"""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import ConfigError
from ..settings import Settings
from .monitoring import CONTENT_TYPE_LATEST, Metrics, configure_logging, get_logger
from .pool import ModelPool
from .relay import RedisRelay
from .stores import open_store
from .tracing import Tracing
from .worker import Worker

__all__ = ["WorkerProcess", "run_worker"]

log = get_logger()


class WorkerProcess:
    """A :class:`Worker` with its store, model pool, metrics and probe server."""

    def __init__(self, settings: Settings):
        if settings.store != "redis":
            raise ConfigError(f"musicgen-edu worker needs a shared store: store='redis' "
                              f"(MUSICGEN_STORE=redis, MUSICGEN_REDIS_URL), got "
                              f"store={settings.store!r}. With the SQLite store the worker "
                              "runs inside musicgen-edu serve (setting workers).")
        self.settings, self.metrics = settings, Metrics()
        self.store, self.pool = open_store(settings), ModelPool(settings)
        self.tracing = Tracing.from_settings(settings.otel_endpoint)
        self.worker = Worker(settings, self.store, self.pool, self.metrics, self.tracing,
                             RedisRelay(settings.redis_url, settings.redis_prefix))
        self.load_error: str | None = None
        self.stopped = threading.Event()
        self.http: ThreadingHTTPServer | None = None

    def ready(self) -> tuple[bool, str]:
        """``/readyz``: the default model loaded and every generation thread alive."""
        if self.load_error is not None:
            return False, f"the default model failed to load: {self.load_error}"
        if self.settings.default_model not in self.pool.loaded():
            return False, f"loading {self.settings.default_model}"
        if not self.worker.alive():
            return False, "a worker thread has stopped"
        return True, self.settings.default_model

    def _load_default(self) -> None:
        try:
            self.pool.get(self.settings.default_model)
        except Exception as exc:  # reported by /readyz
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("default model failed to load", error=self.load_error)

    def start(self) -> None:
        moved = self.store.requeue_running(self.settings.max_attempts)
        log.info("worker starting", model=self.settings.default_model, requeued=moved,
                 threads=self.settings.workers, port=self.settings.worker_port)
        threading.Thread(target=self._load_default, name="musicgen-load", daemon=True).start()
        self.worker.start()
        if self.settings.worker_port:
            self.http = ThreadingHTTPServer((self.settings.api_host, self.settings.worker_port),
                                            _handler(self))
            threading.Thread(target=self.http.serve_forever, name="musicgen-probes",
                             daemon=True).start()

    def stop(self) -> None:
        """Finish or hand back running jobs (``shutdown_grace_s``), then close everything."""
        log.info("worker stopping", running=len(self.worker.held))
        self.worker.stop(self.settings.shutdown_grace_s)
        if self.http is not None:
            self.http.shutdown()
        self.tracing.shutdown()
        self.store.close()
        self.stopped.set()
        log.info("worker stopped")


def _handler(process: WorkerProcess) -> type[BaseHTTPRequestHandler]:
    """The probe server's requests: /healthz, /readyz, /metrics; anything else 404."""

    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = process.metrics.render(process.store.counts(), len(process.pool.loaded()))
                return self._answer(200, body, CONTENT_TYPE_LATEST)
            if self.path == "/healthz":
                return self._json(200, {"status": "ok"})
            if self.path == "/readyz":
                ok, detail = process.ready()
                return self._json(200 if ok else 503, {"status": "ready" if ok else "not ready",
                                                       "detail": detail})
            self._json(404, {"detail": f"no such path: {self.path[:100]}"})

        def _json(self, status: int, body: dict) -> None:
            self._answer(status, json.dumps(body).encode(), "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:   # probes every few seconds: no log line each
            pass

    return Probes


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGTERM or Ctrl-C (``musicgen-edu worker``)."""
    configure_logging(settings.log_level, settings.log_json)
    process = WorkerProcess(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    process.start()
    stop.wait()
    process.stop()
