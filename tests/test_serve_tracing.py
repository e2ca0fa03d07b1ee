"""Tracing (serve/tracing.py): the spans of a request, through the queue, in the worker.

The service runs in process on the offline ``debug`` model with its own SDK provider and an
in-memory exporter (no global provider: each app gets its own); one test exports over real
OTLP/HTTP to a collector stand-in on loopback.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import NoOpTracer, SpanKind, StatusCode
from test_serve import KEYS, H, clean_env, wait_job, wait_ready  # noqa: F401  (clean_env: autouse)

from musicgen_edu.errors import ConfigError, GenerationError
from musicgen_edu.serve import create_app
from musicgen_edu.serve.jobs import Job
from musicgen_edu.serve.tracing import HttpSpans, Tracing, in_memory_provider
from musicgen_edu.settings import load_settings

BODY = {"duration": 0.3, "temperature": 0.9}    # one batch_key for every job posted here
STAGES = {"text encode", "decode loop", "audio decode"}


def settings(tmp_path, **overrides):
    values = dict(default_model="debug", storage_dir=tmp_path / "store", auth_enabled=True, api_keys=KEYS,
                  rate_limit_per_minute=0, batch_wait_s=0.0, log_json=True, cors_origins=[])
    return load_settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A service that waits 0.5 s for batch-mates, tracing into memory: (client, exporter)."""
    provider, exporter = in_memory_provider()
    app = create_app(settings(tmp_path_factory.mktemp("tracing"), batch_wait_s=0.5),
                     tracer_provider=provider)
    with TestClient(app) as client:
        wait_ready(client)
        yield client, exporter


def post(client, prompt: str, seed: int, headers=None) -> str:
    r = client.post("/v1/generate", json={**BODY, "prompt": prompt, "seed": seed},
                    headers={**H["user"], **(headers or {})})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def spans_of(exporter, job_id: str, timeout: float = 30.0) -> list:
    """Every finished span, once the run of ``job_id`` has ended (its batch span is exported
    last, after the job's status reads succeeded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = exporter.get_finished_spans()
        if any(s.name == "worker batch" and job_id in s.attributes["job.ids"] for s in spans):
            return list(spans)
        time.sleep(0.02)
    raise AssertionError(f"no worker batch span for job {job_id}")


def request_span(spans, job_id: str):
    """The POST that queued ``job_id``: the SERVER span whose trace holds its queue wait."""
    wait = one(spans, "queue wait", job_id)
    return next(s for s in spans if s.kind == SpanKind.SERVER
                and s.context.span_id == wait.parent.span_id)


def one(spans, name: str, job_id: str):
    found = [s for s in spans if s.name == name and s.attributes.get("job.id") == job_id]
    assert len(found) == 1, (name, job_id, [s.name for s in spans])
    return found[0]


def children(spans, parent) -> list:
    return sorted((s for s in spans if s.parent and s.parent.span_id == parent.context.span_id),
                  key=lambda s: s.start_time)


def test_one_request_is_one_trace_from_http_to_store(traced):
    client, exporter = traced
    job = wait_job(client, post(client, "aurora-kazoo-11", 1))
    assert job["status"] == "succeeded" and job["result"]["batch_jobs"] == 1
    spans = spans_of(exporter, job["id"])
    request = request_span(spans, job["id"])
    assert request.name == "POST /v1/generate" and request.parent is None
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["url.path"] == request.attributes["http.route"] == "/v1/generate"
    assert request.attributes["http.response.status_code"] == 202
    trace_id = request.context.trace_id
    # queue wait, worker batch, encode file and store: children of the request, in its trace
    kids = children(spans, request)
    assert [s.name for s in kids] == ["queue wait", "worker batch", "encode file", "store"]
    assert all(s.context.trace_id == trace_id for s in kids)
    wait, batch = kids[0], kids[1]
    assert wait.start_time == int(job["created_at"] * 1e9)       # from the job's record
    assert wait.end_time == int(job["started_at"] * 1e9) <= batch.start_time
    assert [link.context.span_id for link in batch.links] == [request.context.span_id]
    assert batch.attributes["job.batch_size"] == 1 and batch.attributes["musicgen.model"] == "debug"
    (generate,) = children(spans, batch)
    assert generate.name == "generate" and generate.attributes["musicgen.prompt_count"] == 1
    stages = children(spans, generate)
    assert {s.name for s in stages} == STAGES and stages[-1].name == "audio decode"
    loop = next(s for s in stages if s.name == "decode loop")
    assert loop.attributes["musicgen.decode.steps"] == job["progress"]["total"]
    assert all(s.context.trace_id == trace_id for s in stages)


def test_log_lines_carry_the_trace_id_of_their_request(traced, capsys):
    """The API's request line and the worker's run lines name the trace: a log line leads to
    its trace in the collector."""
    client, exporter = traced
    capsys.readouterr()
    job = wait_job(client, post(client, "trace-log-77", 77))
    request = request_span(spans_of(exporter, job["id"]), job["id"])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    wanted = format(request.context.trace_id, "032x")
    posted = [e for e in lines if e["event"] == "request" and e["method"] == "POST"]
    ran = [e for e in lines if e["event"] == "run started" and job["id"] in e["jobs"]]
    assert [e.get("trace_id") for e in posted] == [wanted]
    assert [e.get("trace_id") for e in ran] == [wanted]
    polled = [e for e in lines if e["event"] == "request" and e["method"] == "GET"]
    assert polled and all(e["trace_id"] != wanted for e in polled)   # each request its own


def test_a_websocket_stream_is_one_span_holding_its_job(traced):
    client, exporter = traced
    with client.websocket_connect("/v1/stream", headers=H["user"]) as ws:
        ws.send_json({**BODY, "prompt": "socket-span-5", "seed": 5})
        while True:                      # start, the audio chunks, then done
            message = ws.receive()
            if message.get("text") and json.loads(message["text"])["type"] == "done":
                break
    done = json.loads(message["text"])
    assert done["status"] == "succeeded"
    spans = spans_of(exporter, done["id"])
    (socket,) = [s for s in spans if s.name == "WS /v1/stream"
                 and any(k.attributes.get("job.id") == done["id"] for k in children(spans, s))]
    assert socket.parent is None and "http.request.method" not in socket.attributes
    assert [s.name for s in children(spans, socket)] == ["queue wait", "worker batch",
                                                        "encode file", "store"]


def test_a_batch_of_two_requests_is_one_span_linked_to_both(traced):
    client, exporter = traced
    ids = [post(client, "basalt-oboe-22", 2), post(client, "cobalt-sitar-33", 3)]
    jobs = [wait_job(client, i) for i in ids]
    assert [j["result"]["batch_jobs"] for j in jobs] == [2, 2], jobs
    spans = spans_of(exporter, ids[1])
    (batch,) = [s for s in spans if s.name == "worker batch" and ids[0] in s.attributes["job.ids"]]
    assert batch.parent is None and batch.attributes["job.batch_size"] == 2
    requests = [request_span(spans, i) for i in ids]
    assert {link.context.span_id for link in batch.links} == {r.context.span_id for r in requests}
    assert {link.context.trace_id for link in batch.links} == {r.context.trace_id for r in requests}
    (generate,) = children(spans, batch)
    assert generate.attributes["musicgen.prompt_count"] == 2
    assert {s.name for s in children(spans, generate)} == STAGES
    for job_id, request in zip(ids, requests):       # each job's own spans in its own trace
        for name in ("queue wait", "encode file", "store"):
            span = one(spans, name, job_id)
            assert span.parent.span_id == request.context.span_id
            assert span.context.trace_id == request.context.trace_id


def test_a_caller_trace_continues_and_no_span_carries_prompt_text(traced):
    client, exporter = traced
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    job_id = post(client, "damask-theremin-44", 4,
                  headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"})
    spans = spans_of(exporter, job_id)
    request = request_span(spans, job_id)
    assert f"{request.context.trace_id:032x}" == caller
    assert f"{request.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert len(spans) > 20
    for span in spans:
        text = span.to_json()
        for word in ("aurora-kazoo", "basalt-oboe", "cobalt-sitar", "damask-theremin"):
            assert word not in text, (span.name, text)


def test_a_failure_is_marked_by_its_type_without_its_message(traced, monkeypatch):
    client, exporter = traced
    gen = client.app.state.service.pool.get("debug")

    def broken(prompts, **kwargs):
        raise GenerationError(f"cannot play {prompts[0]!r}")     # a message quoting the prompt

    monkeypatch.setattr(gen, "generate", broken)
    job = wait_job(client, post(client, "hush-celesta-88", 8))
    assert job["status"] == "failed" and "hush-celesta-88" in job["error"]
    spans = spans_of(exporter, job["id"])
    (batch,) = [s for s in spans if s.name == "worker batch" and job["id"] in s.attributes["job.ids"]]
    (generate,) = children(spans, batch)
    assert generate.status.status_code == StatusCode.ERROR
    assert generate.status.description == generate.attributes["error.type"] == "GenerationError"
    assert batch.status.status_code == StatusCode.ERROR and not generate.events
    assert not any("hush-celesta" in s.to_json() for s in spans)


def test_a_job_stored_without_a_trace_context_is_traced_from_the_worker(traced):
    """A row written before tracing (no ``_trace`` in its params) still runs, and its spans
    hang under its worker batch span, a trace of its own."""
    client, exporter = traced
    svc = client.app.state.service
    done = wait_job(client, post(client, "ember-lute-55", 5))
    params = {k: v for k, v in svc.store.get(done["id"]).params.items() if k != "_trace"}
    assert "_trace" in svc.store.get(done["id"]).params
    old = svc.store.add(Job(owner=svc.store.get(done["id"]).owner, kind="generate",
                            model="debug", params=params))
    assert wait_job(client, old.id)["status"] == "succeeded"
    spans = spans_of(exporter, old.id)
    (batch,) = [s for s in spans if s.name == "worker batch" and old.id in s.attributes["job.ids"]]
    assert batch.parent is None and batch.links == ()
    for name in ("queue wait", "encode file", "store"):
        assert one(spans, name, old.id).parent.span_id == batch.context.span_id


def test_tracing_is_off_without_an_endpoint(tmp_path):
    app = create_app(settings(tmp_path))
    svc = app.state.service
    assert svc.settings.otel_endpoint is None
    assert not svc.tracing.enabled and isinstance(svc.tracing.tracer, NoOpTracer)
    assert svc.worker.tracing is svc.tracing
    assert HttpSpans not in [m.cls for m in app.user_middleware]
    with svc.tracing.tracer.start_as_current_span("x") as span:
        assert not span.is_recording()
    with TestClient(app) as client:
        wait_ready(client)
        job = wait_job(client, post(client, "fjord-harp-66", 6))
        assert job["status"] == "succeeded"
        assert "_trace" not in svc.store.get(job["id"]).params     # nothing carried
        assert svc.pool.get("debug").stages is None                # no stage hook installed


@pytest.mark.parametrize("value", ["localhost:4318", "not a url", "ftp://collector:4318",
                                   "http://", "http://collector:99999"])
def test_an_invalid_endpoint_is_a_settings_error_naming_it(value, tmp_path):
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, otel_endpoint=value)
    text = str(err.value)
    assert f"otel_endpoint={value!r} (from argument)" in text
    assert "http://localhost:4318" in text and "unset" in text


def test_an_endpoint_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_OTEL_ENDPOINT", "collector:4318")
    with pytest.raises(ConfigError, match="environment variable MUSICGEN_OTEL_ENDPOINT"):
        settings(tmp_path)
    monkeypatch.setenv("MUSICGEN_OTEL_ENDPOINT", "")                 # empty: off, like unset
    assert settings(tmp_path).otel_endpoint is None
    monkeypatch.setenv("MUSICGEN_OTEL_ENDPOINT", "https://otel.example:4318")
    assert settings(tmp_path).otel_endpoint == "https://otel.example:4318"


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stand-in: keeps each POST's path, content type and body."""

    received: list[tuple[str, str, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otel_endpoint_exports_over_otlp_http(tmp_path):
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        app = create_app(settings(tmp_path, otel_endpoint=endpoint))
        assert app.state.service.tracing.owned
        with TestClient(app) as client:
            wait_ready(client)
            assert wait_job(client, post(client, "garnet-viol-77", 7))["status"] == "succeeded"
        # leaving the client stopped the service, which flushed the batch processor
    finally:
        collector.shutdown()
    assert _Collector.received and {r[:2] for r in _Collector.received} == {
        ("/v1/traces", "application/x-protobuf")}
    names, services = set(), set()
    for _, _, body in _Collector.received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"}
            names |= {s.name for scope in resource_spans.scope_spans for s in scope.spans}
    assert services == {"musicgen-edu"}
    assert {"POST /v1/generate", "queue wait", "worker batch", "generate", "encode file",
            "store"} | STAGES <= names


def test_tracing_from_settings_prefers_a_given_provider():
    provider, _ = in_memory_provider()
    given = Tracing.from_settings("http://127.0.0.1:4318", provider)
    assert given.provider is provider and given.enabled and not given.owned
    assert not Tracing.from_settings(None).enabled
