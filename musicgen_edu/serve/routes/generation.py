"""Generation routes: submit a job from text, a clip to continue, a melody or a CSV table.

Submitting never waits for the model::

    POST /v1/generate      JSON GenerateRequest
    POST /v1/continue      multipart: file (audio prompt) + request (GenerateRequest as JSON)
    POST /v1/melody        multipart: file (melody) + request (GenerateRequest as JSON)
    POST /v1/batch         multipart: file (CSV table) + request ({"model": ...})
        validate (422, uploads 415)  ->  submit: a cached result, or a queued job (503 if the
        queue is full)  ->  202 {"id", "status", "cached"}, Location: /v1/jobs/{id}

The worker runs the job; clients follow it with the jobs routes (routes/jobs.py) or, for
audio while it is decoded, the WebSocket stream (streaming.py, which submits with
:func:`submit` too).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ...errors import GenerationError
from ...generation import check_continuation
from ..deps import USER_ANSWERS, ServiceDep, User
from ..jobs import Job, new_job_id
from ..schemas import (
    ACCEPTED_HEADERS,
    Accepted,
    BatchRequest,
    GenerateRequest,
    capabilities,
    check_model,
    error_responses,
    job_params,
)
from ..security import Principal
from ..service import Service
from ..tracing import trace_params
from ..uploads import AUDIO_UPLOADS, CSV_UPLOADS, parse_table, read_audio, request_json, save_upload

__all__ = ["router", "submit", "accepted"]

router = APIRouter(tags=["generation"])
_SUBMIT_ANSWERS = {**USER_ANSWERS, **error_responses(400, 413, 503),
                   202: {"headers": ACCEPTED_HEADERS}}
_UPLOAD_ANSWERS = {**_SUBMIT_ANSWERS, **error_responses(415)}
_RequestField = Annotated[str, Form(alias="request", description="GenerateRequest as JSON")]


def submit(svc: Service, who: Principal, kind: str, params: dict[str, Any], model: str,
           batch_key: str = "", cache_key: str = "", job_id: str | None = None,
           request_id: str | None = None) -> Job:
    """Store a queued job (or a cached result; the store wakes a worker). 503: queue full."""
    params["_request_id"] = request_id           # the worker's log lines carry it too
    params.update(trace_params())                # the worker's spans join the request's trace
    if svc.settings.result_cache and cache_key:
        hit = svc.store.find_cached(cache_key)
        if (hit is not None and hit.result is not None     # a succeeded job has a result
                and all((svc.storage / f).is_file() for f in hit.result["files"])):
            origin = {"cached_from": hit.id}   # the cache key holds the owner: never another's
            job = Job(owner=who.owner, kind=kind, model=model, params=params,
                      items=len(params.get("prompts", [None])), cache_key=cache_key,
                      status="succeeded", result={**{k: v for k, v in hit.result.items()
                                                     if k != "cached_from"},
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
              id=job_id or new_job_id())
    svc.store.add(job)
    svc.log.info("job queued", job=job.id, kind=kind, model=model, items=job.items)
    svc.log.debug("job prompts", job=job.id, prompts=params.get("prompts"))
    return job


def accepted(job: Job) -> JSONResponse:
    """The 202 answer of every submitting route: the job's id, status and Location."""
    return JSONResponse({"id": job.id, "status": job.status, "cached": bool(
        job.result and job.result.get("cached"))}, status_code=202,
        headers={"Location": f"/v1/jobs/{job.id}"})


@router.post("/v1/generate", status_code=202, response_model=Accepted, responses=_SUBMIT_ANSWERS)
def generate(req: GenerateRequest, request: Request, svc: ServiceDep, who: User):
    """Queue a text-to-music job; returns its id at once (202)."""
    params, model, batch_key, cache_key = job_params(req, svc.settings, "generate",
                                                     owner=who.owner, loaded=svc.pool.loaded())
    return accepted(submit(svc, who, "generate", params, model, batch_key, cache_key,
                           request_id=request.state.request_id))


async def _audio_job(request: Request, svc: Service, who: Principal, kind: str,
                     file: UploadFile, body: str) -> JSONResponse:
    """Validate the request, save and check the clip, queue a continue or melody job."""
    req = request_json(body, GenerateRequest)
    params, model, _, _ = job_params(req, svc.settings, kind, text_required=(kind == "melody"),
                                     owner=who.owner, loaded=svc.pool.loaded())
    caps = capabilities(model, svc.pool.loaded())
    if kind == "melody" and caps["melody"] is False:
        raise GenerationError(f"{model!r} has no melody conditioning; choose a melody model "
                              f"(e.g. 'debug-melody' or 'facebook/musicgen-melody').")
    job_id = new_job_id()
    path = await save_upload(svc.storage, file, job_id, AUDIO_UPLOADS)
    try:
        wav, sr = await run_in_threadpool(read_audio, path, file.filename,
                                          max(svc.settings.max_duration, 30.0))
        seconds = wav.shape[-1] / sr
        window = caps["max_duration"] or 30.0
        if kind == "continue":                   # a 422 now, not a job that fails later
            check_continuation(seconds, params["settings"]["duration"], window)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    params["_upload"] = path.relative_to(svc.storage).as_posix()
    return accepted(await run_in_threadpool(submit, svc, who, kind, params, model, job_id=job_id,
                                            request_id=request.state.request_id))


@router.post("/v1/continue", status_code=202, response_model=Accepted,
             responses=_UPLOAD_ANSWERS)
async def continue_audio(request: Request, svc: ServiceDep, who: User,
                         file: Annotated[UploadFile, File(description="audio prompt")],
                         body: _RequestField = "{}"):
    """Continue an uploaded clip (multipart: ``file`` + ``request`` JSON); duration = total."""
    return await _audio_job(request, svc, who, "continue", file, body)


@router.post("/v1/melody", status_code=202, response_model=Accepted, responses=_UPLOAD_ANSWERS)
async def melody(request: Request, svc: ServiceDep, who: User,
                 file: Annotated[UploadFile, File(description="melody audio")],
                 body: _RequestField = "{}"):
    """Text + melody (melody models only; 422 otherwise)."""
    return await _audio_job(request, svc, who, "melody", file, body)


@router.post("/v1/batch", status_code=202, response_model=Accepted, responses=_UPLOAD_ANSWERS)
async def batch(request: Request, svc: ServiceDep, who: User,
                file: Annotated[UploadFile, File(description="CSV: prompt, ...")],
                body: Annotated[str, Form(alias="request", description='{"model": ...}')] = "{}"):
    """A CSV table through BatchRunner; files and manifest under /v1/jobs/{id}/files/."""
    model = check_model(request_json(body, BatchRequest).model, svc.settings)
    job_id = new_job_id()
    path = await save_upload(svc.storage, file, job_id, CSV_UPLOADS)
    try:
        rows, items, invalid = await run_in_threadpool(parse_table, path, model, svc)
    finally:
        path.unlink(missing_ok=True)
    job = await run_in_threadpool(submit, svc, who, "batch", {
        "rows": rows, "valid_rows": len(items), "invalid": [r["error"] for r in invalid]},
        model, job_id=job_id, request_id=request.state.request_id)
    return accepted(job)
