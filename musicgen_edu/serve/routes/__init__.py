"""The REST routes, one router per resource; app.py includes each of :data:`ROUTERS`.

::

    generation.py   POST /v1/generate, /v1/continue, /v1/melody, /v1/batch  -> 202 {"id"}
    jobs.py         GET /v1/jobs, GET|DELETE /v1/jobs/{id}, /audio, /files/{name}
    prompts.py      POST /v1/prompts/validate, /v1/prompts/improve
    models.py       GET /v1/models
    health.py       GET /healthz, /readyz, /metrics
    web.py          GET / (the web page), /web/{name} (its script and style; not in OpenAPI)

Streams (SSE ``/v1/jobs/{id}/events``, WebSocket ``/v1/stream``) are in ../streaming.py. A
route declares what it needs as typed parameters (deps.py): ``svc: ServiceDep`` and the
caller with its least role, ``who: Viewer`` or ``who: User``; its ``response_model`` and
``responses=`` make the OpenAPI document describe every answer.
"""

from . import generation, health, jobs, models, prompts, web

__all__ = ["ROUTERS"]

ROUTERS = (generation.router, jobs.router, prompts.router, models.router, health.router,
           web.router)
