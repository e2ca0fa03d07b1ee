"""The dependencies routes declare as typed parameters: the service, the caller, its role.

As in the FastAPI template, a route's signature says what it needs, and each need is named
once here::

    @router.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, svc: ServiceDep, who: Viewer): ...

    ServiceDep     the app's Service (app.state.service)
    Viewer, User   the caller, with that role or a higher one (viewer < user < admin):
                   require(role), which authenticates (401), authorizes (403), rate-limits
                   (429), refuses a repeated query parameter (422) and files the caller's
                   owner name on the request for the log line

The route names itself in a 403 (``POST /v1/generate needs one of ['user', 'admin']``): its
method and path template come from the request, never from a copy in the route. Both
dependencies are async, so they run on the event loop (no I/O: a hash, a lock) and not in the
thread pool the sync routes share. :func:`admit` is the check itself, shared with the
WebSocket stream and app.py's answer to a body that does not parse; :func:`admit_request` is
it for one HTTP request (``/metrics`` calls it when ``metrics_auth`` is on);
:func:`visible_job` is the 404 every route about one job shares.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from ..errors import ConfigError
from .jobs import Job
from .schemas import error_responses
from .security import Principal
from .service import Service

__all__ = ["service", "ServiceDep", "operation", "admit", "admit_request", "require",
           "Viewer", "User", "VIEWER_ANSWERS", "USER_ANSWERS", "visible_job"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


async def service(conn: HTTPConnection) -> Service:
    """The app's :class:`Service`, for an HTTP request or a WebSocket (async: FastAPI runs it on
    the event loop, not in the thread pool the routes share)."""
    return conn.app.state.service


def operation(conn: HTTPConnection) -> str:
    """What a request calls, as a 403 names it: ``"GET /v1/jobs/{job_id}"``, ``"WS /v1/stream"``.

    The route that matched gives its path template; a request no route matched, its path.
    """
    route = conn.scope.get("route")
    path = route.path if route is not None else conn.url.path
    return f"{conn.scope['method'] if conn.scope['type'] == 'http' else 'WS'} {path}"


ServiceDep = Annotated[Service, Depends(service)]


def admit(svc: Service, headers, client: str, role: str, what: str,
          query_key: str | None = None) -> Principal:
    """Authenticate (401), authorize (403) and rate-limit (429) one caller; HTTP and WebSocket.

    Failed authentications count against the caller's address, so guessing keys is limited too.

    Args:
        svc: the service (its auth, limiter and metrics).
        headers: the request's headers (``X-API-Key`` or ``Authorization: Bearer``).
        client: the caller's address.
        role: the least role allowed (viewer, user or admin).
        what: the operation, for the 403 text (``"POST /v1/generate"``).
        query_key: a key from the query string (WebSocket clients in a browser).
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


def admit_request(request: Request, role: str) -> Principal:
    """:func:`admit` for an HTTP request to the route that matched; 422 for a repeated query
    parameter. Files the caller's owner name on the request (the log line, app.py)."""
    principal = admit(request.app.state.service, request.headers,
                      request.client.host if request.client else "unknown", role,
                      operation(request))
    request.scope.setdefault("state", {})["owner"] = principal.owner
    repeated = sorted({k for k, _ in request.query_params.multi_items()
                       if len(request.query_params.getlist(k)) > 1})
    if repeated:                 # ?limit=1&limit=500: which one counts is a guess; refuse it
        raise ConfigError(f"query parameter(s) {repeated} given more than once; give each "
                          "at most once.")
    return principal


@functools.cache
def require(role: str):
    """The dependency admitting a caller with ``role`` or a higher one to the route it guards.

    One function per role (cached), so FastAPI runs it once per request however many of the
    route's dependencies ask for it: a caller is rate-limited once per request. It runs on the
    event loop (a hash and a lock: no I/O), not in the thread pool the routes share.
    """

    async def caller(request: Request) -> Principal:
        return admit_request(request, role)

    caller.__name__ = caller.__qualname__ = f"require_{role}"
    return caller


Viewer = Annotated[Principal, Depends(require("viewer"))]
User = Annotated[Principal, Depends(require("user"))]
# What the role check can answer, for a route's ``responses=`` (422: a repeated query
# parameter). A viewer key may call every viewer route, so a viewer route never answers 403.
VIEWER_ANSWERS = error_responses(401, 422, 429)
USER_ANSWERS = error_responses(401, 403, 422, 429)


def visible_job(svc: Service, job_id: str, who: Principal) -> Job:
    """The job, if it exists and ``who`` may see it; 404 otherwise (never 403: ids stay private)."""
    job = svc.store.get(job_id) if _JOB_ID.match(job_id) else None
    if job is None or (job.owner != who.owner and not who.is_admin):
        raise HTTPException(404, f"no job {job_id!r} for this key; ids come from POST "
                            "/v1/generate (jobs are visible to the key owner that made them).")
    return job
