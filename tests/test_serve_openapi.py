"""The OpenAPI document is the service's contract (STYLE rule 24): schemathesis checks it.

schemathesis reads ``/openapi.json`` from the app in process (no sockets), generates requests
for every operation from the document (valid ones and invalid ones, other methods too) and
checks each answer: no 5xx, a documented status, the documented content type, headers and
body schema, 405 for undeclared methods, invalid requests refused. The app runs with
``workers=0``: accepted jobs stay queued, so nothing is generated and the pass measures the
API alone. Bounded and derandomized: the same cases on every run.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from test_serve import H, make_client

from musicgen_edu.serve import schemas
from musicgen_edu.serve.jobs import STATUSES, Job

EXAMPLES = 50            # per operation and phase
_SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                     suppress_health_check=list(HealthCheck))

# Checks left out per operation, each for a reason the document cannot change.
SKIP = {   # operation -> check names
    # schema-valid is not valid here: prompt or prompts (not both), a configured model, ranges
    # checked by GenerationConfig, an upload that is audio (or a CSV) with its extension
    **{f"POST /v1/{name}": ["positive_data_acceptance"]
       for name in ("generate", "continue", "melody", "batch")},
}


def _call(case, headers=None):
    """The request and every check but those SKIP leaves out for this operation."""
    names = SKIP.get(case.operation.label, [])
    return case.call_and_validate(headers=headers, excluded_checks=[
        getattr(schemathesis.checks, name) for name in names])


def _service_schema(tmp_path, monkeypatch, **overrides):
    """The service with auth on, a queue that never fills and no worker thread, once its
    default model is loaded (so /readyz is 200 and prompts are counted in tokens).

    Function scope: schemathesis ends the app's lifespan after each test, and a stopped
    service does not start again.
    """
    import os

    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)
    app = make_client(tmp_path, **{"workers": 0, "max_queue": 100_000, **overrides}).app
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)   # starts its lifespan
    svc = app.state.service
    deadline = time.monotonic() + 120
    while svc.settings.default_model not in svc.pool.loaded():
        assert svc.load_error is None and time.monotonic() < deadline, svc.load_error
        time.sleep(0.05)
    return loaded


@pytest.fixture
def api_schema(tmp_path, monkeypatch):
    return _service_schema(tmp_path, monkeypatch)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32's from_fixture reads ``item._nodeid``, which pytest 9.2 renamed
    (``item._id``); give it the attribute so the lazy schema runs on both."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@_SETTINGS
def test_every_answer_is_documented(case):
    """A user key: every operation, every default check (not_a_server_error,
    status_code_conformance, content_type_conformance, response_headers_conformance,
    response_schema_conformance, negative_data_rejection, unsupported_method, ...)."""
    _call(case, H["user"])


@schema.exclude(path_regex="^/(healthz|readyz|metrics)$").parametrize()
@settings(_SETTINGS, max_examples=5)
def test_without_a_key_every_v1_route_answers_401(case):
    response = _call(case)
    assert _as_expected(case, response, 401), (case.method, case.path, response.text)


@schema.include(method="POST").parametrize()
@settings(_SETTINGS, max_examples=5)
def test_a_viewer_key_cannot_submit_403(case):
    response = _call(case, H["viewer"])
    assert _as_expected(case, response, 403), (case.method, case.path, response.text)


def _as_expected(case, response, status: int) -> bool:
    """``status``; 405 for the methods the route lacks (schemathesis tries TRACE, PUT, ...)."""
    if case.method.upper() != case.operation.method.upper():
        return response.status_code == 405
    return response.status_code == status


# --- the limits: 413 from the middleware, 429 with Retry-After ---------------------------------
def test_413_and_429_answer_as_documented(tmp_path, monkeypatch):
    api = _service_schema(tmp_path, monkeypatch, max_body_bytes=1024, rate_limit_per_minute=1,
                          rate_limit_burst=2)
    generate, models = api["/v1/generate"]["POST"], api["/v1/models"]["GET"]
    too_big = generate.Case(body={"prompt": "x" * 1100}, media_type="application/json")
    assert too_big.call_and_validate(headers=H["user"]).status_code == 413
    codes = [models.Case().call_and_validate(headers=H["user"]).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


# --- finished jobs: the 200s of audio, batch files, events and the job view ---------------------
def test_finished_jobs_answer_as_documented(tmp_path, monkeypatch):
    """The fuzzing passes never see a finished job (workers=0); here one worker runs a short
    generate job and a batch job on the debug model, and each answer about them is checked."""
    from schemathesis.python import asgi

    api = _service_schema(tmp_path, monkeypatch, workers=1)

    def check(path, method="GET", **parts):
        response = api[path][method].Case(**parts).call_and_validate(headers=H["user"])
        assert response.status_code in (200, 202), (path, response.text)
        return response

    gen = check("/v1/generate", "POST", body={"prompt": "lo-fi piano", "duration": 0.2,
                                              "seed": 1}, media_type="application/json")
    with asgi.get_client(api.app) as client:
        batch = client.post("/v1/batch", headers=H["user"], files={
            "file": ("rows.csv", b"prompt,duration,seed\nfirst,0.2,1\n", "text/csv")})
    assert batch.status_code == 202, batch.text
    ids = [gen.json()["id"], batch.json()["id"]]
    deadline = time.monotonic() + 120
    while any(check("/v1/jobs/{job_id}", path_parameters={"job_id": i}).json()["status"]
              != "succeeded" for i in ids):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    check("/v1/jobs", query={"limit": 10})
    types = {check("/v1/jobs/{job_id}/audio", path_parameters={"job_id": ids[0]},
                   query={"format": f}).headers["content-type"][0] for f in ("wav", "flac", "mp3")}
    assert types == {"audio/wav", "audio/flac", "audio/mpeg"}
    result = check("/v1/jobs/{job_id}", path_parameters={"job_id": ids[1]}).json()["result"]
    clip = result["files"][0].rsplit("/", 1)[1]
    for name, kind in [("manifest.jsonl", "application/jsonl"), (clip, "audio/wav")]:
        response = check("/v1/jobs/{job_id}/files/{name}",
                         path_parameters={"job_id": ids[1], "name": name})
        assert response.headers["content-type"] == [kind]
    events = check("/v1/jobs/{job_id}/events", path_parameters={"job_id": ids[0]})
    assert events.headers["content-type"][0].startswith("text/event-stream")
    assert "event: done" in events.text


# --- every answer has a schema, every error the service gives is listed --------------------------
def _document(tmp_path, monkeypatch) -> dict:
    import os

    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)
    return make_client(tmp_path, workers=0).app.openapi()     # no lifespan: the document only


def test_every_operation_has_a_schema_for_its_success_answer(tmp_path, monkeypatch):
    doc, missing = _document(tmp_path, monkeypatch), []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            success = [code for code in op["responses"] if code.startswith("2")]
            assert success, (method, path)
            for code in success:
                content = op["responses"][code].get("content", {})
                if not content or not all(body.get("schema") for body in content.values()):
                    missing.append(f"{method.upper()} {path} {code}")
    assert missing == []
    jobs = doc["paths"]["/v1/jobs/{job_id}"]
    assert jobs["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobView"}
    for path, model in [("/v1/jobs", "JobList"), ("/healthz", "Health"), ("/readyz", "Ready"),
                        ("/v1/prompts/validate", "PromptCheck"), ("/v1/models", "ModelList")]:
        op = next(iter(doc["paths"][path].values()))
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] \
            .endswith(f"/{model}"), path


def test_every_error_the_service_gives_is_documented(tmp_path, monkeypatch):
    """The role check answers 401, 422 (a repeated query parameter) and 429 on every /v1 route,
    403 where the route needs more than a viewer (every method but GET); a route about one job
    answers 404. Each is documented with the ErrorResponse body."""
    doc = _document(tmp_path, monkeypatch)
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            expected = set()
            if path.startswith("/v1/"):
                expected |= {"401", "422", "429"} | ({"403"} if method != "get" else set())
            if "{job_id}" in path:
                expected.add("404")
            if path == "/metrics":                  # an admin key when metrics_auth is on
                expected |= {"401", "403", "422", "429"}
            if path == "/readyz":
                expected.add("503")
            responses = op["responses"]
            assert expected <= set(responses), (method, path, expected - set(responses))
            for code in expected - {"503"}:
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, code)
    assert doc["paths"]["/healthz"]["get"]["responses"].keys() == {"200"}


# --- the response models follow what the routes build ------------------------------------------
def test_job_view_has_every_field_of_job_public():
    job = Job(owner="lab1", kind="generate", model="debug", params={"prompts": ["x"]})
    assert set(schemas.JobView.model_fields) == set(job.public())
    assert schemas.JobView.model_fields["status"].annotation.__args__ == STATUSES


def test_prompt_check_has_every_field_of_the_report():
    from musicgen_edu.prompt import PromptReport

    fields = {f.name for f in dataclasses.fields(PromptReport)} | {"ok"}
    assert set(schemas.PromptCheck.model_fields) == fields
