"""Progress and audio while a job runs: Server-Sent Events and a WebSocket audio stream.

``GET /v1/jobs/{id}/events`` (SSE, ``text/event-stream``) sends an ``event: progress`` line
each time the job's status or step changes (checked every 0.1 s) and a final ``event: done``
with the whole job, then closes; a comment line every 15 s keeps proxies from closing it.

``WS /v1/stream`` runs :meth:`MusicGenerator.stream` as a job and forwards its chunks::

    client -> {"prompt": "...", "duration": 8, ...}          same fields as POST /v1/generate
    server -> {"type": "start", "id": ..., "sample_rate": 32000, "channels": 1,
               "format": "f32le"}                             before the first chunk
    server -> binary frames: float32 little-endian samples, channels interleaved
    server -> {"type": "done", "id": ..., "status": "succeeded", "audio_url": ...}
    errors -> {"type": "error", "status": 401|403|422|429, "detail": ...}, then close 4000+status

Browsers cannot set headers on a WebSocket, so the key may also come as ``?api_key=``.
Closing the socket cancels the job.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from ..errors import MusicGenEduError
from .jobs import FINISHED, new_job_id
from .routes import admit, need, service, submit, visible_job
from .schemas import GenerateRequest, explain_validation, job_params
from .security import Principal

__all__ = ["router"]

router = APIRouter()


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/v1/jobs/{job_id}/events", tags=["jobs"])
async def events(job_id: str, request: Request,
                 who: Principal = Depends(need("viewer", "GET /v1/jobs/{id}/events"))):
    """Server-Sent Events: progress while the job runs, then ``done`` with the job."""
    svc = service(request)
    visible_job(svc, job_id, who)

    async def stream():
        last, beat = None, time.monotonic()
        while True:
            job = svc.store.get(job_id)
            state = (job.status, job.step, job.total)
            if state != last:
                last = state
                yield _sse("progress", {"id": job.id, "status": job.status, "step": job.step,
                                        "total": job.total})
            if job.status in FINISHED:
                yield _sse("done", job.public())
                return
            if await request.is_disconnected():
                return
            if time.monotonic() - beat > 15:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _refuse(ws: WebSocket, status: int, detail: str) -> None:
    await ws.send_json({"type": "error", "status": status, "detail": detail})
    await ws.close(code=4000 + status)


@router.websocket("/v1/stream")
async def stream(ws: WebSocket):
    """Generate one prompt and send its audio while it is decoded (see the module docstring)."""
    svc = ws.app.state.service
    await ws.accept()
    try:
        who = admit(svc, ws.headers, ws.client.host if ws.client else "unknown", "user",
                    "WS /v1/stream", query_key=ws.query_params.get("api_key"))
        message = await asyncio.wait_for(ws.receive(), timeout=60)
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is None:
            return await _refuse(ws, 422, "the first message must be the request as JSON text, "
                                 'e.g. {"prompt": "lo-fi piano", "duration": 8}.')
        try:
            req = GenerateRequest.model_validate_json(message["text"])
        except ValueError as exc:
            errors = exc.errors() if hasattr(exc, "errors") else []
            return await _refuse(ws, 422, explain_validation(errors) if errors else str(exc))
        params, model, _, _ = job_params(req, svc.settings, "stream")
        if len(params["prompts"]) != 1:
            return await _refuse(ws, 422, f"the stream takes one prompt, got "
                                 f"{len(params['prompts'])}; use POST /v1/generate for several.")
    except HTTPException as exc:
        return await _refuse(ws, exc.status_code, exc.detail)
    except MusicGenEduError as exc:
        return await _refuse(ws, 422, str(exc))
    except (asyncio.TimeoutError, WebSocketDisconnect):
        return
    loop, chunks = asyncio.get_running_loop(), asyncio.Queue()
    job_id = new_job_id()
    svc.worker.listeners[job_id] = lambda chunk: loop.call_soon_threadsafe(chunks.put_nowait, chunk)
    try:
        submit(svc, who, "stream", params, model, job_id=job_id)
    except HTTPException as exc:                     # queue full
        svc.worker.listeners.pop(job_id, None)
        return await _refuse(ws, exc.status_code, exc.detail)
    try:
        await _forward(ws, svc, job_id, model, chunks)
    except Exception:                                # the client went away mid-send
        svc.store.request_cancel(job_id)
    finally:
        svc.worker.listeners.pop(job_id, None)


async def _forward(ws: WebSocket, svc, job_id: str, model: str, chunks: asyncio.Queue) -> None:
    """Send chunks until the worker says the run ended; a closed socket cancels the job."""
    started = False
    incoming = asyncio.ensure_future(ws.receive())
    try:
        while True:
            outgoing = asyncio.ensure_future(chunks.get())
            done, _ = await asyncio.wait({outgoing, incoming}, timeout=1.0,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:                    # nothing for a second: has the job ended unrun?
                outgoing.cancel()
                if svc.store.get(job_id).status in FINISHED:
                    break
                continue
            if incoming in done:
                if incoming.result()["type"] == "websocket.disconnect":
                    outgoing.cancel()
                    svc.store.request_cancel(job_id)
                    return
                incoming = asyncio.ensure_future(ws.receive())   # other messages are ignored
            if outgoing not in done:
                outgoing.cancel()
                continue
            chunk = outgoing.result()                               # [1, C, t] or None
            if chunk is None:
                break
            if not started:
                started = True
                rate = svc.pool.loaded()[model].sample_rate
                await ws.send_json({"type": "start", "id": job_id, "sample_rate": rate,
                                    "channels": chunk.shape[1], "format": "f32le"})
            await ws.send_bytes(chunk[0].T.contiguous().numpy().astype("<f4").tobytes())
        job = svc.store.get(job_id)
        for _ in range(250):                        # the worker records the end right after
            if job.status in FINISHED:
                break
            await asyncio.sleep(0.02)
            job = svc.store.get(job_id)
        await ws.send_json({"type": "done", "id": job_id, "status": job.status,
                            "error": job.error, "audio_url": f"/v1/jobs/{job_id}/audio"})
        await ws.close(code=1000)
    finally:
        incoming.cancel()
