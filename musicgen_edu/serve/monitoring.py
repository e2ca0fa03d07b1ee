"""Monitoring: Prometheus metrics, structured JSON logs and the request-id middleware.

Every HTTP request passes :class:`RequestLog` first::

    request id  <- the client's X-Request-ID (if it looks like one) or a new one; echoed back
    call the app (auth, limits, route)
    metrics     musicgen_http_requests_total{method, route, code} and the latency histogram,
                labelled by the route *template* (/v1/jobs/{job_id}), never the raw path
    one log line: method, route, status, milliseconds, owner, request id

Logs are structlog events rendered as JSON lines (or coloured lines in development). They
carry the key's *owner*, never the key, and prompts only at debug level (tracebacks
leave out the frames' local variables, where prompts live). The metric names
follow Prometheus' conventions (``_total`` counters, ``_seconds`` units); each app has its own
registry, so several apps (tests, a notebook) never clash.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from structlog.typing import FilteringBoundLogger

from .tracing import trace_id

__all__ = ["Metrics", "RequestLog", "configure_logging", "get_logger", "CONTENT_TYPE_LATEST"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Tracebacks as JSON without the frames' local variables: structlog's default shows them, and
# a worker frame's locals hold the prompts, which the logs carry only at debug level.
_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


def configure_logging(level: str = "info", json: bool = True) -> None:
    """Route structlog events to stderr as JSON lines (``json=False``: readable console lines)."""
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=False)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    _TRACEBACKS if json else structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),  # today's stderr
        cache_logger_on_first_use=False)


def get_logger() -> FilteringBoundLogger:
    """The service's logger (configure_logging makes it a filtering bound logger)."""
    return structlog.get_logger("musicgen_edu.serve")


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("musicgen_http_requests_total", "HTTP requests",
                                ["method", "route", "code"], registry=r)
        self.latency = Histogram("musicgen_http_request_duration_seconds", "HTTP latency",
                                 ["method", "route", "code"], registry=r)
        self.queue_depth = Gauge("musicgen_queue_depth", "Jobs waiting in the queue", registry=r)
        self.jobs = Gauge("musicgen_jobs", "Jobs by status", ["status"], registry=r)
        self.generation = Histogram("musicgen_generation_seconds", "Wall time of one run",
                                    ["kind"], buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
                                    registry=r)
        self.steps_per_s = Gauge("musicgen_steps_per_second", "Decoder steps/s of the last run",
                                 registry=r)
        self.audio = Counter("musicgen_audio_seconds_total", "Seconds of audio produced",
                             registry=r)
        self.batch = Histogram("musicgen_batch_size", "Prompts decoded together",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.cache_hits = Counter("musicgen_result_cache_hits_total",
                                  "Requests served from the result cache", registry=r)
        self.rate_limited = Counter("musicgen_rate_limited_total", "Requests refused with 429",
                                    registry=r)
        self.models_loaded = Gauge("musicgen_models_loaded", "Models held in memory", registry=r)
        self.gpu_memory = Gauge("musicgen_gpu_memory_bytes", "CUDA memory allocated",
                                ["device"], registry=r)

    def count_jobs(self, counts: dict[str, int]) -> None:
        for status, n in counts.items():
            self.jobs.labels(status).set(n)
        self.queue_depth.set(counts.get("queued", 0))

    def observe_run(self, kind: str, results: list[dict], seconds: float) -> None:
        self.generation.labels(kind).observe(seconds)
        self.audio.inc(sum(r.get("audio_s", 0) * len(r.get("files", [])) if kind != "batch"
                           else r.get("audio_s", 0) for r in results))
        if kind != "batch" and results:
            self.batch.observe(results[0]["batch_size"])
            rate = results[0]["timings"].get("steps_per_s")
            if rate:
                self.steps_per_s.set(rate)

    def render(self, counts: dict[str, int], models_loaded: int) -> bytes:
        """The text exposition format, with gauges refreshed now."""
        self.count_jobs(counts)
        self.models_loaded.set(models_loaded)
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                self.gpu_memory.labels(f"cuda:{i}").set(torch.cuda.memory_allocated(i))
        return generate_latest(self.registry)


class RequestLog:
    """ASGI middleware: request id, metrics and one structured log line per HTTP request."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self.log = get_logger()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        structlog.contextvars.bind_contextvars(request_id=request_id)
        traced = trace_id()                  # the request's span (tracing.py), when tracing is on
        if traced is not None:
            structlog.contextvars.bind_contextvars(trace_id=traced)
        scope.setdefault("state", {})["request_id"] = request_id
        status, start = 500, time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(seconds)
            self.log.info("request", method=scope["method"], route=route, path=scope["path"],
                          status=status, ms=round(seconds * 1000, 1),
                          owner=scope["state"].get("owner"))
            structlog.contextvars.unbind_contextvars("request_id", "trace_id")
