"""The :class:`Service`: everything the routes share, one per app (``app.state.service``).

A route reaches it through the ``ServiceDep`` dependency (deps.py); app.py builds it in
``create_app`` and runs its shutdown (:meth:`Service.begin_stop`, :meth:`Service.wait_stopped`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from ..settings import Settings
from .jobs import JobStore
from .monitoring import Metrics
from .pool import ModelPool
from .security import Auth, RateLimiter
from .tracing import Tracing
from .worker import Worker

__all__ = ["Service", "STREAMS_MARGIN_S"]

STREAMS_MARGIN_S = 3.0   # past the grace: an interrupted step ends and streams send done


@dataclass
class Service:
    """Settings, job store, model pool, worker, metrics, security and tracing of one app."""

    settings: Settings
    store: JobStore
    pool: ModelPool
    worker: Worker
    metrics: Metrics
    auth: Auth
    limiter: RateLimiter
    log: FilteringBoundLogger
    storage: Path
    load_error: str | None = None   # why the default model could not be loaded
    stopping: threading.Event = field(default_factory=threading.Event)  # set: shutdown began
    streams_deadline: float = math.inf  # time.monotonic() by which open streams send done
    open_streams: int = 0           # SSE and WebSocket streams running (event loop only)
    stopper: threading.Thread | None = None  # runs worker.stop(grace) once shutdown began
    tracing: Tracing = field(default_factory=Tracing)  # spans (tracing.py); off by default

    def begin_stop(self) -> None:
        """Shutdown begins: take no new jobs and start the worker's grace now, in a thread.

        Open streams watch ``stopping`` and end with ``done`` once their job has ended or gone
        back to the queue, at the latest at ``streams_deadline`` (streaming.py). Called on the
        event loop; a second call does nothing.
        """
        if self.stopping.is_set():
            return
        grace = self.settings.shutdown_grace_s
        self.streams_deadline = time.monotonic() + grace + STREAMS_MARGIN_S
        self.stopping.set()
        self.stopper = threading.Thread(target=self._stop_worker, args=(grace,),
                                        name="musicgen-stop", daemon=True)
        self.stopper.start()

    def _stop_worker(self, grace: float) -> None:
        self.log.info("service stopping", running=self.store.counts()["running"])
        self.worker.stop(grace)

    def wait_stopped(self) -> None:
        """Block until the worker has stopped (its grace, then an interrupt; both bounded)."""
        if self.stopper is not None:
            self.stopper.join()
