"""Tracing: the path of one request as OpenTelemetry spans, from the HTTP call to the stored job.

The spans of one ``POST /v1/generate`` (one trace; a batch of several jobs: below)::

    POST /v1/generate          SERVER span per HTTP request (HttpSpans)           app.py
    ├── queue wait             the job's created_at -> a worker claimed it        worker.py
    ├── worker batch           one run of the worker: job.batch_size, links to every job
    │   └── generate           musicgen.model, musicgen.prompt_count
    │       ├── text encode    T5 + projection, then the decoder's cross-attention keys/values
    │       ├── decode loop    every decoder step of a window (musicgen.decode.steps)
    │       └── audio decode   EnCodec: tokens -> waveform
    ├── encode file            the job's clips written as WAV files
    └── store                  the result in the job store (finish), its files settled

**Context through the queue.** ``submit`` writes the request span's W3C ``traceparent`` into the
job (``params["_trace"]``: stored with the job as JSON, hidden from clients; a job stored
before tracing has none and is traced from the worker on). The worker extracts it, so the
per-job spans (``queue wait``, ``encode file``, ``store``) are children of their request
whichever batch served it. A run serves several jobs, so ``worker batch`` follows the
messaging conventions for batches: a link to each job's context; it is the child of the job's
context when it serves one job, and a trace of its own when it serves several.

**Stages** come from the generator's own labels (``MusicGenerator._stage``; the profiler uses
the same hook, metrics/breakdown.py): the pooled generator's ``stages`` is set to
:func:`_stage_spans`, which maps them to spans of the run traced in this thread. A span per
decoder step would be thousands per clip: the steps of a window are one ``decode loop`` span.

**Off by default.** Without ``otel_endpoint`` (and no provider passed) no SDK is imported, no
middleware or stage hook is installed, and the worker's spans come from the API's no-op tracer.
Spans carry ids, counts and the model name, never prompt text; an error is recorded as its
type (``error.type``), not its message, which may quote the request.

Follows the OpenTelemetry Python docs (https://opentelemetry.io/docs/languages/python/
instrumentation/ and .../exporters/: a TracerProvider with a BatchSpanProcessor and an
OTLP/HTTP exporter, a ``service.name`` resource), the semantic conventions for HTTP server
spans (https://opentelemetry.io/docs/specs/semconv/http/http-spans/: span name
``{method} {http.route}``, ``http.request.method``, ``url.path``, ``http.route``,
``http.response.status_code``, ERROR for 5xx) and for messaging batches
(https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/: links), with W3C
Trace Context (https://www.w3.org/TR/trace-context/) through the queue.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from .jobs import Job

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ..generator import MusicGenerator

__all__ = ["Tracing", "HttpSpans", "otlp_provider", "in_memory_provider", "format_trace",
           "trace_params", "trace_id", "job_context", "SERVICE_NAME"]

SERVICE_NAME = "musicgen-edu"            # the service.name resource of exported spans
_TRACER = "musicgen_edu.serve"           # the instrumentation scope
_W3C = TraceContextTextMapPropagator()   # traceparent (+ tracestate); no baggage in the queue
_FREE = contextlib.nullcontext()         # what an untraced stage or a disabled span costs
_SPANS = {"text encoding": "text encode", "audio decode": "audio decode"}  # stage -> span


def otlp_provider(endpoint: str, service_name: str = SERVICE_NAME) -> TracerProvider:
    """An SDK provider exporting in batches over OTLP/HTTP to ``endpoint``/v1/traces.

    Args:
        endpoint: the collector's OTLP/HTTP address, e.g. ``http://localhost:4318`` (as in
            ``OTEL_EXPORTER_OTLP_ENDPOINT``); a URL already ending in ``/v1/traces`` is kept.
        service_name: the ``service.name`` resource attribute.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .. import __version__

    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else (
        endpoint.rstrip("/") + "/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                       "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


def in_memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """An SDK provider keeping finished spans in memory (tests, a notebook): pass it as
    ``create_app(..., tracer_provider=provider)``; ``exporter.get_finished_spans()`` reads them.

    Spans are exported as they end (SimpleSpanProcessor), so a test reads them at once. No
    global provider is set: OpenTelemetry refuses to replace one, and each app has its own.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def format_trace(spans: Sequence[Any], job_id: str) -> str:
    """The trace of ``job_id``'s request as an indented tree, each span with its milliseconds
    (lecture 09; ``spans``: ``exporter.get_finished_spans()`` of :func:`in_memory_provider`)."""
    mine = next((s for s in spans if (s.attributes or {}).get("job.id") == job_id), None)
    if mine is None:
        return f"no finished span of job {job_id} yet"
    tree = sorted((s for s in spans if s.context.trace_id == mine.context.trace_id),
                  key=lambda s: s.start_time)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in tree:
            if (span.parent.span_id if span.parent else None) == parent:
                ms = (span.end_time - span.start_time) / 1e6
                lines.append(f"{'    ' * depth}{span.name:<{32 - 4 * depth}} {ms:9.1f} ms")
                walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def trace_params() -> dict[str, Any]:
    """What ``submit`` adds to a job's params: the current span's context as W3C headers
    (``{"_trace": {"traceparent": ...}}``), or nothing when no span is recording."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return {"_trace": carrier} if carrier else {}


def trace_id(context: Context | None = None) -> str | None:
    """The 32-hex-digit trace id of ``context`` (default: the current span), as log lines carry
    it (``trace_id``) so a log line leads to its trace; None when nothing is traced."""
    span_context = trace.get_current_span(context).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def job_context(job: Job) -> Context | None:
    """The context ``submit`` stored in ``job`` (its request's span); None if it has none."""
    context = _W3C.extract(job.params.get("_trace") or {})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


class _StageRun:
    """The generator's stages during one traced ``generate`` span, as its child spans.

    ``decoder step`` opens a ``decode loop`` span (counting steps) that stays open across the
    steps; ``sampling`` and ``codebook pattern`` run inside it or in ``generate`` itself; the
    next ``text encoding`` or ``audio decode`` (or the end of the run) closes it.
    """

    def __init__(self, tracer: trace.Tracer):
        self.tracer, self.steps = tracer, 0
        self.loop: trace.Span | None = None       # the open decode loop span

    def __call__(self, stage: str) -> contextlib.AbstractContextManager[Any]:
        if stage == "decoder step":
            if self.loop is None:
                self.loop, self.steps = self.tracer.start_span("decode loop"), 0
            self.steps += 1
            return _FREE
        name = _SPANS.get(stage)
        if name is None:
            return _FREE
        self.close_loop()
        return _span(self.tracer, name)

    def close_loop(self) -> None:
        if self.loop is not None:
            self.loop.set_attribute("musicgen.decode.steps", self.steps)
            self.loop.end()
            self.loop = None


_RUN: ContextVar[_StageRun | None] = ContextVar("musicgen_stage_run", default=None)


def _stage_spans(stage: str) -> contextlib.AbstractContextManager[Any]:
    """A traced generator's ``stages``: the stage as a span of the run traced in this thread
    (worker threads share a pooled generator), nothing outside a traced run."""
    run = _RUN.get()
    return _FREE if run is None else run(stage)


class HttpSpans:
    """ASGI middleware: one SERVER span per HTTP request, continuing a caller's ``traceparent``.

    Named ``{method} {route template}`` once routing has matched (``POST /v1/generate``); the
    raw path is ``url.path``. A WebSocket is one span for the socket's life, ``WS /v1/stream``,
    so its job's spans (queue wait, generate, ...) join the stream's trace.
    """

    def __init__(self, app, tracer: trace.Tracer):
        self.app, self.tracer = app, tracer

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        method = scope["method"] if scope["type"] == "http" else "WS"
        parent = _W3C.extract({k.decode("latin-1"): v.decode("latin-1")
                               for k, v in scope["headers"]})
        attributes = {"url.path": scope["path"], "url.scheme": scope.get("scheme", "http")}
        if scope["type"] == "http":
            attributes["http.request.method"] = method
        with self.tracer.start_as_current_span(
                method, context=parent, kind=SpanKind.SERVER, record_exception=False,
                set_status_on_exception=False, attributes=attributes) as span:

            async def send_status(message):
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            except Exception as exc:
                _failed(span, exc)
                raise
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


def _prompts(jobs: Sequence[Job]) -> int:
    """Prompts decoded together (a batch-table job: its rows run in its own batches)."""
    return sum(len(job.params.get("prompts", [None])) for job in jobs)


def _failed(span: trace.Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``'s type: its message may quote a prompt."""
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


@contextlib.contextmanager
def _span(tracer: trace.Tracer, name: str, context: Context | None = None,
          attributes: Attributes = None, links: Sequence[Link] = ()) -> Iterator[trace.Span]:
    """A current span that records a failure by its type alone (the SDK's default records the
    exception's message, which may quote a prompt)."""
    with tracer.start_as_current_span(name, context=context, attributes=attributes, links=links,
                                      record_exception=False,
                                      set_status_on_exception=False) as span:
        try:
            yield span
        except Exception as exc:
            _failed(span, exc)
            raise


class Tracing:
    """The service's tracer (one per app, kept on the Service): on with a provider, else no-op.

    Args:
        provider: an SDK ``TracerProvider`` (:func:`otlp_provider`, :func:`in_memory_provider`);
            None: tracing is off (the API's no-op tracer; nothing else installed).
        owned: shut the provider down (flushing its spans) when the service stops.
    """

    def __init__(self, provider: trace.TracerProvider | None = None, owned: bool = False):
        self.provider, self.owned = provider, owned
        self.enabled = provider is not None
        self.tracer = provider.get_tracer(_TRACER) if provider else trace.NoOpTracer()

    @classmethod
    def from_settings(cls, endpoint: str | None,
                      provider: trace.TracerProvider | None = None) -> Tracing:
        """``provider`` if given; else OTLP export to ``endpoint`` (settings.otel_endpoint);
        else off."""
        if provider is None and endpoint:
            return cls(otlp_provider(endpoint), owned=True)
        return cls(provider)

    def instrument(self, app) -> None:
        """Add the HTTP server spans to ``app`` (outermost middleware); nothing when off."""
        if self.enabled:
            app.add_middleware(HttpSpans, tracer=self.tracer)

    def shutdown(self) -> None:
        """Flush and stop an exporter this object made (at the service's stop)."""
        if self.owned and self.provider is not None:
            self.provider.shutdown()  # type: ignore[attr-defined]  # the SDK provider's

    @contextlib.contextmanager
    def batch(self, jobs: Sequence[Job]) -> Iterator[None]:
        """The ``worker batch`` span around one run of ``jobs``, with their ``queue wait``."""
        if not self.enabled:
            yield
            return
        contexts = [job_context(job) for job in jobs]
        links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts if c]
        parent = contexts[0] if len(jobs) == 1 and contexts[0] else Context()   # Context(): root
        attributes: Attributes = {
            "job.ids": [j.id for j in jobs], "job.kind": jobs[0].kind, "job.batch_jobs": len(jobs),
            "job.batch_size": _prompts(jobs), "musicgen.model": jobs[0].model}
        with _span(self.tracer, "worker batch", parent, attributes, links):
            for job, context in zip(jobs, contexts):      # each in its own job's trace
                claimed = job.started_at if job.started_at is not None else time.time()
                self.tracer.start_span(
                    "queue wait", context=context, start_time=int(job.created_at * 1e9),
                    attributes={"job.id": job.id, "job.attempts": job.attempts},
                ).end(end_time=int(claimed * 1e9))
            yield

    @contextlib.contextmanager
    def generate(self, gen: MusicGenerator, jobs: Sequence[Job]) -> Iterator[None]:
        """The ``generate`` span around decoding ``jobs``, with the generator's stages inside."""
        if not self.enabled:
            yield
            return
        if gen.stages is None:   # generator.py declares it None: any stage -> context callable
            gen.stages = _stage_spans  # type: ignore[assignment]
        with _span(self.tracer, "generate", attributes={
                "musicgen.model": jobs[0].model, "musicgen.prompt_count": _prompts(jobs),
                "job.kind": jobs[0].kind}) as span:
            run = _StageRun(self.tracer)
            token = _RUN.set(run)
            try:
                yield
            except BaseException as stop:   # an error is marked by _span; the worker's cancel
                if not isinstance(stop, Exception):         # or shutdown signal is no error
                    span.set_attribute("musicgen.stopped", str(stop))
                raise
            finally:
                run.close_loop()
                _RUN.reset(token)

    def job_span(self, job: Job, name: str) -> contextlib.AbstractContextManager[Any]:
        """A span of one job's own (``encode file``, ``store``) in its request's trace."""
        if not self.enabled:
            return _FREE
        return _span(self.tracer, name, job_context(job), {"job.id": job.id})

    def failed(self, exc: BaseException) -> None:
        """Mark the current span (the worker batch) failed by ``exc``."""
        if self.enabled:
            _failed(trace.get_current_span(), exc)
