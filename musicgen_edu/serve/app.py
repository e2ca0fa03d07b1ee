"""The FastAPI application: wiring of settings, store, worker, security and monitoring.

``create_app(settings)`` builds one :class:`~musicgen_edu.serve.service.Service` (everything
a route needs) and the app around it: the routers of routes/ (one per resource) and of
streaming.py. Middleware, outermost first: RequestLog (request id, metrics, log line), BodyLimit
(413), CORS. Errors of the library become HTTP answers here, once, with their own text::

    ConfigError, AudioError, GenerationError -> 422     ModelLoadError -> 503
    other MusicGenEduError -> 400                      pydantic type errors -> 422

Start-up (lifespan): re-queue jobs a dead process left running, load the default model in
the background (``/readyz`` is 503 until it is loaded), start the worker. Shutdown (SIGTERM,
Ctrl-C, ``server.stop()``) takes about ``shutdown_grace_s``, not twice that: uvicorn alone
would first wait that long for open connections (an SSE stream of a running job never ends
by itself) and only then let the lifespan start the worker's grace. :class:`GracefulServer`
starts both at the signal::

    t = 0                 stop listening; Service.begin_stop(): service.stopping is set and,
                          in a thread, the worker takes no new job and waits for running ones
    t < grace             a job that ends in time is saved; its streams send done (succeeded)
    t = grace             still running: interrupted at the next step and re-queued (runs again,
                          same seeds, at the next start); its streams send done (queued)
    t <= grace + 3 s      every SSE and WebSocket stream has sent done (streaming.py); uvicorn
                          closes what is left, the lifespan closes the store

:func:`start_server` runs all of it in a background thread (notebooks, tests);
:func:`run_server` in the foreground (``musicgen-edu serve``). Both cap a WebSocket message
at ``max_body_bytes`` (+ 64 KiB, so a request a little over gets the stream's own 413 text;
uvicorn closes the socket with code 1009 on anything bigger, before the app reads it).
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import TextIO

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AudioError, ConfigError, GenerationError, ModelLoadError, MusicGenEduError
from ..settings import Settings, load_settings
from . import streaming
from .deps import admit, operation
from .monitoring import Metrics, RequestLog, configure_logging, get_logger
from .pool import ModelPool
from .redis_limiter import RedisRateLimiter
from .redis_store import UNAVAILABLE
from .relay import LocalRelay, RedisRelay
from .routes import ROUTERS
from .schemas import explain_validation
from .security import Auth, BodyLimit, RateLimiter
from .service import STREAMS_MARGIN_S, Service
from .stores import open_store
from .tracing import Tracing
from .worker import Worker

__all__ = ["create_app", "start_server", "run_server", "ServerHandle", "GracefulServer"]

UPLOAD_PATHS = ("/v1/continue", "/v1/melody", "/v1/batch")
WS_SLACK_BYTES = 65_536  # WebSocket frames up to max_body_bytes + this reach the app (413 text)
_STATUS = {ConfigError: 422, AudioError: 422, GenerationError: 422, ModelLoadError: 503}


def _lock_storage(storage: Path) -> TextIO:
    """One service per storage folder: a second one would re-queue the first one's running
    jobs at start-up and run them twice. An advisory lock, freed when the process dies."""
    handle = open(storage / "service.lock", "a+")
    try:
        import fcntl
    except ImportError:                  # Windows: no flock; one service per folder by convention
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"storage_dir '{storage}' is in use by another running service; stop "
                          "it first (server.stop() in a notebook) or choose another storage_dir "
                          "(MUSICGEN_STORAGE_DIR).") from None
    return handle


def _service(settings: Settings, storage: Path, tracing: Tracing) -> Service:
    """The service's parts: job store, model pool, worker, metrics, security, logger, tracing.

    ``store = "redis"``: the jobs, the result cache, the rate limits and the stream chunks are
    shared with every other process on the same Redis (redis_store.py, relay.py)."""
    store, metrics, pool = open_store(settings), Metrics(), ModelPool(settings)
    per_minute, burst = settings.rate_limit_per_minute, settings.rate_limit_burst
    if settings.store == "redis":
        limiter: RateLimiter = RedisRateLimiter(settings.redis_url, per_minute, burst,
                                                settings.redis_prefix)
        relay: LocalRelay | RedisRelay = RedisRelay(settings.redis_url, settings.redis_prefix)
    else:
        limiter, relay = RateLimiter(per_minute, burst), LocalRelay()
    worker = Worker(settings, store, pool, metrics, tracing, relay)
    return Service(settings, store, pool, worker, metrics, Auth(settings), limiter, get_logger(),
                   storage, tracing=tracing)


def _load_default(svc: Service) -> None:
    """Load the default model (a thread at start-up); a failure is kept for ``/readyz``."""
    try:
        svc.pool.get(svc.settings.default_model)
    except Exception as exc:  # reported by /readyz; requests for it fail with the reason
        svc.load_error = f"{type(exc).__name__}: {exc}"
        svc.log.error("default model failed to load", model=svc.settings.default_model,
                      error=svc.load_error)


def _lifespan(svc: Service,
              lock: TextIO | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's start-up and shutdown (see the module docstring); ``lock`` (the SQLite
    store's folder) is freed last."""
    settings, store = svc.settings, svc.store

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        requeued = store.requeue_running(settings.max_attempts)
        svc.log.info("service starting", env=settings.env, model=settings.default_model,
                     requeued=requeued, queued=store.counts()["queued"], auth=settings.auth_enabled)
        loader = threading.Thread(target=_load_default, args=(svc,), name="musicgen-load",
                                  daemon=True)
        loader.start()
        svc.worker.start()
        yield
        svc.begin_stop()                             # begun at the signal under GracefulServer
        await asyncio.to_thread(svc.wait_stopped)
        await asyncio.to_thread(loader.join, 300)   # never leave a load half-way at exit
        if svc.worker.stopped():
            store.close()
        else:                                        # a thread still inside a step: leave it
            svc.log.warning("a worker thread did not stop; the store stays open")
        if lock is not None:
            lock.close()                             # frees the storage folder
        svc.tracing.shutdown()                       # the last spans go to the collector
        svc.log.info("service stopped")

    return lifespan


def _auth_first(svc: Service, request: Request) -> StarletteHTTPException | None:
    """401/403/429 for a /v1 request that failed before its route's dependencies ran (a
    body that does not parse): a caller without the key, or the role, learns nothing of
    the body's rules, and failed keys count against its address as everywhere (a parse
    error must not become an unlimited key check). GET routes need a viewer, every other
    /v1 route a user. A request whose route already admitted it is not counted twice."""
    if not request.url.path.startswith("/v1/") or "owner" in request.scope.get("state", {}):
        return None
    try:
        admit(svc, request.headers, request.client.host if request.client else "unknown",
              "viewer" if request.method in ("GET", "HEAD") else "user", operation(request))
    except StarletteHTTPException as denied:
        return denied
    return None


def _allowed(app: FastAPI, path: str) -> str:
    """The ``Allow`` header of a 405: every method of the path, not one route's."""
    methods = {m.upper() for template, operations in app.openapi()["paths"].items()
               if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path)
               for m in operations}
    return ", ".join(sorted(methods))


def _add_error_handlers(app: FastAPI, svc: Service) -> None:
    """Library errors, HTTP errors and validation errors as JSON answers (module docstring)."""

    @app.exception_handler(MusicGenEduError)
    async def library_error(request: Request, exc: MusicGenEduError):
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": str(exc), "type": type(exc).__name__}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:                   # FastAPI could not read the body at all
            exc = _auth_first(svc, request) or exc
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(app, request.url.path)}
        return JSONResponse({"detail": exc.detail, "type": HTTPStatus(exc.status_code).phrase},
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(UNAVAILABLE[0])
    @app.exception_handler(UNAVAILABLE[1])
    async def store_down(request: Request, exc: Exception):
        svc.log.error("job store unreachable", error=f"{type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "the job store (Redis) is unreachable; retry in a few "
                             "seconds.", "type": "Service Unavailable"}, status_code=503,
                            headers={"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError):
        if (denied := _auth_first(svc, request)) is not None:
            return await http_error(request, denied)
        return JSONResponse({"detail": explain_validation(exc.errors()), "type": "ConfigError"},
                            status_code=422)


def create_app(settings: Settings | None = None, *, tracer_provider=None, **overrides) -> FastAPI:
    """The service as an ASGI app. ``settings`` default: :func:`load_settings` (+ overrides).

    ``tracer_provider``: an OpenTelemetry SDK provider for this app's spans (tests:
    ``tracing.in_memory_provider()``); default: OTLP export if ``otel_endpoint`` is set, else
    no tracing (serve/tracing.py).
    """
    from .. import __version__

    settings = settings or load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    storage = Path(settings.storage_dir)
    for folder in ("audio", "uploads", "batches"):
        (storage / folder).mkdir(parents=True, exist_ok=True)
    # one process per SQLite store; a Redis store is shared (its storage_dir too: a volume)
    lock = _lock_storage(storage) if settings.store == "sqlite" else None
    svc = _service(settings, storage, Tracing.from_settings(settings.otel_endpoint,
                                                            tracer_provider))
    app = FastAPI(title="musicgen_edu", version=__version__, lifespan=_lifespan(svc, lock),
                  description="Text-to-music with MusicGen: jobs, streaming, prompts, batches.")
    app.state.service = svc
    for router in (*ROUTERS, streaming.router):
        app.include_router(router)
    _add_error_handlers(app, svc)
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"], expose_headers=["X-Request-ID", "Retry-After",
                                                            "Location"])
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes,
                       max_upload=settings.max_upload_bytes, upload_paths=UPLOAD_PATHS)
    app.add_middleware(RequestLog, metrics=svc.metrics)
    svc.tracing.instrument(app)                      # outermost: the span covers the rest
    return app


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class GracefulServer(uvicorn.Server):
    """uvicorn's server, with the service's stop begun at the signal (see the module docstring).

    uvicorn's own shutdown stops listening, closes every WebSocket at once (code 1012: the
    stream would lose its ``done`` message, and the closed socket would cancel its job) and
    waits ``timeout_graceful_shutdown`` for HTTP responses. This one first starts the worker's
    grace, then waits while streams are open (until ``streams_deadline`` + 1 s), then lets
    uvicorn close what is left within what remains of ``shutdown_grace_s + STREAMS_MARGIN_S``.
    """

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets=None) -> None:
        svc, start = self.service, time.monotonic()
        for server in self.servers:
            server.close()                       # no new connections while streams end
        svc.begin_stop()
        while svc.open_streams and not self.force_exit \
                and time.monotonic() < svc.streams_deadline + 1:
            await asyncio.sleep(0.05)
        # uvicorn's wait for the other connections gets the rest of the same budget
        budget = svc.settings.shutdown_grace_s + STREAMS_MARGIN_S
        # uvicorn declares it int | None, but only hands it to asyncio.timeout(), which takes
        # seconds as a float: the wrong type is uvicorn's annotation
        self.config.timeout_graceful_shutdown = max(  # type: ignore[assignment]
            1.0, budget - (time.monotonic() - start))
        await super().shutdown(sockets)


def _server(app: FastAPI, host: str, port: int) -> GracefulServer:
    """The uvicorn server both :func:`run_server` and :class:`ServerHandle` run."""
    settings = app.state.service.settings
    tls = settings.tls_certfile is not None          # HTTPS: uvicorn's own TLS options
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            ws_max_size=settings.max_body_bytes + WS_SLACK_BYTES,
                            timeout_graceful_shutdown=math.ceil(
                                settings.shutdown_grace_s + STREAMS_MARGIN_S),
                            ssl_certfile=str(settings.tls_certfile) if tls else None,
                            ssl_keyfile=str(settings.tls_keyfile) if tls else None)
    return GracefulServer(config, app.state.service)


class ServerHandle:
    """A uvicorn server in a background thread: ``.url``, ``.stop()``, a context manager."""

    def __init__(self, app: FastAPI, host: str, port: int):
        self.app, self.server = app, _server(app, host, port)
        scheme = "https" if app.state.service.settings.tls_certfile is not None else "http"
        self.url = f"{scheme}://{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, name="musicgen-server", daemon=True)

    @property
    def service(self) -> Service:
        return self.app.state.service

    def stop(self, timeout: float | None = None) -> None:
        """Shut down gracefully (running jobs get ``shutdown_grace_s``, then are re-queued).

        Waits ``timeout`` seconds at most (default: the grace + 60 s).
        """
        self.server.should_exit = True
        self.thread.join(timeout if timeout is not None
                         else self.service.settings.shutdown_grace_s + 60)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle({self.url}, running={self.thread.is_alive()})"


def start_server(settings: Settings | None = None, *, port: int | None = None,
                 wait_ready: bool = True, timeout: float = 120, tracer_provider=None,
                 **overrides) -> ServerHandle:
    """Start the service in a background thread (notebooks, tests) and wait until it answers.

    Args:
        settings: as for :func:`create_app` (default: :func:`load_settings` with ``overrides``).
        port: the TCP port; default ``settings.api_port``; ``0`` picks a free one.
        wait_ready: also wait until the default model is loaded (``/readyz`` is 200).
        timeout: seconds to wait before raising ``TimeoutError``.
        tracer_provider: as for :func:`create_app`.
        **overrides: setting values, e.g. ``storage_dir=tmp, max_batch_size=8``.
    """
    settings = settings or load_settings(**overrides)
    port = settings.api_port if port is None else (port or _free_port(settings.api_host))
    handle = ServerHandle(create_app(settings, tracer_provider=tracer_provider),
                          settings.api_host, port)
    handle.thread.start()
    deadline = time.monotonic() + timeout
    while not handle.server.started:
        if not handle.thread.is_alive() or time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start on {handle.url} within {timeout} s "
                               "(is the port in use? try api_port=0).")
        time.sleep(0.02)
    svc = handle.service
    while wait_ready and settings.default_model not in svc.pool.loaded():
        if svc.load_error or time.monotonic() > deadline:
            handle.stop()
            raise TimeoutError(f"the default model {settings.default_model!r} is not ready: "
                               f"{svc.load_error or f'still loading after {timeout} s'}.")
        time.sleep(0.05)
    return handle


def run_server(settings: Settings | None = None) -> None:
    """Serve in the foreground until Ctrl-C / SIGTERM (what ``musicgen-edu serve`` runs)."""
    settings = settings or load_settings()
    server = _server(create_app(settings), settings.api_host, settings.api_port)
    server.run()                     # a signal that stopped it is raised again at the end
    if not server.started:           # start-up failed (port in use, lifespan error): say so
        raise SystemExit(3)          # as uvicorn.run does
