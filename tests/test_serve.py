"""The service, in process (FastAPI's TestClient, no sockets): every route and error code.

The app runs its real worker thread on the offline ``debug`` model (``make_client``; one test
serves the shipped default, ``edu-tiny``); nothing is mocked. The
restart test (a real server killed with SIGKILL) is in test_serve_restart.py.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.serve import create_app
from musicgen_edu.settings import load_settings

ADMIN, USER, VIEWER, OTHER = "adminkey-123", "userkey-456", "viewkey-789", "otherkey-000"
KEYS = f"{ADMIN}:admin,{USER}:user:lab1,{VIEWER}:viewer:lab1,{OTHER}:user:lab2"
H = {name: {"X-API-Key": key} for name, key in
     [("admin", ADMIN), ("user", USER), ("viewer", VIEWER), ("other", OTHER)]}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)


def make_client(tmp_path, **overrides) -> TestClient:
    """The service on the fast debug models (the shipped default, edu-tiny, has its own tests)."""
    values = dict(default_model="debug", models=["debug", "debug-stereo", "debug-melody"],
                  storage_dir=tmp_path / "store", auth_enabled=True, api_keys=KEYS,
                  rate_limit_per_minute=0, batch_wait_s=0.0, log_json=True, cors_origins=[])
    values.update(overrides)
    return TestClient(create_app(load_settings(**values)))


def wait_ready(client):
    for _ in range(600):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(client.get("/readyz").json())


def wait_job(client, job_id, headers=H["user"], timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def audio_of(client, job_id, index=0, headers=H["user"], fmt="wav"):
    r = client.get(f"/v1/jobs/{job_id}/audio", params={"format": fmt, "index": index},
                   headers=headers)
    assert r.status_code == 200, r.text
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    return wav.T, sr, r


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("serve")) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def solo():
    return mg.MusicGenerator("debug", progress=False)


# --- generate, read, audio -------------------------------------------------------------------
def test_generate_job_life_and_audio_equals_the_library(client, solo):
    r = client.post("/v1/generate", json={"prompt": "lo-fi piano", "duration": 1, "seed": 11},
                    headers=H["user"])
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["step"] == job["progress"]["total"] == 50 + 3
    assert job["result"]["seeds"] == [11] and job["attempts"] == 1
    wav, sr, resp = audio_of(client, job["id"])
    assert resp.headers["content-type"] == "audio/wav" and sr == 32000 and wav.shape == (1, 32000)
    expected = solo.generate("lo-fi piano", duration=1, seed=11).wav[0].numpy()
    np.testing.assert_allclose(wav, expected, atol=1e-4)   # 16-bit file vs float result
    for fmt, mime in [("flac", "audio/flac"), ("mp3", "audio/mpeg")]:
        other, sr2, resp = audio_of(client, job["id"], fmt=fmt)
        assert resp.headers["content-type"] == mime and sr2 == 32000
        assert abs(other.shape[-1] - 32000) < 3000          # mp3 pads a few frames


def test_the_shipped_profile_serves_edu_tiny_when_a_request_names_no_model(tmp_path):
    settings = load_settings(storage_dir=tmp_path / "store", batch_wait_s=0.0,
                             rate_limit_per_minute=0)        # configs/development.yaml as shipped
    assert settings.default_model == mg.DEFAULT_MODEL == "edu-tiny"
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        assert c.get("/v1/models").json()["default"] == "edu-tiny"
        prompt = "fast piano chords in C major, high register"
        job = wait_job(c, c.post("/v1/generate", json={"prompt": prompt, "duration": 1,
                                                        "seed": 3}).json()["id"], headers={})
        assert job["status"] == "succeeded" and job["model"] == "edu-tiny", job
        wav, sr, _ = audio_of(c, job["id"], headers={})
    expected = mg.MusicGenerator("edu-tiny", progress=False).generate(prompt, duration=1, seed=3)
    assert sr == 16000 and wav.shape == (1, 16000)
    np.testing.assert_allclose(wav, expected.wav[0].numpy(), atol=1e-4)


def test_several_prompts_and_negative_prompt(client, solo):
    body = {"prompts": ["rock", "jazz"], "negative_prompt": "noise", "duration": 0.5, "seed": 5}
    job = wait_job(client, client.post("/v1/generate", json=body, headers=H["user"]).json()["id"])
    assert job["result"]["seeds"] == [5, 6] and len(job["result"]["files"]) == 2
    ref = solo.generate(["rock", "jazz"], duration=0.5, seeds=[5, 6], negative_prompt="noise")
    for i in range(2):
        np.testing.assert_allclose(audio_of(client, job["id"], i)[0], ref.wav[i].numpy(), atol=1e-4)
    r = client.get(f"/v1/jobs/{job['id']}/audio", params={"index": 2}, headers=H["user"])
    assert r.status_code == 422 and "index=2" in r.json()["detail"] and "0 to 1" in r.json()["detail"]
    r = client.get(f"/v1/jobs/{job['id']}/audio", params={"format": "ogg"}, headers=H["user"])
    assert r.status_code == 422 and "'ogg'" in r.json()["detail"]


def test_validation_errors_are_the_config_error_text(client):
    cases = [({"prompt": "x", "temperature": 0}, "temperature=0.0 is out of range; allowed: (0, 10]"),
             ({"prompt": "x", "top_k": 5000}, "top_k=5000 is out of range; allowed: [0, 2048]"),
             ({"prompt": "x", "duration": 31}, "max_duration"),
             ({"prompt": "x", "duration": "long"}, "duration='long' is not valid"),
             ({"prompt": "x", "temprature": 1}, "unknown field 'temprature'"),
             ({"prompts": ["a"] * 9}, "9 prompts in one request; allowed: 1 to 8"),
             ({"prompt": "   "}, "prompt 0"),
             ({}, "prompt is missing"),
             ({"prompt": "x", "model": "facebook/musicgen-large"}, "is not served here"),
             ({"prompt": "x", "seed": -1}, "seed=-1 is out of range")]
    for body, text in cases:
        r = client.post("/v1/generate", json=body, headers=H["user"])
        assert r.status_code == 422, (body, r.text)
        assert text in r.json()["detail"], (body, r.json())
    r = client.post("/v1/generate", content=b"{not json", headers={**H["user"],
                                                                    "content-type": "application/json"})
    assert r.status_code == 422


def test_result_cache_serves_identical_seeded_requests(client):
    body = {"prompt": "cached tune", "duration": 0.5, "seed": 99}
    first = wait_job(client, client.post("/v1/generate", json=body, headers=H["user"]).json()["id"])
    r = client.post("/v1/generate", json=body, headers=H["user"])
    assert r.status_code == 202 and r.json() == {"id": r.json()["id"], "status": "succeeded",
                                                 "cached": True}
    again = client.get(f"/v1/jobs/{r.json()['id']}", headers=H["user"]).json()
    assert again["result"]["cached_from"] == first["id"]
    np.testing.assert_array_equal(audio_of(client, first["id"])[0], audio_of(client, again["id"])[0])
    unseeded = client.post("/v1/generate", json={"prompt": "cached tune", "duration": 0.5},
                           headers=H["user"]).json()
    assert unseeded["cached"] is False
    assert 'musicgen_result_cache_hits_total 1.0' in client.get("/metrics").text


def test_result_cache_is_never_shared_between_owners(client):
    """Finding 6: lab2 repeating lab1's seeded request must not learn, from an instant cached
    answer with lab1's timings, that lab1 asked it: the cache is per owner."""
    body = {"prompt": "a private tune", "duration": 0.5, "seed": 7}
    first = wait_job(client, client.post("/v1/generate", json=body, headers=H["user"]).json()["id"])
    r = client.post("/v1/generate", json=body, headers=H["other"]).json()
    assert r["cached"] is False and r["status"] == "queued"
    theirs = wait_job(client, r["id"], headers=H["other"])
    assert theirs["result"]["cached"] is False and "cached_from" not in theirs["result"]
    assert theirs["started_at"] > first["finished_at"]              # it ran: its own timings
    np.testing.assert_array_equal(audio_of(client, first["id"])[0],  # same seed, same audio
                                  audio_of(client, r["id"], headers=H["other"])[0])


# --- dynamic batching --------------------------------------------------------------------------
def test_dynamic_batching_gives_each_request_its_solo_result(tmp_path, solo):
    with make_client(tmp_path, batch_wait_s=1.0, max_batch_size=8) as c:
        wait_ready(c)
        bodies = [{"prompt": p, "duration": 0.5, "seed": s, "temperature": 0.9}
                  for p, s in [("calm harp", 1), ("fast techno with a long description", 2),
                               ("sad cello", 3)]]
        bodies.append({"prompts": ["two", "items"], "duration": 0.5, "seed": 7, "temperature": 0.9})
        bodies.append({"prompt": "other settings", "duration": 0.5, "seed": 4, "temperature": 1.2})
        ids = [c.post("/v1/generate", json=b, headers=H["user"]).json()["id"] for b in bodies]
        jobs = [wait_job(c, i) for i in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 5
        assert [j["result"]["batch_jobs"] for j in jobs] == [4, 4, 4, 4, 1]
        assert [j["result"]["batch_size"] for j in jobs] == [5, 5, 5, 5, 1]
        for body, job in zip(bodies, jobs):
            prompts = body.get("prompts") or [body["prompt"]]
            ref = solo.generate(prompts, duration=0.5, temperature=body["temperature"],
                                seeds=[body["seed"] + i for i in range(len(prompts))])
            for i in range(len(prompts)):
                # the documented bound (docs/serving.md): the solo run's tokens, and its saved
                # 16-bit samples to within one step (batched EnCodec decoding rounds apart)
                alone = solo.generate(prompts[i], duration=0.5, seeds=[body["seed"] + i],
                                      temperature=body["temperature"])
                assert torch.equal(ref.tokens[i : i + 1], alone.tokens)
                mg.save_audio(tmp_path / "solo.wav", alone.wav[0], 32000, overwrite=True)
                served = c.get(f"/v1/jobs/{job['id']}/audio", params={"index": i},
                               headers=H["user"]).content
                served = sf.read(io.BytesIO(served), dtype="int16")[0].astype(int)
                expected = sf.read(tmp_path / "solo.wav", dtype="int16")[0].astype(int)
                assert np.abs(served - expected).max() <= 1
        assert "musicgen_batch_size_bucket" in c.get("/metrics").text


# --- cancel ------------------------------------------------------------------------------------
def test_cancel_queued_then_409(tmp_path):
    with make_client(tmp_path, workers=0) as c:               # nothing runs: jobs stay queued
        job_id = c.post("/v1/generate", json={"prompt": "x", "duration": 1},
                        headers=H["user"]).json()["id"]
        r = c.delete(f"/v1/jobs/{job_id}", headers=H["user"])
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = c.delete(f"/v1/jobs/{job_id}", headers=H["user"])
        assert r.status_code == 409 and "already ended" in r.json()["detail"]
        r = c.get(f"/v1/jobs/{job_id}/audio", headers=H["user"])
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]


def test_cancel_running_stops_at_next_step(client):
    job_id = client.post("/v1/generate", json={"prompt": "very long", "duration": 30},
                         headers=H["user"]).json()["id"]
    for _ in range(400):
        job = client.get(f"/v1/jobs/{job_id}", headers=H["user"]).json()
        if job["status"] == "running" and job["step"] > 0:
            break
        time.sleep(0.02)
    r = client.delete(f"/v1/jobs/{job_id}", headers=H["user"])
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    job = wait_job(client, job_id)
    assert job["status"] == "cancelled" and job["result"] is None
    assert job["step"] < job["total"]                         # stopped early
    assert not list((client.app.state.service.storage / "audio").glob(f"{job_id}*"))


# --- security ----------------------------------------------------------------------------------
def test_auth_401_and_roles_403(client):
    body = {"prompt": "x", "duration": 0.5}
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    r = client.post("/v1/generate", json=body, headers={"X-API-Key": "wrong-key-1"})
    assert r.status_code == 401 and "unknown API key" in r.json()["detail"]
    r = client.post("/v1/generate", json=body, headers={"Authorization": f"Bearer {USER}"})
    assert r.status_code == 202
    r = client.post("/v1/generate", json=body, headers=H["viewer"])
    assert r.status_code == 403 and "'viewer'" in r.json()["detail"]
    assert client.get("/v1/models", headers=H["viewer"]).status_code == 200


def test_jobs_are_visible_to_their_owner_only(client):
    job_id = client.post("/v1/generate", json={"prompt": "mine", "duration": 0.5, "seed": 1},
                         headers=H["user"]).json()["id"]
    wait_job(client, job_id)
    assert client.get(f"/v1/jobs/{job_id}", headers=H["viewer"]).status_code == 200  # same owner
    assert client.get(f"/v1/jobs/{job_id}", headers=H["admin"]).status_code == 200
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/audio"):
        r = client.get(path, headers=H["other"])
        assert r.status_code == 404, path
    assert client.delete(f"/v1/jobs/{job_id}", headers=H["other"]).status_code == 404
    ids = {j["id"] for j in client.get("/v1/jobs", headers=H["other"]).json()["jobs"]}
    assert job_id not in ids
    assert job_id in {j["id"] for j in client.get("/v1/jobs", headers=H["admin"]).json()["jobs"]}
    assert client.get("/v1/jobs/../../etc/passwd", headers=H["admin"]).status_code == 404
    assert client.get("/v1/jobs/nothex", headers=H["admin"]).status_code == 404


def test_rate_limit_429_with_retry_after(tmp_path):
    with make_client(tmp_path, rate_limit_per_minute=6, rate_limit_burst=3, workers=0) as c:
        codes = [c.get("/v1/models", headers=H["user"]).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/v1/models", headers=H["user"])
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
        assert "rate limit" in r.json()["detail"]
        assert c.get("/v1/models", headers=H["other"]).status_code == 200   # per key
        assert "musicgen_rate_limited_total 2.0" in c.get("/metrics").text


def test_body_and_upload_limits_413(tmp_path):
    with make_client(tmp_path, max_body_bytes=2048, max_upload_bytes=4096, workers=0) as c:
        r = c.post("/v1/generate", json={"prompt": "x" * 5000}, headers=H["user"])
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]

        def chunks():                                             # no Content-Length
            yield b'{"prompt": "'
            yield b"y" * 4000
            yield b'"}'

        r = c.post("/v1/generate", content=chunks(), headers={**H["user"],
                                                              "content-type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/continue", files={"file": ("a.wav", b"0" * 5000, "audio/wav")},
                   headers=H["user"])
        assert r.status_code == 413 and "upload" in r.json()["detail"]


def test_cors_from_settings(tmp_path):
    with make_client(tmp_path, cors_origins=["http://lab.example"], workers=0) as c:
        r = c.options("/v1/models", headers={"Origin": "http://lab.example",
                                             "Access-Control-Request-Method": "GET"})
        assert r.headers["access-control-allow-origin"] == "http://lab.example"
        r = c.options("/v1/models", headers={"Origin": "http://evil.example",
                                             "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers


def test_logs_are_json_with_request_ids_and_no_keys_or_prompts(tmp_path, capsys):
    with make_client(tmp_path, workers=0) as c:
        capsys.readouterr()
        r = c.post("/v1/generate", json={"prompt": "secret melody idea"},
                   headers={**H["user"], "X-Request-ID": "req-42"})
        assert r.headers["x-request-id"] == "req-42"
        assert len(c.get("/healthz").headers["x-request-id"]) == 16
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    request = next(e for e in lines if e["event"] == "request" and e["route"] == "/v1/generate")
    assert request["request_id"] == "req-42" and request["owner"] == "lab1" and request["status"] == 202
    queued = next(e for e in lines if e["event"] == "job queued")
    assert queued["request_id"] == "req-42"
    text = json.dumps(lines)
    assert USER not in text and "secret melody idea" not in text


# --- uploads: continuation, melody, batch ------------------------------------------------------
def wav_bytes(seconds=0.5, sr=16000, freq=220.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), sr, format="WAV")
    return buf.getvalue()


def test_continuation(client, solo):
    body = json.dumps({"prompt": "keep going", "duration": 1.0, "seed": 3})
    r = client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(), "audio/wav")},
                    data={"request": body}, headers=H["user"])
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    src, sr = sf.read(io.BytesIO(wav_bytes()), dtype="float32")
    ref = solo.generate_continuation(src, sr, "keep going", duration=1.0, seeds=[3])
    np.testing.assert_allclose(audio_of(client, job["id"])[0], ref.wav[0].numpy(), atol=1e-4)
    r = client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(2.0), "audio/wav")},
                    data={"request": json.dumps({"duration": 1.0})}, headers=H["user"])
    assert r.status_code == 422 and "total length" in r.json()["detail"]


def test_a_clip_longer_than_the_duration_is_refused_before_it_is_queued(client, solo):
    """The route refuses what ``generate_continuation`` would refuse when the job runs, with
    the same words, as a 422 at once: no job is queued and the upload is not kept."""
    svc = client.app.state.service
    queued, uploads = svc.store.counts()["queued"], set((svc.storage / "uploads").iterdir())
    r = client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(2.0), "audio/wav")},
                    data={"request": json.dumps({"duration": 1.0})}, headers=H["user"])
    said = ("the audio prompt lasts 2.00 s but duration=1 s; duration is the total length, "
            "so it must be longer than the prompt (and the prompt shorter than the 30 s window).")
    assert r.status_code == 422 and r.json() == {"detail": said, "type": "ConfigError"}
    assert svc.store.counts()["queued"] == queued
    assert set((svc.storage / "uploads").iterdir()) == uploads
    src, sr = sf.read(io.BytesIO(wav_bytes(2.0)), dtype="float32")
    with pytest.raises(mg.ConfigError) as refused:
        solo.generate_continuation(src, sr, duration=1.0, seeds=[1])
    assert str(refused.value).startswith(said)


def test_upload_type_and_content_checks(client):
    r = client.post("/v1/continue", files={"file": ("notes.txt", b"hello", "text/plain")},
                    headers=H["user"])
    assert r.status_code == 415 and "'.wav'" in r.json()["detail"]
    r = client.post("/v1/continue", files={"file": ("fake.wav", b"not audio at all", "audio/wav")},
                    data={"request": json.dumps({"duration": 1.0})}, headers=H["user"])
    assert r.status_code == 422
    uploads = client.app.state.service.storage / "uploads"
    before = set(uploads.iterdir())
    r = client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(), "audio/wav")},
                    data={"request": "{bad"}, headers=H["user"])
    assert r.status_code == 422 and "invalid request" in r.json()["detail"]
    r = client.post("/v1/continue", files={"file": ("song.mp3", b"ID3" + b"\x00" * 500, "audio/mpeg")},
                    data={"request": json.dumps({"duration": 1.0})}, headers=H["user"])
    assert r.status_code == 422 and "'song.mp3' is not readable audio" in r.json()["detail"]
    assert str(client.app.state.service.storage) not in r.text          # no server paths
    r = client.post("/v1/melody", files={"file": ("long.wav", wav_bytes(31.0, sr=8000), "audio/wav")},
                    data={"request": json.dumps({"prompt": "x", "model": "debug-melody"})},
                    headers=H["user"])
    assert r.status_code == 422 and "lasts 31.0 s" in r.json()["detail"]
    assert set(uploads.iterdir()) == before                  # rejected uploads are not kept


def test_melody_needs_a_melody_model(client):
    files = {"file": ("m.wav", wav_bytes(1.0), "audio/wav")}
    r = client.post("/v1/melody", files=files, data={"request": json.dumps(
        {"prompt": "x", "duration": 0.5})}, headers=H["user"])
    assert r.status_code == 422 and "no melody conditioning" in r.json()["detail"]
    r = client.post("/v1/melody", files=files, data={"request": json.dumps(
        {"prompt": "hum along", "duration": 0.5, "model": "debug-melody", "seed": 2})},
        headers=H["user"])
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded" and job["model"] == "debug-melody"
    models = {m["name"]: m for m in client.get("/v1/models", headers=H["user"]).json()["models"]}
    assert models["debug-melody"]["loaded"] and models["debug-melody"]["melody"] is True
    assert models["debug-stereo"]["channels"] == 2


def test_batch_csv_job_with_manifest(client):
    csv = "prompt,duration,seed,name\nfirst clip,0.5,1,my song\nsecond clip,0.5,2,\n,0.5,3,\n"
    r = client.post("/v1/batch", files={"file": ("rows.csv", csv.encode(), "text/csv")},
                    headers=H["user"])
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["ok"] == 2 and job["result"]["rows"] == 3
    manifest = client.get(f"/v1/jobs/{job['id']}/files/manifest.jsonl", headers=H["user"])
    records = [json.loads(row) for row in manifest.text.splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert job["result"]["files"] == [f"batches/{job['id']}/{r['path']}" for r in records]
    for path in job["result"]["files"]:                       # every listed file downloads
        clip = client.get(f"/v1/jobs/{job['id']}/files/{path.rsplit('/', 1)[1]}", headers=H["user"])
        assert clip.status_code == 200 and clip.content[:4] == b"RIFF"
    assert job["progress"] == {"step": 2, "total": 2, "fraction": 1.0}
    for bad in ("..%2Fjobs.sqlite3", ".hidden", "nothere.wav"):
        assert client.get(f"/v1/jobs/{job['id']}/files/{bad}", headers=H["user"]).status_code == 404
    r = client.post("/v1/batch", files={"file": ("rows.csv", b"prompt,duration\nx,99\n", "text/csv")},
                    headers=H["user"])
    assert r.status_code == 422 and "max_duration" in r.json()["detail"]
    for bad in (b"", b"\xff\xfe\x00bad", b'"unclosed,quote\n'):
        r = client.post("/v1/batch", files={"file": ("rows.csv", bad, "text/csv")}, headers=H["user"])
        assert r.status_code == 422 and "rows.csv" not in r.json()["detail"].split("'")[0], r.text


# --- prompts, models, health, metrics ----------------------------------------------------------
def test_prompt_tools(client):
    r = client.post("/v1/prompts/validate", json={"prompt": "piano"}, headers=H["user"])
    report = r.json()
    assert r.status_code == 200 and report["ok"] is True and report["warnings"]
    assert report["tokens_exact"] is True                     # counted with the debug tokenizer
    r = client.post("/v1/prompts/improve", json={"prompt": "piano", "seed": 1}, headers=H["user"])
    improved = r.json()["improved"]
    assert improved.startswith("piano") or "piano" in improved
    assert improved == mg.PromptEngineer().improve("piano", seed=1)
    r = client.post("/v1/prompts/improve", json={"prompt": 5}, headers=H["user"])
    assert r.status_code == 422


def test_health_ready_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "debug"}
    text = client.get("/metrics").text
    for name in ("musicgen_http_requests_total", "musicgen_http_request_duration_seconds",
                 "musicgen_queue_depth", 'musicgen_jobs{status="succeeded"}',
                 "musicgen_generation_seconds", "musicgen_steps_per_second",
                 "musicgen_audio_seconds_total", "musicgen_models_loaded"):
        assert name in text, name
    assert 'route="/v1/jobs/{job_id}"' in text                # templates, not raw ids


def test_metrics_auth_setting(tmp_path):
    with make_client(tmp_path, metrics_auth=True, workers=0) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=H["user"]).status_code == 403
        assert c.get("/metrics", headers=H["admin"]).status_code == 200


def test_readyz_reports_a_failed_default_model(tmp_path):
    with make_client(tmp_path, models=["/no/such/model"], default_model="/no/such/model",
                     workers=0) as c:
        for _ in range(200):
            r = c.get("/readyz")
            if r.json()["status"] == "failed":
                break
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["status"] == "failed" and r.json()["detail"]


def test_queue_full_503(tmp_path):
    with make_client(tmp_path, workers=0, max_queue=2) as c:
        codes = [c.post("/v1/generate", json={"prompt": "x"}, headers=H["user"]).status_code
                 for _ in range(3)]
        assert codes == [202, 202, 503]


# --- streaming -----------------------------------------------------------------------------------
def test_sse_progress_then_done(client):
    job_id = client.post("/v1/generate", json={"prompt": "sse", "duration": 2, "seed": 1},
                         headers=H["user"]).json()["id"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=H["user"]) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    steps = [d["step"] for n, d in events if n == "progress"]
    assert steps == sorted(steps) and len(events) >= 2
    assert client.get("/v1/jobs/" + "0" * 32 + "/events", headers=H["user"]).status_code == 404


def test_websocket_stream_sends_audio_then_done(client, solo):
    with client.websocket_connect("/v1/stream", headers=H["user"]) as ws:
        ws.send_json({"prompt": "streamed", "duration": 2.0, "seed": 8})
        start = ws.receive_json()
        assert start["type"] == "start" and start["sample_rate"] == 32000 and start["channels"] == 1
        chunks, message = [], ws.receive()
        while "bytes" in message and message["bytes"] is not None:
            chunks.append(np.frombuffer(message["bytes"], dtype="<f4"))
            message = ws.receive()
        done = json.loads(message["text"])
    assert done["type"] == "done" and done["status"] == "succeeded" and len(chunks) >= 2
    audio = np.concatenate(chunks)
    ref = solo.generate("streamed", duration=2.0, seeds=[8]).wav[0, 0].numpy()
    assert audio.shape == ref.shape
    np.testing.assert_allclose(audio, ref, atol=1e-4)
    saved = audio_of(client, done["id"])[0][0]
    # the documented bound: the saved WAV is the chunks' samples as 16-bit integers
    assert np.abs(saved - audio).max() <= 2**-15
    np.testing.assert_allclose(saved, ref, atol=1e-4)


def test_websocket_close_cancels_the_job(client):
    with client.websocket_connect("/v1/stream", headers=H["user"]) as ws:
        ws.send_json({"prompt": "left early", "duration": 30.0, "seed": 3})
        job_id = ws.receive_json()["id"]                   # the start message
        ws.receive_bytes()
    job = wait_job(client, job_id)
    assert job["status"] == "cancelled" and job["step"] < job["total"]


def test_websocket_ends_when_its_queued_job_is_cancelled(tmp_path):
    with make_client(tmp_path, workers=0) as c:
        with c.websocket_connect("/v1/stream", headers=H["user"]) as ws:
            ws.send_json({"prompt": "never runs", "duration": 1.0})
            for _ in range(100):
                jobs = c.get("/v1/jobs", headers=H["user"]).json()["jobs"]
                if jobs:
                    break
                time.sleep(0.02)
            assert c.delete(f"/v1/jobs/{jobs[0]['id']}", headers=H["user"]).status_code == 200
            done = ws.receive_json()
        assert done["type"] == "done" and done["status"] == "cancelled"


def test_one_service_per_storage_folder(tmp_path):
    with make_client(tmp_path, workers=0):
        with pytest.raises(mg.ConfigError, match="in use by another running service"):
            make_client(tmp_path, workers=0)
    with make_client(tmp_path, workers=0):                 # free again after shutdown
        pass


def test_failed_authentication_is_rate_limited_by_address(tmp_path):
    with make_client(tmp_path, rate_limit_per_minute=6, rate_limit_burst=3, workers=0) as c:
        codes = [c.get("/v1/models", headers={"X-API-Key": f"guess-{i:04d}"}).status_code
                 for i in range(5)]
        assert codes[:3] == [401] * 3 and codes[3:] == [429, 429]


def test_websocket_errors(client):
    with client.websocket_connect("/v1/stream") as ws:
        assert ws.receive_json()["status"] == 401
    with client.websocket_connect(f"/v1/stream?api_key={VIEWER}") as ws:
        assert ws.receive_json()["status"] == 403
    with client.websocket_connect(f"/v1/stream?api_key={USER}") as ws:
        ws.send_json({"prompt": "x", "top_p": 2})
        error = ws.receive_json()
        assert error["status"] == 422 and "top_p=2" in error["detail"]
    with client.websocket_connect(f"/v1/stream?api_key={USER}") as ws:
        ws.send_bytes(b"\x00\x01")
        error = ws.receive_json()
        assert error["status"] == 422 and "JSON text" in error["detail"]


# --- fuzz: no request body ever gets a 500 ----------------------------------------------------

_NAMES = ["prompt", "prompts", "negative_prompt", "model", "duration", "use_sampling", "top_k",
          "top_p", "temperature", "guidance_scale", "seed", "extend_stride"]
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=3), max_leaves=8)
_BODIES = st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=12), _VALUES, max_size=6)


@pytest.fixture(scope="module")
def idle_client(tmp_path_factory):
    """Accepts jobs but runs none (workers=0), so the fuzz pass measures validation only."""
    with make_client(tmp_path_factory.mktemp("fuzz"), workers=0, max_queue=100_000) as c:
        yield c


@hyp_settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES)
def test_fuzz_generate_bodies_never_500(idle_client, body):
    raw = json.dumps(body)                         # Infinity/-Infinity pass through as Python reads them
    r = idle_client.post("/v1/generate", content=raw, headers={**H["user"],
                                                               "content-type": "application/json"})
    assert r.status_code in (202, 422), (body, r.status_code, r.text)
    assert isinstance(r.json()["id" if r.status_code == 202 else "detail"], str)


@hyp_settings(max_examples=100, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), path=st.sampled_from(
    ["/v1/generate", "/v1/prompts/validate", "/v1/prompts/improve"]))
def test_fuzz_raw_bytes_never_500(idle_client, raw, path):
    r = idle_client.post(path, content=raw, headers={**H["user"],
                                                     "content-type": "application/json"})
    assert r.status_code in (200, 202, 400, 422), (raw, r.status_code, r.text)  # 400: not UTF-8


@hyp_settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_fuzz_batch_tables_never_500(idle_client, raw):
    r = idle_client.post("/v1/batch", files={"file": ("rows.csv", raw, "text/csv")},
                         headers=H["user"])
    assert r.status_code in (202, 422), (raw, r.status_code, r.text)


@hyp_settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.text(max_size=80))
def test_fuzz_upload_request_field_never_500(idle_client, body):
    r = idle_client.post("/v1/continue", files={"file": ("in.wav", wav_bytes(0.2), "audio/wav")},
                         data={"request": body}, headers=H["user"])
    assert r.status_code in (202, 422), (body, r.status_code, r.text)


# --- models: several within a memory budget -----------------------------------------------------
def test_models_lru_within_budget_keeps_the_default(tmp_path):
    with make_client(tmp_path, model_memory_gb=0.005) as c:   # ~5 MB: room for about one debug model
        wait_ready(c)
        for model in ("debug-stereo", "debug-melody"):
            body = {"prompt": "x", "duration": 0.2, "seed": 1, "model": model}
            job = wait_job(c, c.post("/v1/generate", json=body, headers=H["user"]).json()["id"])
            assert job["status"] == "succeeded" and job["model"] == model
        loaded = {m["name"]: m["loaded"] for m in c.get("/v1/models", headers=H["user"]).json()["models"]}
        assert loaded == {"debug": True, "debug-stereo": False, "debug-melody": True}
        assert c.get("/readyz").status_code == 200
