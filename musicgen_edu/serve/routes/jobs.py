"""Jobs routes: list your jobs, read one, cancel it, fetch its audio or its batch files.

Every route about one job answers 404 for an id the caller may not see (deps.visible_job),
never 403: ids stay private. A finished job's files::

    GET /v1/jobs/{id}/audio?format=wav|flac|mp3&index=i   item i of a generate, continue,
                                                          melody or stream job (converted once)
    GET /v1/jobs/{id}/files/{name}                        a batch job's clip or manifest.jsonl
        409 before the job has succeeded, 410 once retention deleted its files

Progress while a job runs is streamed by ``GET /v1/jobs/{id}/events`` (streaming.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse

from ...errors import ConfigError
from ..deps import USER_ANSWERS, VIEWER_ANSWERS, ServiceDep, User, Viewer, visible_job
from ..jobs import FINISHED, Job
from ..schemas import CancelAnswer, JobList, JobView, error_responses, file_content
from ..uploads import AUDIO_TYPES

__all__ = ["router"]

router = APIRouter(tags=["jobs"])
_FILE_NOTES = {409: "The job has not succeeded (yet): its files exist once it has."}
_BATCH_FILE_TYPES = {".wav": "audio/wav", ".jsonl": "application/jsonl"}   # a batch job's files


def _finished_result(job: Job, path: Path | None = None) -> dict[str, Any]:
    """A succeeded job's result, whose files (``path``: this one) are kept: 409 before the job
    has succeeded; 410 once its files were deleted (result_retention_s)."""
    if job.status != "succeeded" or job.result is None:
        raise HTTPException(409, f"job {job.id} is {job.status}; its files exist once it has "
                            "succeeded (poll GET /v1/jobs/{id} or follow /events).")
    if job.result.get("expired") or (path is not None and not path.is_file()):
        raise HTTPException(410, f"job {job.id}'s files were deleted after the retention time "
                            "(setting result_retention_s); generate it again.")
    return job.result


@router.get("/v1/jobs", response_model=JobList, responses=VIEWER_ANSWERS)
def list_jobs(svc: ServiceDep, who: Viewer, limit: int = 50):
    """Your newest jobs (an admin sees everyone's)."""
    limit = max(1, min(int(limit), 500))
    jobs = svc.store.list(None if who.is_admin else who.owner, limit)
    return {"jobs": [j.public() for j in jobs]}


@router.get("/v1/jobs/{job_id}", response_model=JobView,
            responses={**VIEWER_ANSWERS, **error_responses(404)})
def get_job(job_id: str, svc: ServiceDep, who: Viewer):
    """Status, progress, timings, error and result files of one job."""
    return visible_job(svc, job_id, who).public()


@router.delete("/v1/jobs/{job_id}", response_model=CancelAnswer,
               response_description="Cancelled: the job was queued.", responses={
                   **USER_ANSWERS, **error_responses(404, 409, notes={
                       409: "The job has already ended; nothing to cancel."}),
                   202: {"model": CancelAnswer, "description": "Cancelling: the job is running "
                         "and stops at its next step."}})
def cancel_job(job_id: str, svc: ServiceDep, who: User):
    """Cancel a queued job (now) or a running one (at its next step); 409 if it has ended."""
    job = visible_job(svc, job_id, who)
    status = svc.store.request_cancel(job.id) if job.status not in FINISHED else job.status
    if status not in ("cancelled", "cancelling") or job.status in FINISHED:
        raise HTTPException(409, f"job {job_id} has already ended ({status}); nothing to cancel.")
    if status == "cancelled" and job.kind == "stream":
        svc.worker.relay.publish(job.id, None)  # a WebSocket waiting for a job never to run
    return JSONResponse({"id": job.id, "status": status},
                        status_code=200 if status == "cancelled" else 202)


@router.get("/v1/jobs/{job_id}/audio", response_class=FileResponse, responses={
    200: file_content(*(AUDIO_TYPES[f".{f}"] for f in ("wav", "flac", "mp3")),
                      description="The clip, as the format asked for (attachment)."),
    **VIEWER_ANSWERS, **error_responses(404, 409, 410, notes=_FILE_NOTES)})
def get_audio(job_id: str, svc: ServiceDep, who: Viewer,
              format: Literal["wav", "flac", "mp3"] = "wav", index: int = 0):
    """Item ``index`` of a finished job as wav, flac or mp3 (converted once, then kept)."""
    from ...audio import load_audio, save_audio

    job = visible_job(svc, job_id, who)
    files = _finished_result(job)["files"]
    if job.kind == "batch" or not 0 <= index < len(files):
        raise ConfigError(f"index={index} is out of range; allowed: 0 to {len(files) - 1}"
                          + (" (batch jobs: use /files/{name})" if job.kind == "batch" else "."))
    path = svc.storage / files[index]
    _finished_result(job, path)
    if format != "wav":
        target = path.with_suffix(f".{format}")
        if not target.is_file():
            wav, sr = load_audio(path)
            save_audio(target, wav, sr)
        path = target
    return FileResponse(path, media_type=AUDIO_TYPES[f".{format}"],
                        filename=f"musicgen_{job.id[:8]}_{index}.{format}")


@router.get("/v1/jobs/{job_id}/files/{name}", response_class=FileResponse,
            responses={200: file_content(*_BATCH_FILE_TYPES.values(),
                                         description="A clip (.wav) or the manifest (.jsonl)."),
                       **VIEWER_ANSWERS, **error_responses(404, 409, 410, notes={
                           **_FILE_NOTES, 404: "No such job for this key, or no such file in "
                           "it (names are listed in the job's result)."})})
def get_file(job_id: str, name: str, svc: ServiceDep, who: Viewer):
    """A file of a finished batch job (``manifest.jsonl`` or a clip), by its plain name."""
    job = visible_job(svc, job_id, who)
    result = _finished_result(job)
    # the name is looked up in the job's own list, never handed to the file system as it came
    listed = {Path(f).name for f in result.get("files", [])} | {"manifest.jsonl"}
    if job.kind != "batch" or name not in listed:
        raise HTTPException(404, f"no file {name!r:.80} in job {job_id}; names are listed in its "
                            "result (files, manifest).")
    path = svc.storage / "batches" / job.id / name
    _finished_result(job, path)                            # 410 once retention deleted it
    return FileResponse(path, media_type=_BATCH_FILE_TYPES.get(path.suffix,
                                                               "application/octet-stream"))
