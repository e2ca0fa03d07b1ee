"""REST routes: submit jobs, read them, fetch their audio, prompts, batch tables, models, health.

Every ``/v1`` route declares the role it needs with ``Depends(need("user", "..."))``, which
authenticates, authorizes, rate-limits and files the caller's owner name on the request for
the log line. Submitting never waits for the model: it validates, stores a queued job and
answers ``202 {"id": ...}``; the worker runs it; clients poll ``GET /v1/jobs/{id}``, follow
``/events`` (SSE) or use the WebSocket stream (streaming.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from ..errors import ConfigError, GenerationError
from .jobs import FINISHED, Job
from .schemas import (BatchRequest, GenerateRequest, PromptRequest, capabilities, check_model,
                      explain_validation, job_params)
from .security import Principal

__all__ = ["router", "need", "admit", "visible_job", "submit"]

router = APIRouter()
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_BAD_NAME = re.compile(r"[/\\\x00]|^\.")   # separators, NUL, hidden or relative (.., .x)
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg"}
# upload extension -> content types accepted for it (browsers send odd ones for CSV)
_AUDIO_UPLOADS = {ext: ("audio/",) for ext in AUDIO_TYPES}
_CSV_UPLOADS = {".csv": ("text/", "application/csv", "application/vnd.ms-excel")}
MAX_BATCH_ROWS = 1000


def service(request: Request):
    return request.app.state.service


def admit(svc, headers, client: str, role: str, what: str, query_key: str | None = None):
    """Authenticate (401), authorize (403) and rate-limit (429) one caller; HTTP and WebSocket.

    Failed authentications count against the caller's address, so guessing keys is limited too.
    """
    try:
        try:
            principal = svc.auth.identify(headers, client, query_key)
        except HTTPException:
            svc.limiter.check(f"addr:{client}")
            raise
        svc.auth.authorize(principal, role, what)
        svc.limiter.check(principal.identity)
    except HTTPException as exc:
        if exc.status_code == 429:
            svc.metrics.rate_limited.inc()
        raise
    return principal


def need(role: str, what: str):
    """A dependency: the caller, if it has ``role`` (401/403) and is within its rate (429)."""

    def dependency(request: Request) -> Principal:
        principal = admit(service(request), request.headers,
                          request.client.host if request.client else "unknown", role, what)
        request.scope.setdefault("state", {})["owner"] = principal.owner
        return principal

    return dependency


def visible_job(svc, job_id: str, who: Principal) -> Job:
    """The job, if it exists and ``who`` may see it; 404 otherwise (never 403: ids stay private)."""
    job = svc.store.get(job_id) if _JOB_ID.match(job_id) else None
    if job is None or (job.owner != who.owner and not who.is_admin):
        raise HTTPException(404, f"no job {job_id!r} for this key; ids come from POST "
                            "/v1/generate (jobs are visible to the key owner that made them).")
    return job


def submit(svc, who: Principal, kind: str, params: dict, model: str, batch_key: str = "",
           cache_key: str = "", job_id: str | None = None, request_id: str | None = None) -> Job:
    """Store a queued job (or a cached result) and wake the worker. 503 when the queue is full."""
    params["_request_id"] = request_id           # the worker's log lines carry it too
    if svc.settings.result_cache and cache_key:
        hit = svc.store.find_cached(cache_key)
        if hit is not None and all((svc.storage / f).is_file() for f in hit.result["files"]):
            origin = {"cached_from": hit.id} if hit.owner == who.owner else {}  # ids stay private
            job = Job(owner=who.owner, kind=kind, model=model, params=params,
                      items=len(params.get("prompts", [None])), cache_key=cache_key,
                      status="succeeded", result={**{k: v for k, v in hit.result.items() if k != "cached_from"},
                                                  "cached": True, **origin})
            job.step = job.total = hit.total
            job.started_at = job.finished_at = job.created_at
            svc.metrics.cache_hits.inc()
            return svc.store.add(job)
    if svc.store.counts()["queued"] >= svc.settings.max_queue:
        raise HTTPException(503, f"the queue is full ({svc.settings.max_queue} jobs, setting "
                            "max_queue); retry later.", headers={"Retry-After": "10"})
    job = Job(owner=who.owner, kind=kind, model=model, params=params, batch_key=batch_key,
              cache_key=cache_key, items=len(params.get("prompts", [None])),
              **({"id": job_id} if job_id else {}))
    svc.store.add(job)
    svc.log.info("job queued", job=job.id, kind=kind, model=model, items=job.items)
    svc.log.debug("job prompts", job=job.id, prompts=params.get("prompts"))
    svc.worker.notify()
    return job


def _accepted(job: Job) -> JSONResponse:
    return JSONResponse({"id": job.id, "status": job.status, "cached": bool(
        job.result and job.result.get("cached"))}, status_code=202,
        headers={"Location": f"/v1/jobs/{job.id}"})


# --- generation --------------------------------------------------------------------------------
@router.post("/v1/generate", status_code=202, tags=["generation"])
def generate(req: GenerateRequest, request: Request,
             who: Principal = Depends(need("user", "POST /v1/generate"))):
    """Queue a text-to-music job; returns its id at once (202)."""
    svc = service(request)
    params, model, batch_key, cache_key = job_params(req, svc.settings, "generate")
    return _accepted(submit(svc, who, "generate", params, model, batch_key, cache_key,
                            request_id=request.state.request_id))


def _read_upload(path: Path, name: str, max_seconds: float):
    """Decode an uploaded clip (off the event loop); its length is checked before decoding."""
    import soundfile as sf

    from ..audio import load_audio
    from ..errors import AudioError

    try:
        seconds = sf.info(str(path)).duration
    except Exception:  # noqa: BLE001 - libsndfile says why in many ways; the answer is one
        raise AudioError(f"upload {name!r} is not readable audio; send wav, flac, ogg or mp3.") from None
    if seconds > max_seconds:
        raise ConfigError(f"upload {name!r} lasts {seconds:.1f} s; allowed: up to {max_seconds} s.")
    try:
        return load_audio(path)                                       # [C, T], sample rate
    except AudioError:
        raise AudioError(f"upload {name!r} is not readable audio; send wav, flac, ogg or mp3.") from None


async def _upload(svc, file: UploadFile, job_id: str, kinds: dict) -> Path:
    """Save an uploaded file as uploads/<job id><ext> after checking its type (415)."""
    ext = Path(file.filename or "").suffix.lower()
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    if ext not in kinds or not (content_type in ("application/octet-stream", "")
                                or content_type.startswith(kinds[ext])):
        raise HTTPException(415, f"upload {file.filename!r} ({content_type or 'no type'}) is not "
                            f"accepted here; send one of {sorted(kinds)}.")
    path = svc.storage / "uploads" / f"{job_id}{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(await file.read())
    os.replace(tmp, path)
    return path


def _request_json(text: str, schema):
    """The multipart ``request`` field, validated like a JSON body (422 with the same text)."""
    from pydantic import ValidationError

    try:
        return schema.model_validate_json(text or "{}")
    except ValidationError as exc:
        raise ConfigError(explain_validation(exc.errors())) from None


async def _audio_job(request: Request, who: Principal, kind: str, file: UploadFile, body: str):
    from .jobs import new_job_id

    svc = service(request)
    req = _request_json(body, GenerateRequest)
    params, model, _, _ = job_params(req, svc.settings, kind, text_required=(kind == "melody"))
    caps = capabilities(model, svc.pool.loaded())
    if kind == "melody" and caps["melody"] is False:
        raise GenerationError(f"{model!r} has no melody conditioning; choose a melody model "
                              f"(e.g. 'debug-melody' or 'facebook/musicgen-melody').")
    job_id = new_job_id()
    path = await _upload(svc, file, job_id, _AUDIO_UPLOADS)
    try:
        wav, sr = await run_in_threadpool(_read_upload, path, file.filename,
                                          max(svc.settings.max_duration, 30.0))
        seconds = wav.shape[-1] / sr
        window = caps["max_duration"] or 30.0
        if kind == "continue" and not seconds < min(params["settings"]["duration"], window):
            raise ConfigError(f"the audio prompt lasts {seconds:.2f} s but duration="
                              f"{params['settings']['duration']} s; duration is the total length, "
                              f"so it must be longer than the prompt (and the prompt shorter "
                              f"than {window} s).")
    except Exception:
        path.unlink(missing_ok=True)
        raise
    params["_upload"] = path.relative_to(svc.storage).as_posix()
    return _accepted(submit(svc, who, kind, params, model, job_id=job_id,
                            request_id=request.state.request_id))


@router.post("/v1/continue", status_code=202, tags=["generation"])
async def continue_audio(request: Request, file: UploadFile = File(..., description="audio prompt"),
                         body: str = Form("{}", alias="request",
                                          description="GenerateRequest as JSON"),
                         who: Principal = Depends(need("user", "POST /v1/continue"))):
    """Continue an uploaded clip (multipart: ``file`` + ``request`` JSON); duration = total."""
    return await _audio_job(request, who, "continue", file, body)


@router.post("/v1/melody", status_code=202, tags=["generation"])
async def melody(request: Request, file: UploadFile = File(..., description="melody audio"),
                 body: str = Form("{}", alias="request", description="GenerateRequest as JSON"),
                 who: Principal = Depends(need("user", "POST /v1/melody"))):
    """Text + melody (melody models only; 422 otherwise)."""
    return await _audio_job(request, who, "melody", file, body)


@router.post("/v1/batch", status_code=202, tags=["generation"])
async def batch(request: Request, file: UploadFile = File(..., description="CSV: prompt, ..."),
                body: str = Form("{}", alias="request", description='{"model": ...}'),
                who: Principal = Depends(need("user", "POST /v1/batch"))):
    """A CSV table through BatchRunner; files and manifest under /v1/jobs/{id}/files/."""
    from ..batch import BatchRunner, load_rows
    from .jobs import new_job_id

    svc = service(request)
    model = check_model(_request_json(body, BatchRequest).model, svc.settings)
    job_id = new_job_id()
    path = await _upload(svc, file, job_id, _CSV_UPLOADS)
    try:
        rows = load_rows(path)
        if not 1 <= len(rows) <= MAX_BATCH_ROWS:
            raise ConfigError(f"the table has {len(rows)} rows; allowed: 1 to {MAX_BATCH_ROWS}.")
        items, invalid = BatchRunner(model, svc.storage / "unused").parse(rows)
        too_long = [f"row {it.row}: duration={it.config.duration} s is over this server's "
                    f"max_duration={svc.settings.max_duration} s" for it in items
                    if it.config.duration > svc.settings.max_duration]
        if too_long or not items:
            raise ConfigError("; ".join(too_long + [r["error"] for r in invalid][:10])
                              or "the table has no valid rows.")
    finally:
        path.unlink(missing_ok=True)
    rows = [{k: v for k, v in r.items() if v == v} for r in rows]   # NaN (empty cell) -> absent
    job = submit(svc, who, "batch", {"rows": rows, "valid_rows": len(items),
                                     "invalid": [r["error"] for r in invalid]},
                 model, job_id=job_id, request_id=request.state.request_id)
    return _accepted(job)


# --- jobs ---------------------------------------------------------------------------------------
@router.get("/v1/jobs", tags=["jobs"])
def list_jobs(request: Request, limit: int = 50,
              who: Principal = Depends(need("viewer", "GET /v1/jobs"))):
    """Your newest jobs (an admin sees everyone's)."""
    svc = service(request)
    limit = max(1, min(int(limit), 500))
    jobs = svc.store.list(None if who.is_admin else who.owner, limit)
    return {"jobs": [j.public() for j in jobs]}


@router.get("/v1/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str, request: Request,
            who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}"))):
    """Status, progress, timings, error and result files of one job."""
    return visible_job(service(request), job_id, who).public()


@router.delete("/v1/jobs/{job_id}", tags=["jobs"])
def cancel_job(job_id: str, request: Request,
               who: Principal = Depends(need("user", "DELETE /v1/jobs/{id}"))):
    """Cancel a queued job (now) or a running one (at its next step); 409 if it has ended."""
    svc = service(request)
    job = visible_job(svc, job_id, who)
    status = svc.store.request_cancel(job.id) if job.status not in FINISHED else job.status
    if status not in ("cancelled", "cancelling") or job.status in FINISHED:
        raise HTTPException(409, f"job {job_id} has already ended ({status}); nothing to cancel.")
    listener = svc.worker.listeners.get(job.id)
    if status == "cancelled" and listener is not None:
        listener(None)                     # a WebSocket waiting for a job that will never run
    return JSONResponse({"id": job.id, "status": status},
                        status_code=200 if status == "cancelled" else 202)


def _finished_file(job: Job) -> None:
    if job.status != "succeeded":
        raise HTTPException(409, f"job {job.id} is {job.status}; its files exist once it has "
                            "succeeded (poll GET /v1/jobs/{id} or follow /events).")


@router.get("/v1/jobs/{job_id}/audio", tags=["jobs"])
def get_audio(job_id: str, request: Request, format: str = "wav", index: int = 0,
              who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}/audio"))):
    """Item ``index`` of a finished job as wav, flac or mp3 (converted once, then kept)."""
    from ..audio import load_audio, save_audio

    svc = service(request)
    job = visible_job(svc, job_id, who)
    _finished_file(job)
    if format not in ("wav", "flac", "mp3"):
        raise ConfigError(f"format={format!r} is not offered; allowed: ['wav', 'flac', 'mp3'].")
    files = job.result["files"]
    if job.kind == "batch" or not 0 <= index < len(files):
        raise ConfigError(f"index={index} is out of range; allowed: 0 to {len(files) - 1}"
                          + (" (batch jobs: use /files/{name})" if job.kind == "batch" else "."))
    path = svc.storage / files[index]
    if format != "wav":
        target = path.with_suffix(f".{format}")
        if not target.is_file():
            wav, sr = load_audio(path)
            save_audio(target, wav, sr)
        path = target
    return FileResponse(path, media_type=AUDIO_TYPES[f".{format}"],
                        filename=f"musicgen_{job.id[:8]}_{index}.{format}")


@router.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"])
def get_file(job_id: str, name: str, request: Request,
             who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}/files/{name}"))):
    """A file of a finished batch job (``manifest.jsonl`` or a clip), by its plain name."""
    svc = service(request)
    job = visible_job(svc, job_id, who)
    _finished_file(job)
    folder = (svc.storage / "batches" / job.id).resolve()
    path = (folder / name).resolve()
    if job.kind != "batch" or _BAD_NAME.search(name) or path.parent != folder \
            or not path.is_file():
        raise HTTPException(404, f"no file {name!r} in job {job_id}; names are listed in its "
                            "result (files, manifest).")
    return FileResponse(path)


# --- prompts, models, health --------------------------------------------------------------------
def _engineer(svc):
    from ..prompt import PromptEngineer

    loaded = svc.pool.loaded().get(svc.settings.default_model)
    return PromptEngineer(loaded.model if loaded else None)


@router.post("/v1/prompts/validate", tags=["prompts"])
def validate_prompt(req: PromptRequest, request: Request,
                    who: Principal = Depends(need("user", "POST /v1/prompts/validate"))):
    """PromptEngineer.validate: errors, warnings, token count, missing facets."""
    report = _engineer(service(request)).validate(req.prompt)
    return dict(dataclasses.asdict(report), ok=report.ok)


@router.post("/v1/prompts/improve", tags=["prompts"])
def improve_prompt(req: PromptRequest, request: Request,
                   who: Principal = Depends(need("user", "POST /v1/prompts/improve"))):
    """PromptEngineer.improve: the prompt with genre, instruments, mood and tempo filled in."""
    engineer = _engineer(service(request))
    return {"prompt": req.prompt, "improved": engineer.improve(req.prompt, seed=req.seed),
            "negative": engineer.negative(req.prompt)}


@router.get("/v1/models", tags=["models"])
def models(request: Request, who: Principal = Depends(need("viewer", "GET /v1/models"))):
    """Configured models: loaded or not, and what each can do."""
    svc = service(request)
    loaded = svc.pool.loaded()
    return {"default": svc.settings.default_model,
            "models": [dict(name=n, loaded=n in loaded, **capabilities(n, loaded))
                       for n in svc.settings.models]}


@router.get("/healthz", tags=["health"])
def healthz():
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(request: Request):
    """Ready once the default model is loaded (503 before, or if loading failed)."""
    svc = service(request)
    if not svc.worker.alive():
        return JSONResponse({"status": "failed", "detail": "a worker thread has stopped"},
                            status_code=503)
    if svc.settings.default_model in svc.pool.loaded():
        return {"status": "ready", "model": svc.settings.default_model}
    return JSONResponse({"status": "loading" if svc.load_error is None else "failed",
                         "detail": svc.load_error}, status_code=503)


@router.get("/metrics", tags=["health"])
def metrics(request: Request):
    """Prometheus metrics (admin key needed when metrics_auth is on)."""
    from .monitoring import CONTENT_TYPE_LATEST

    svc = service(request)
    if svc.settings.metrics_auth:
        need("admin", "GET /metrics")(request)
    body = svc.metrics.render(svc.store.counts(), len(svc.pool.loaded()))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
