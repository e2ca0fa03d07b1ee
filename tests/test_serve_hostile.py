"""Hostile and careless requests at the service's edge: each is refused with a clear 4xx.

One test per finding of the service's security review (issue #24) that concerns what a request
may carry: unbounded texts (an out-of-memory kill), text that is not Unicode, non-finite and
mistyped numbers, file names with a NUL, repeated query parameters, auth before body parsing,
configured keys that did not turn auth on, and prompts in error logs. The app runs its real
worker on the offline debug model (tests/test_serve.py's helpers); nothing is mocked.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from test_serve import KEYS, H, make_client, wait_job, wait_ready, wav_bytes

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("hostile")) as c:
        wait_ready(c)
        yield c


def post(client, body, who="user"):
    return client.post("/v1/generate", json=body, headers=H[who])


# --- 1. every text is bounded in characters and tokens, before the text encoder ---------------
def test_an_unbounded_negative_prompt_is_refused_before_it_is_queued(client):
    before = len(client.get("/v1/jobs", headers=H["user"]).json()["jobs"])
    r = post(client, {"prompt": "x", "negative_prompt": "n" * 20000, "duration": 0.5})
    assert r.status_code == 422, r.text
    assert "negative_prompt" in r.json()["detail"] and "2000" in r.json()["detail"]
    assert len(client.get("/v1/jobs", headers=H["user"]).json()["jobs"]) == before


def test_texts_within_the_characters_but_over_the_token_bound_are_refused(client):
    # the debug model's ByT5 tokenizer: one token per UTF-8 byte, so 1500 characters are 1501
    for body, name in [({"prompt": "x", "negative_prompt": "n" * 1500}, "negative_prompt"),
                       ({"prompt": "p" * 1500}, "prompt 0"),
                       ({"prompts": ["ok", "é" * 300]}, "prompt 1")]:      # 600 bytes
        r = post(client, {**body, "duration": 0.5})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert name in detail and f"allowed: 1 to {mg.MAX_PROMPT_TOKENS}" in detail, detail


def test_the_websocket_bounds_its_texts_like_the_rest(client):
    for body, text in [({"prompt": "x", "negative_prompt": "n" * 20000}, "2000"),
                       ({"prompt": "x", "negative_prompt": "n" * 1500}, "text-encoder tokens"),
                       ({"prompt": "x", "extend_stride": 1e300}, "extend_stride")]:
        with client.websocket_connect("/v1/stream", headers=H["user"]) as ws:
            ws.send_json(body)
            answer = ws.receive_json()
        assert answer["type"] == "error" and answer["status"] == 422, answer
        assert text in answer["detail"], answer


def test_batch_table_cells_are_bounded_like_prompts(client):
    table = "prompt,duration\n" + "q" * 2500 + ",0.5\n"
    r = client.post("/v1/batch", files={"file": ("t.csv", table.encode(), "text/csv")},
                    headers=H["user"])
    assert r.status_code == 422 and "2500 characters" in r.json()["detail"], r.text


def test_a_batch_table_stores_bounded_cells_and_lists_small(tmp_path):
    """Every CSV cell is stored with the job (metadata and invalid rows too): each is bounded,
    so are the rows' JSON size and the columns, and listings show a row count, not the cells."""
    with make_client(tmp_path, max_body_bytes=4096) as c:
        wait_ready(c)
        for table, text in [("prompt,duration,notes\nok,0.5," + "n" * 3000 + "\n",
                             "column 'notes': 3000 characters"),
                            ("prompt,duration\n" + "long prompt here,0.5\n" * 300,
                             "setting max_body_bytes"),
                            ("prompt," + ",".join(f"c{i}" for i in range(70)) + "\nok" + ",v" * 70
                             + "\n", "71 columns")]:
            r = c.post("/v1/batch", files={"file": ("t.csv", table.encode(), "text/csv")},
                       headers=H["user"])
            assert r.status_code == 422 and text in r.json()["detail"], r.text[:300]
        table = "prompt,duration,notes\nok,0.5,fine\n" + "two,0.5,also\n"
        r = c.post("/v1/batch", files={"file": ("t.csv", table.encode(), "text/csv")},
                   headers=H["user"])
        job = c.get(f"/v1/jobs/{r.json()['id']}", headers=H["user"]).json()
        assert job["request"]["rows"] == 2 and len(json.dumps(job)) < 2000


def test_malformed_bodies_with_wrong_keys_are_rate_limited(tmp_path):
    """Authentication of a body that does not parse counts failed keys like every request, so
    a parse error is no unlimited oracle for guessing keys."""
    with make_client(tmp_path, rate_limit_per_minute=1, rate_limit_burst=2) as c:
        codes = [c.post("/v1/generate", content=b"{not json",
                        headers={"content-type": "application/json",
                                 "X-API-Key": f"guess-{i:04d}"}).status_code for i in range(4)]
        assert codes == [401, 401, 429, 429]


# --- 2. text that is not Unicode is refused at the edge -----------------------------------------
def test_a_lone_surrogate_is_a_422_everywhere_and_listings_stay_readable(client):
    raw = b'{"prompt": "\\ud800", "duration": 0.5}'
    r = client.post("/v1/generate", content=raw,
                    headers={**H["user"], "content-type": "application/json"})
    assert r.status_code == 422 and "prompt" in r.json()["detail"], r.text
    for body in [b'{"prompt": "ok", "negative_prompt": "a\\udfffb"}',
                 b'{"prompts": ["ok", "\\ud800"]}']:
        r = client.post("/v1/generate", content=body,
                        headers={**H["user"], "content-type": "application/json"})
        assert r.status_code == 422, r.text
    r = client.post("/v1/prompts/improve", content=b'{"prompt": "\\ud800"}',
                    headers={**H["user"], "content-type": "application/json"})
    assert r.status_code == 422, r.text
    for who in ("user", "admin"):
        assert client.get("/v1/jobs", headers=H[who]).status_code == 200


def test_pydantic_itself_refuses_a_lone_surrogate_in_every_text_field(client):
    """The request schemas add no Unicode check of their own: pydantic refuses the text as it
    arrives, parsed (a JSON body, string_unicode) or raw (the multipart request field and the
    WebSocket, json_invalid), and the service answers 422 naming the field or the JSON."""
    from pydantic import ValidationError

    from musicgen_edu.serve.schemas import GenerateRequest, PromptRequest

    for schema, value in [(GenerateRequest, {"prompt": "\ud800"}),
                          (GenerateRequest, {"prompts": ["ok", "a\udfffb"]}),
                          (GenerateRequest, {"prompt": "ok", "negative_prompt": "\udc00"}),
                          (PromptRequest, {"prompt": "\ud800"})]:
        with pytest.raises(ValidationError) as parsed:
            schema.model_validate(value)
        assert [e["type"] for e in parsed.value.errors()] == ["string_unicode"]
        with pytest.raises(ValidationError) as raw:
            schema.model_validate_json(json.dumps(value))    # "\\ud800" escaped, as sent
        assert [e["type"] for e in raw.value.errors()] == ["json_invalid"]
    r = client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(), "audio/wav")},
                    data={"request": '{"prompt": "\\ud800", "duration": 1.0}'}, headers=H["user"])
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"], r.text
    with client.websocket_connect("/v1/stream", headers=H["user"]) as ws:
        ws.send_text('{"prompt": "\\ud800", "duration": 0.5}')
        error = ws.receive_json()
        assert error["status"] == 422 and "not valid JSON" in error["detail"]


# --- 3. numbers are finite and bounded --------------------------------------------------------
def test_non_finite_and_unbounded_numbers_are_refused(client):
    for raw, text in [(b'{"prompt": "x", "extend_stride": 1e309}', "extend_stride"),
                      (b'{"prompt": "x", "duration": NaN}', "duration"),
                      (b'{"prompt": "x", "temperature": -Infinity}', "temperature")]:
        r = client.post("/v1/generate", content=raw,
                        headers={**H["user"], "content-type": "application/json"})
        assert r.status_code == 422 and text in r.json()["detail"], r.text
    r = post(client, {"prompt": "x", "extend_stride": 1e300})
    assert r.status_code == 422 and "extend_stride=1e+300 is out of range; allowed: (0, 30]" \
        in r.json()["detail"], r.text
    with pytest.raises(ConfigError, match="not a finite number"):
        mg.GenerationConfig(extend_stride=float("inf"))


def test_csv_cells_nan_and_inf_are_named_never_replaced_by_defaults(client):
    for table, name in [("prompt,extend_stride\na,inf\n", "extend_stride"),
                        ("prompt,duration\na,nan\n", "duration"),
                        ("prompt,temperature\na,nan\n", "temperature")]:
        r = client.post("/v1/batch", files={"file": ("t.csv", table.encode(), "text/csv")},
                        headers=H["user"])
        assert r.status_code == 422, (table, r.text)
        assert name in r.json()["detail"], r.json()
    # an inf cell beside a valid row: the job is stored (JSON-safe) and that row reported invalid
    table = "prompt,duration,extend_stride\nfine,0.5,\nbad,0.5,inf\n"
    r = client.post("/v1/batch", files={"file": ("t.csv", table.encode(), "text/csv")},
                    headers=H["user"])
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded" and job["result"]["ok"] == 1, job
    assert job["result"]["failed"] == 1 and "extend_stride" in job["result"]["errors"][0]
    assert client.get("/v1/jobs", headers=H["user"]).status_code == 200


# --- 4. a NUL in a file name is a 404, not a 500 -------------------------------------------------
def test_file_names_with_a_nul_are_not_found(client):
    table = "prompt,duration\nnul test,0.5\n"
    r = client.post("/v1/batch", files={"file": ("t.csv", table.encode(), "text/csv")},
                    headers=H["user"])
    job = wait_job(client, r.json()["id"])
    for name in ("%00", "a%00b", "..%2Fx", ".hidden", "x" * 300):   # 300: past NAME_MAX
        r = client.get(f"/v1/jobs/{job['id']}/files/{name}", headers=H["user"])
        assert r.status_code == 404, (name, r.status_code, r.text)
    ok = client.get(f"/v1/jobs/{job['id']}/files/manifest.jsonl", headers=H["user"])
    assert ok.status_code == 200


# --- 5. strict types, auth first, formats, repeated parameters, NaN audio ---------------------
def test_strict_types_refuse_bools_and_strings_for_numbers(client):
    for body, name in [({"prompt": "x", "duration": True}, "duration"),
                       ({"prompt": "x", "seed": False}, "seed"),
                       ({"prompt": "x", "top_k": 5.5}, "top_k"),
                       ({"prompt": "x", "temperature": "1.0"}, "temperature"),
                       ({"prompt": "x", "use_sampling": 1}, "use_sampling")]:
        r = post(client, body)
        assert r.status_code == 422 and name in r.json()["detail"], (body, r.text)
    for path in ("/v1/prompts/improve", "/v1/prompts/validate"):
        r = client.post(path, json={"prompt": "lo-fi", "seed": False}, headers=H["user"])
        assert r.status_code == 422 and "seed" in r.json()["detail"], r.text
    assert post(client, {"prompt": "x", "duration": 1, "seed": 3.0}).status_code == 202  # JSON: 3.0 is 3


def test_authentication_comes_before_body_parsing(client):
    bad = b"{not json"
    r = client.post("/v1/generate", content=bad, headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text
    r = client.post("/v1/generate", content=bad, headers={"content-type": "application/json",
                                                          "X-API-Key": "wrong-key-123"})
    assert r.status_code == 401, r.text
    r = client.post("/v1/generate", content=bad, headers={**H["user"],
                                                          "content-type": "application/json"})
    assert r.status_code == 422


def test_an_unknown_audio_format_is_a_422_whatever_the_job_state(tmp_path):
    with make_client(tmp_path, workers=0) as c:                 # the job stays queued
        queued = post(c, {"prompt": "slow", "duration": 3, "seed": 1}).json()["id"]
        r = c.get(f"/v1/jobs/{queued}/audio", params={"format": "exe"}, headers=H["user"])
        assert r.status_code == 422 and "format" in r.json()["detail"], r.text


def test_a_repeated_query_parameter_is_refused(client):
    r = client.get("/v1/jobs?limit=1&limit=500", headers=H["user"])
    assert r.status_code == 422 and "'limit'" in r.json()["detail"], r.text
    assert client.get("/v1/jobs?limit=1", headers=H["user"]).status_code == 200
    assert client.get("/v1/jobs?limit=1&limit=2").status_code == 401     # auth still first


def test_an_upload_of_nan_samples_is_refused_at_once(client):
    buf = io.BytesIO()
    sf.write(buf, np.full(16000, np.nan, dtype="float32"), 32000, format="WAV", subtype="FLOAT")
    r = client.post("/v1/continue", files={"file": ("nan.wav", buf.getvalue(), "audio/wav")},
                    data={"request": json.dumps({"prompt": "x", "duration": 1.0})},
                    headers=H["user"])
    assert r.status_code == 422 and "NaN or infinite" in r.json()["detail"], r.text


# --- 7. no prompt in an error's log line --------------------------------------------------------
def test_tracebacks_in_json_logs_carry_no_local_variables(capsys):
    from musicgen_edu.serve.monitoring import configure_logging, get_logger

    configure_logging("info", json=True)

    def run(prompt):
        raise RuntimeError("boom")

    try:
        run("my secret unreleased melody")
    except RuntimeError:
        get_logger().exception("run failed")
    err = capsys.readouterr().err
    line = json.loads(err.strip().splitlines()[-1])
    assert line["event"] == "run failed" and "boom" in err
    assert "my secret unreleased melody" not in err


# --- 14. configured keys turn auth on ------------------------------------------------------------
def test_configured_keys_turn_auth_on_in_every_profile(tmp_path):
    s = load_settings(api_keys=KEYS)
    assert s.env == "development" and s.auth_enabled is True
    assert load_settings().auth_enabled is False                    # no keys: a student's laptop
    with pytest.raises(ConfigError, match="API keys are configured.*auth_enabled=False"):
        load_settings(api_keys=KEYS, auth_enabled=False)
    with make_client(tmp_path, auth_enabled=None) as c:          # keys given, auth left unset
        assert c.post("/v1/generate", json={"prompt": "x"}).status_code == 401
        assert c.post("/v1/generate", json={"prompt": "x"},
                      headers={"X-API-Key": "wrong-key-123"}).status_code == 401
        assert c.get("/v1/jobs", headers=H["viewer"]).status_code == 200
