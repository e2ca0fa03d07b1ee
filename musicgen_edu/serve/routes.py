"""REST routes: submit jobs, read them, fetch their audio, prompts, batch tables, models, health.

Every ``/v1`` route declares the role it needs with ``Depends(need("user", "..."))``, which
authenticates, authorizes, rate-limits and files the caller's owner name on the request for
the log line. Submitting never waits for the model: it validates, stores a queued job and
answers ``202 {"id": ...}``; the worker runs it; clients poll ``GET /v1/jobs/{id}``, follow
``/events`` (SSE) or use the WebSocket stream (streaming.py). The routes that take a file
(continue, melody, batch) are in uploads.py.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ..errors import ConfigError
from .jobs import FINISHED, Job
from .monitoring import CONTENT_TYPE_LATEST
from .schemas import (ACCEPTED_HEADERS, Accepted, CancelAnswer, GenerateRequest, Health, JobList,
                      JobView, ModelList, NotReady, PromptCheck, PromptImproved, PromptRequest,
                      Ready, capabilities, error_responses, file_content, job_params)
from .security import Principal

__all__ = ["router", "need", "admit", "visible_job", "submit", "accepted", "service",
           "SUBMIT_ANSWERS", "AUDIO_TYPES"]

router = APIRouter()
# The error statuses of the OpenAPI document: every one a route can answer (422 included: need()
# refuses a repeated query parameter). A viewer key may call every viewer route, so no 403.
_VIEWER = error_responses(401, 422, 429)
_USER = error_responses(401, 403, 422, 429)
SUBMIT_ANSWERS = {**_USER, **error_responses(400, 413, 503), 202: {"headers": ACCEPTED_HEADERS}}
_FILE_NOTES = {409: "The job has not succeeded (yet): its files exist once it has."}
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg"}
_BATCH_FILE_TYPES = {".wav": "audio/wav", ".jsonl": "application/jsonl"}   # a batch job's files


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
        repeated = sorted({k for k, _ in request.query_params.multi_items()
                           if len(request.query_params.getlist(k)) > 1})
        if repeated:             # ?limit=1&limit=500: which one counts is a guess; refuse it
            raise ConfigError(f"query parameter(s) {repeated} given more than once; give each "
                              "at most once.")
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
            origin = {"cached_from": hit.id}   # the cache key holds the owner: never another's
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


def accepted(job: Job) -> JSONResponse:
    """The 202 answer of every submitting route: the job's id, status and Location."""
    return JSONResponse({"id": job.id, "status": job.status, "cached": bool(
        job.result and job.result.get("cached"))}, status_code=202,
        headers={"Location": f"/v1/jobs/{job.id}"})


# --- generation --------------------------------------------------------------------------------
@router.post("/v1/generate", status_code=202, tags=["generation"], response_model=Accepted,
             responses=SUBMIT_ANSWERS)
def generate(req: GenerateRequest, request: Request,
             who: Principal = Depends(need("user", "POST /v1/generate"))):
    """Queue a text-to-music job; returns its id at once (202)."""
    svc = service(request)
    params, model, batch_key, cache_key = job_params(req, svc.settings, "generate",
                                                     owner=who.owner, loaded=svc.pool.loaded())
    return accepted(submit(svc, who, "generate", params, model, batch_key, cache_key,
                            request_id=request.state.request_id))


# --- jobs ---------------------------------------------------------------------------------------
@router.get("/v1/jobs", tags=["jobs"], response_model=JobList, responses=_VIEWER)
def list_jobs(request: Request, limit: int = 50,
              who: Principal = Depends(need("viewer", "GET /v1/jobs"))):
    """Your newest jobs (an admin sees everyone's)."""
    svc = service(request)
    limit = max(1, min(int(limit), 500))
    jobs = svc.store.list(None if who.is_admin else who.owner, limit)
    return {"jobs": [j.public() for j in jobs]}


@router.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=JobView,
            responses={**_VIEWER, **error_responses(404)})
def get_job(job_id: str, request: Request,
            who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}"))):
    """Status, progress, timings, error and result files of one job."""
    return visible_job(service(request), job_id, who).public()


@router.delete("/v1/jobs/{job_id}", tags=["jobs"], response_model=CancelAnswer,
               response_description="Cancelled: the job was queued.", responses={
                   **_USER, **error_responses(404, 409, notes={
                       409: "The job has already ended; nothing to cancel."}),
                   202: {"model": CancelAnswer, "description": "Cancelling: the job is running "
                         "and stops at its next step."}})
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


def _finished_file(job: Job, path: Path | None = None) -> None:
    """409 before a job has succeeded; 410 once its files were deleted (result_retention_s)."""
    if job.status != "succeeded":
        raise HTTPException(409, f"job {job.id} is {job.status}; its files exist once it has "
                            "succeeded (poll GET /v1/jobs/{id} or follow /events).")
    if job.result.get("expired") or (path is not None and not path.is_file()):
        raise HTTPException(410, f"job {job.id}'s files were deleted after the retention time "
                            "(setting result_retention_s); generate it again.")


@router.get("/v1/jobs/{job_id}/audio", tags=["jobs"], response_class=FileResponse, responses={
    200: file_content(*(AUDIO_TYPES[f".{f}"] for f in ("wav", "flac", "mp3")),
                      description="The clip, as the format asked for (attachment)."),
    **_VIEWER, **error_responses(404, 409, 410, notes=_FILE_NOTES)})
def get_audio(job_id: str, request: Request, format: Literal["wav", "flac", "mp3"] = "wav",
              index: int = 0, who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}/audio"))):
    """Item ``index`` of a finished job as wav, flac or mp3 (converted once, then kept)."""
    from ..audio import load_audio, save_audio

    svc = service(request)
    job = visible_job(svc, job_id, who)
    _finished_file(job)
    files = job.result["files"]
    if job.kind == "batch" or not 0 <= index < len(files):
        raise ConfigError(f"index={index} is out of range; allowed: 0 to {len(files) - 1}"
                          + (" (batch jobs: use /files/{name})" if job.kind == "batch" else "."))
    path = svc.storage / files[index]
    _finished_file(job, path)
    if format != "wav":
        target = path.with_suffix(f".{format}")
        if not target.is_file():
            wav, sr = load_audio(path)
            save_audio(target, wav, sr)
        path = target
    return FileResponse(path, media_type=AUDIO_TYPES[f".{format}"],
                        filename=f"musicgen_{job.id[:8]}_{index}.{format}")


@router.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"], response_class=FileResponse,
            responses={200: file_content(*_BATCH_FILE_TYPES.values(),
                                         description="A clip (.wav) or the manifest (.jsonl)."),
                       **_VIEWER, **error_responses(404, 409, 410, notes={
                           **_FILE_NOTES, 404: "No such job for this key, or no such file in "
                           "it (names are listed in the job's result)."})})
def get_file(job_id: str, name: str, request: Request,
             who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}/files/{name}"))):
    """A file of a finished batch job (``manifest.jsonl`` or a clip), by its plain name."""
    svc = service(request)
    job = visible_job(svc, job_id, who)
    _finished_file(job)
    # the name is looked up in the job's own list, never handed to the file system as it came
    listed = {Path(f).name for f in job.result.get("files", [])} | {"manifest.jsonl"}
    if job.kind != "batch" or name not in listed:
        raise HTTPException(404, f"no file {name!r:.80} in job {job_id}; names are listed in its "
                            "result (files, manifest).")
    path = svc.storage / "batches" / job.id / name
    _finished_file(job, path)                              # 410 once retention deleted it
    return FileResponse(path, media_type=_BATCH_FILE_TYPES.get(path.suffix,
                                                               "application/octet-stream"))


# --- prompts, models, health --------------------------------------------------------------------
def _engineer(svc):
    from ..prompt import PromptEngineer

    loaded = svc.pool.loaded().get(svc.settings.default_model)
    return PromptEngineer(loaded.model if loaded else None)


@router.post("/v1/prompts/validate", tags=["prompts"], response_model=PromptCheck,
             responses={**_USER, **error_responses(400, 413)})
def validate_prompt(req: PromptRequest, request: Request,
                    who: Principal = Depends(need("user", "POST /v1/prompts/validate"))):
    """PromptEngineer.validate: errors, warnings, token count, missing facets."""
    report = _engineer(service(request)).validate(req.prompt)
    return dict(dataclasses.asdict(report), ok=report.ok)


@router.post("/v1/prompts/improve", tags=["prompts"], response_model=PromptImproved,
             responses={**_USER, **error_responses(400, 413)})
def improve_prompt(req: PromptRequest, request: Request,
                   who: Principal = Depends(need("user", "POST /v1/prompts/improve"))):
    """PromptEngineer.improve: the prompt with genre, instruments, mood and tempo filled in."""
    engineer = _engineer(service(request))
    return {"prompt": req.prompt, "improved": engineer.improve(req.prompt, seed=req.seed),
            "negative": engineer.negative(req.prompt)}


@router.get("/v1/models", tags=["models"], response_model=ModelList, responses=_VIEWER)
def models(request: Request, who: Principal = Depends(need("viewer", "GET /v1/models"))):
    """Configured models: loaded or not, and what each can do."""
    svc = service(request)
    loaded = svc.pool.loaded()
    return {"default": svc.settings.default_model,
            "models": [dict(name=n, loaded=n in loaded, **capabilities(n, loaded))
                       for n in svc.settings.models]}


@router.get("/healthz", tags=["health"], response_model=Health)
async def healthz():
    """The process answers (on the event loop itself: never queued behind the thread pool)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=Ready, responses={503: {
    "model": NotReady, "description": "The default model is loading, or failed to load, or a "
    "worker thread has stopped."}})
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


@router.get("/metrics", tags=["health"], response_class=Response, responses={
    200: {"description": "The Prometheus text exposition format.",
          "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    **error_responses(401, 403, 422, 429, notes={
        401: "metrics_auth is on and the key is missing or unknown.",
        403: "metrics_auth is on and the key is not an admin's."})})
def metrics(request: Request):
    """Prometheus metrics (admin key needed when metrics_auth is on)."""
    from .monitoring import CONTENT_TYPE_LATEST

    svc = service(request)
    if svc.settings.metrics_auth:
        need("admin", "GET /metrics")(request)
    body = svc.metrics.render(svc.store.counts(), len(svc.pool.loaded()))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
