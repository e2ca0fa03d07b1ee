"""Health routes, for orchestrators and monitoring: alive, ready, Prometheus metrics.

::

    GET /healthz    200 while the process answers (no key: probes carry none)
    GET /readyz     200 once the default model is loaded; 503 while it loads, if it failed
                    to load, or if a worker thread has stopped (no key)
    GET /metrics    Prometheus text; an admin key when the setting metrics_auth is on
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..deps import ServiceDep, admit_request
from ..monitoring import CONTENT_TYPE_LATEST
from ..schemas import Health, NotReady, Ready, error_responses

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz():
    """The process answers (on the event loop itself: never queued behind the thread pool)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses={503: {
    "model": NotReady, "description": "The default model is loading, or failed to load, or a "
    "worker thread has stopped."}})
def readyz(svc: ServiceDep):
    """Ready once the default model is loaded (503 before, or if loading failed)."""
    if not svc.worker.alive():
        return JSONResponse({"status": "failed", "detail": "a worker thread has stopped"},
                            status_code=503)
    if svc.settings.default_model in svc.pool.loaded():
        return {"status": "ready", "model": svc.settings.default_model}
    return JSONResponse({"status": "loading" if svc.load_error is None else "failed",
                         "detail": svc.load_error}, status_code=503)


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "The Prometheus text exposition format.",
          "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    **error_responses(401, 403, 422, 429, notes={
        401: "metrics_auth is on and the key is missing or unknown.",
        403: "metrics_auth is on and the key is not an admin's."})})
def metrics(request: Request, svc: ServiceDep):
    """Prometheus metrics (admin key needed when metrics_auth is on)."""
    if svc.settings.metrics_auth:
        admit_request(request, "admin")   # the role check only where the setting asks for it
    body = svc.metrics.render(svc.store.counts(), len(svc.pool.loaded()))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
