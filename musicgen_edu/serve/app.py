"""The FastAPI application: wiring of settings, store, worker, security and monitoring.

``create_app(settings)`` builds one :class:`Service` (everything a route needs) and the app
around it. Middleware, outermost first: RequestLog (request id, metrics, log line), BodyLimit
(413), CORS. Errors of the library become HTTP answers here, once, with their own text::

    ConfigError, AudioError, GenerationError -> 422     ModelLoadError -> 503
    other MusicGenEduError -> 400                      pydantic type errors -> 422

Start-up (lifespan): re-queue jobs a dead process left running, load the default model in
the background (``/readyz`` is 503 until it is loaded), start the worker. Shutdown: stop
taking jobs, give running ones ``shutdown_grace_s``, re-queue what is still running, close
the store. :func:`start_server` runs all of it in a background thread (notebooks, tests);
:func:`run_server` in the foreground (``musicgen-edu serve``).
"""

from __future__ import annotations

import asyncio
import socket
from http import HTTPStatus
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AudioError, ConfigError, GenerationError, ModelLoadError, MusicGenEduError
from ..settings import Settings, load_settings
from .jobs import JobStore, SQLiteJobStore
from .monitoring import Metrics, RequestLog, configure_logging, get_logger
from .schemas import explain_validation
from .security import Auth, BodyLimit, RateLimiter
from .worker import ModelPool, Worker

__all__ = ["Service", "create_app", "start_server", "run_server", "ServerHandle"]

UPLOAD_PATHS = ("/v1/continue", "/v1/melody", "/v1/batch")
_STATUS = {ConfigError: 422, AudioError: 422, GenerationError: 422, ModelLoadError: 503}


@dataclass
class Service:
    """Everything the routes share; one per app (``app.state.service``)."""

    settings: Settings
    store: JobStore
    pool: ModelPool
    worker: Worker
    metrics: Metrics
    auth: Auth
    limiter: RateLimiter
    log: object
    storage: Path
    load_error: str | None = None   # why the default model could not be loaded


def _lock_storage(storage: Path):
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


def create_app(settings: Settings | None = None, **overrides) -> FastAPI:
    """The service as an ASGI app. ``settings`` default: :func:`load_settings` (+ overrides)."""
    from .. import __version__
    from . import routes, streaming

    settings = settings or load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    storage = Path(settings.storage_dir)
    for folder in ("audio", "uploads", "batches"):
        (storage / folder).mkdir(parents=True, exist_ok=True)
    lock = _lock_storage(storage)
    store, metrics, pool = SQLiteJobStore(storage / "jobs.sqlite3"), Metrics(), ModelPool(settings)
    svc = Service(settings, store, pool, Worker(settings, store, pool, metrics), metrics,
                  Auth(settings), RateLimiter(settings.rate_limit_per_minute,
                                              settings.rate_limit_burst), get_logger(), storage)

    def load_default() -> None:
        try:
            pool.get(settings.default_model)
        except Exception as exc:  # reported by /readyz; requests for it fail with the reason
            svc.load_error = f"{type(exc).__name__}: {exc}"
            svc.log.error("default model failed to load", model=settings.default_model,
                          error=svc.load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        requeued = store.requeue_running()
        svc.log.info("service starting", env=settings.env, model=settings.default_model,
                     requeued=requeued, queued=store.counts()["queued"], auth=settings.auth_enabled)
        loader = threading.Thread(target=load_default, name="musicgen-load", daemon=True)
        loader.start()
        svc.worker.start()
        svc.worker.notify()
        yield
        svc.log.info("service stopping", running=store.counts()["running"])
        await asyncio.to_thread(svc.worker.stop, settings.shutdown_grace_s)
        await asyncio.to_thread(loader.join, 300)   # never leave a load half-way at exit
        if svc.worker.stopped():
            store.close()
        else:                                        # a thread still inside a step: leave it
            svc.log.warning("a worker thread did not stop; the store stays open")
        lock.close()                                 # frees the storage folder
        svc.log.info("service stopped")

    app = FastAPI(title="musicgen_edu", version=__version__, lifespan=lifespan,
                  description="Text-to-music with MusicGen: jobs, streaming, prompts, batches.")
    app.state.service = svc
    app.include_router(routes.router)
    app.include_router(streaming.router)

    @app.exception_handler(MusicGenEduError)
    async def library_error(request: Request, exc: MusicGenEduError):
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": str(exc), "type": type(exc).__name__}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail, "type": HTTPStatus(exc.status_code).phrase},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": explain_validation(exc.errors()), "type": "ConfigError"},
                            status_code=422)

    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"], expose_headers=["X-Request-ID", "Retry-After",
                                                            "Location"])
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes,
                       max_upload=settings.max_upload_bytes, upload_paths=UPLOAD_PATHS)
    app.add_middleware(RequestLog, metrics=metrics)
    return app


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerHandle:
    """A uvicorn server in a background thread: ``.url``, ``.stop()``, a context manager."""

    def __init__(self, app: FastAPI, host: str, port: int, grace_s: float):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=max(1, int(grace_s)))
        self.app, self.server = app, uvicorn.Server(config)
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, name="musicgen-server", daemon=True)

    @property
    def service(self) -> Service:
        return self.app.state.service

    def stop(self, timeout: float = 60) -> None:
        """Shut down gracefully (running jobs get ``shutdown_grace_s``, then are re-queued)."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle({self.url}, running={self.thread.is_alive()})"


def start_server(settings: Settings | None = None, *, port: int | None = None,
                 wait_ready: bool = True, timeout: float = 120, **overrides) -> ServerHandle:
    """Start the service in a background thread (notebooks, tests) and wait until it answers.

    Args:
        settings: as for :func:`create_app` (default: :func:`load_settings` with ``overrides``).
        port: the TCP port; default ``settings.api_port``; ``0`` picks a free one.
        wait_ready: also wait until the default model is loaded (``/readyz`` is 200).
        timeout: seconds to wait before raising ``TimeoutError``.
        **overrides: setting values, e.g. ``storage_dir=tmp, max_batch_size=8``.
    """
    settings = settings or load_settings(**overrides)
    port = settings.api_port if port is None else (port or _free_port(settings.api_host))
    handle = ServerHandle(create_app(settings), settings.api_host, port, settings.shutdown_grace_s)
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
    import uvicorn

    settings = settings or load_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                log_level="warning", access_log=False,
                timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)))
