"""Progress and audio while a job runs: Server-Sent Events and a WebSocket audio stream.

``GET /v1/jobs/{id}/events`` (SSE, ``text/event-stream``) sends an ``event: progress`` line
each time the job's status or step changes (checked every 0.1 s) and a final ``event: done``
with the whole job, then closes; a comment line every 15 s keeps proxies from closing it.

``WS /v1/stream`` runs :meth:`MusicGenerator.stream` as a job and forwards its chunks::

    client -> {"prompt": "...", "duration": 8, ...}          same fields as POST /v1/generate,
                                                              at most max_body_bytes
    server -> {"type": "start", "id": ..., "sample_rate": 32000, "channels": 1,
               "format": "f32le"}                             before the first chunk
    server -> binary frames: float32 little-endian samples, channels interleaved
    server -> {"type": "done", "id": ..., "status": "succeeded", "audio_url": ...}
    errors -> {"type": "error", "status": 401|403|413|422|429|503, "detail": ...},
              then close 4000+status

Browsers cannot set headers on a WebSocket, so the key may also come as ``?api_key=``.
Closing the socket cancels the job (unless the service is stopping: see below).

**When the service stops** (SIGTERM, ``server.stop()``; app.py) every open stream still ends
with its ``done`` message, carrying the job's state at that moment: ``succeeded`` (or failed,
cancelled) if the job ended within ``shutdown_grace_s``; ``queued`` if it was interrupted and
re-queued, or had not started (it runs again, with the same seeds, when the service next
starts; poll ``GET /v1/jobs/{id}`` then); ``running`` only if its step outlasted the grace by
``STREAMS_MARGIN_S``. New WebSocket requests are refused with 503 from then on.

Store reads and writes (SQLite, durable commits) run in threads, never on the event loop, so
one slow disk does not stall every other connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from ..errors import MusicGenEduError
from .deps import VIEWER_ANSWERS, ServiceDep, Viewer, admit, operation, visible_job
from .jobs import FINISHED, Job, new_job_id
from .routes.generation import submit
from .schemas import GenerateRequest, error_responses, explain_validation, job_params
from .security import Principal
from .service import Service

if TYPE_CHECKING:
    import torch

__all__ = ["router"]

router = APIRouter()


# One Server-Sent Event, as the OpenAPI document describes it (3.1: ``schema`` is one event).
_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"enum": ["progress", "done"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "progress: {id, status, step, total}; done: the job."}}}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _get(svc: Service, job_id: str) -> Job:
    """The job, read in a thread: an SQLite read waits for the store's lock and the disk."""
    job = await asyncio.to_thread(svc.store.get, job_id)
    if job is None:          # a stream's job was visible or submitted, and jobs are never deleted
        raise LookupError(f"job {job_id} is not in the store")
    return job


def _settled(svc: Service, job: Job) -> bool:
    """Whether a stream may send ``done`` now (see "When the service stops" above)."""
    if job.status in FINISHED:
        return True
    if not svc.stopping.is_set():
        return False
    # stopping: a queued job is not run again here once the worker threads have ended
    return (job.status == "queued" and svc.worker.stopped()) \
        or time.monotonic() > svc.streams_deadline


@router.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"description": "event: progress {id, status, step, total} at each "
                             "change, then event: done with the job (as GET /v1/jobs/{id}).",
                             "content": {"text/event-stream": {"schema": _EVENT}}},
                       **VIEWER_ANSWERS, **error_responses(404)})
async def events(job_id: str, request: Request, svc: ServiceDep, who: Viewer):
    """Server-Sent Events: progress while the job runs, then ``done`` with the job."""
    await asyncio.to_thread(visible_job, svc, job_id, who)

    async def stream():
        last, beat = None, time.monotonic()
        svc.open_streams += 1                   # the server waits for it at shutdown
        try:
            while True:
                job = await _get(svc, job_id)
                state = (job.status, job.step, job.total)
                if state != last:
                    last = state
                    yield _sse("progress", {"id": job.id, "status": job.status,
                                            "step": job.step, "total": job.total})
                if _settled(svc, job):
                    yield _sse("done", job.public())
                    return
                if await request.is_disconnected():
                    return
                if time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.1)
        finally:
            svc.open_streams -= 1

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _refuse(ws: WebSocket, status: int, detail: str) -> None:
    await ws.send_json({"type": "error", "status": status, "detail": detail})
    await ws.close(code=4000 + status)


def _message_bytes(message: Mapping[str, Any]) -> int:
    """Size of a WebSocket message as sent (text counts its UTF-8 bytes)."""
    if message.get("bytes") is not None:
        return len(message["bytes"])
    return len((message.get("text") or "").encode())


async def _request(ws: WebSocket, svc: Service) -> tuple[Principal, dict[str, Any], str] | None:
    """Admit the caller and read its request, the first message: ``(who, params, model)``, or
    None if the client left. A refusal raises: HTTPException (401, 403, 413, 422, 429, 503) or
    MusicGenEduError (422), which :func:`stream` sends as the error message."""
    limit = svc.settings.max_body_bytes
    who = admit(svc, ws.headers, ws.client.host if ws.client else "unknown", "user",
                operation(ws), query_key=ws.query_params.get("api_key"))
    message = await asyncio.wait_for(ws.receive(), timeout=60)
    if message["type"] == "websocket.disconnect":
        return None
    size = _message_bytes(message)
    if size > limit:                          # the HTTP body limit, for the WebSocket too
        raise HTTPException(413, f"request message too large: {size} bytes; the limit is "
                            f"{limit} bytes (setting max_body_bytes).")
    if message.get("text") is None:
        raise HTTPException(422, "the first message must be the request as JSON text, "
                            'e.g. {"prompt": "lo-fi piano", "duration": 8}.')
    try:
        req = GenerateRequest.model_validate_json(message["text"])
    except ValidationError as exc:              # not JSON, or not the request's schema
        raise HTTPException(422, explain_validation(exc.errors())) from None
    params, model, _, _ = job_params(req, svc.settings, "stream", owner=who.owner,
                                     loaded=svc.pool.loaded())
    if len(params["prompts"]) != 1:
        raise HTTPException(422, f"the stream takes one prompt, got {len(params['prompts'])}; "
                            "use POST /v1/generate for several.")
    if svc.stopping.is_set():
        raise HTTPException(503, "the service is stopping; retry in a few seconds (a restarted "
                            "service takes new streams).")
    return who, params, model


@router.websocket("/v1/stream")
async def stream(ws: WebSocket, svc: ServiceDep):
    """Generate one prompt and send its audio while it is decoded (see the module docstring)."""
    await ws.accept()
    try:
        request = await _request(ws, svc)
    except HTTPException as exc:
        return await _refuse(ws, exc.status_code, exc.detail)
    except MusicGenEduError as exc:
        return await _refuse(ws, 422, str(exc))
    except (asyncio.TimeoutError, WebSocketDisconnect):
        return
    if request is None:
        return
    who, params, model = request
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[torch.Tensor | None, int]] = asyncio.Queue()
    job_id = new_job_id()
    unsubscribe = svc.worker.relay.subscribe(          # relay.py: from whichever worker runs it
        job_id, lambda chunk, rate: loop.call_soon_threadsafe(chunks.put_nowait, (chunk, rate)))
    try:
        await asyncio.to_thread(submit, svc, who, "stream", params, model, job_id=job_id)
    except HTTPException as exc:                     # queue full
        unsubscribe()
        return await _refuse(ws, exc.status_code, exc.detail)
    svc.open_streams += 1                            # the server waits for it at shutdown
    ended = False
    try:
        ended = await _forward(ws, svc, job_id, chunks)
    except Exception:                                # the client went away mid-send
        ended = False
    finally:
        svc.open_streams -= 1
        unsubscribe()
        if not ended and not svc.stopping.is_set():  # the client left: cancel the job
            _cancel_soon(svc, job_id)


def _cancel_soon(svc: Service, job_id: str) -> None:
    """Cancel the job from a thread of its own: it happens even while this handler is being
    cancelled (a client that left may take its task with it), and never on the event loop.
    While the service stops, a stream's job is left to the shutdown (re-queued, not cancelled).
    """
    threading.Thread(target=svc.store.request_cancel, args=(job_id,), name="musicgen-cancel",
                     daemon=True).start()


async def _forward(ws: WebSocket, svc: Service, job_id: str,
                   chunks: asyncio.Queue[tuple[torch.Tensor | None, int]]) -> bool:
    """Send chunks until the worker says the run ended, then ``done``: True; False if the
    client closed the socket first (the caller cancels the job)."""
    started = False
    incoming = asyncio.ensure_future(ws.receive())
    try:
        while True:
            outgoing = asyncio.ensure_future(chunks.get())
            done, _ = await asyncio.wait({outgoing, incoming}, timeout=1.0,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:                    # nothing for a second: has the job ended unrun?
                outgoing.cancel()
                if _settled(svc, await _get(svc, job_id)):
                    break
                continue
            if incoming in done:
                if incoming.result()["type"] == "websocket.disconnect":
                    outgoing.cancel()
                    return False
                incoming = asyncio.ensure_future(ws.receive())   # other messages are ignored
            if outgoing not in done:
                outgoing.cancel()
                continue
            chunk, rate = outgoing.result()                         # [1, C, t] or None
            if chunk is None:
                break
            if not started:
                started = True
                await ws.send_json({"type": "start", "id": job_id, "sample_rate": rate,
                                    "channels": chunk.shape[1], "format": "f32le"})
            await ws.send_bytes(chunk[0].T.contiguous().numpy().astype("<f4").tobytes())
        await _send_done(ws, svc, job_id)
        return True
    finally:
        incoming.cancel()


async def _send_done(ws: WebSocket, svc: Service, job_id: str) -> None:
    """Send ``done`` with the job's state once it has settled (the worker records the end
    right after its last chunk; 5 s at most), and close the socket."""
    job, deadline = await _get(svc, job_id), time.monotonic() + 5
    while not _settled(svc, job) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        job = await _get(svc, job_id)
    await ws.send_json({"type": "done", "id": job_id, "status": job.status,
                        "error": job.error, "audio_url": f"/v1/jobs/{job_id}/audio"})
    await ws.close(code=1000)
