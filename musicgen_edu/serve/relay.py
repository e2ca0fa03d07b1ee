"""The relay: a stream job's audio chunks, from the worker that decodes them to the WebSocket.

``WS /v1/stream`` (streaming.py) subscribes to its job before queueing it; the worker
publishes each ``[B, C, t]`` chunk as :meth:`MusicGenerator.stream` yields it, with its
sample rate, then ``None`` when the run has ended (finished, failed, cancelled or
interrupted)::

    API process: relay.subscribe(job_id, listener)   ... listener(chunk, sr) ... listener(None, 0)
    worker:      relay.publish(job_id, chunk, sr)    ... relay.publish(job_id, None)

:class:`LocalRelay` calls the listener directly: the worker runs in the API's process (the
SQLite store, or ``serve`` with ``workers`` > 0). :class:`RedisRelay` carries the chunks
through a Redis Stream per job (``XADD`` / ``XREAD``), so the worker may be another process
(``musicgen-edu worker``). A stream keeps its chunks ``KEEP_S`` after the last one and never
more than ``MAX_CHUNKS``, so a subscriber that comes a little late still gets them all.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

__all__ = ["Listener", "Relay", "LocalRelay", "RedisRelay"]

# what a stream subscribes with: called with each [B, C, t] chunk and its sample rate (Hz),
# then with (None, 0) at the end
Listener = Callable[["torch.Tensor | None", int], object]
KEEP_S = 600                 # a job's chunk stream lives this long after its last chunk
MAX_CHUNKS = 10_000          # and holds at most this many chunks (600 s at 16 chunks/s)


class Relay(Protocol):
    """Chunks of stream jobs from the worker (publish) to the WebSocket handler (subscribe)."""

    def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]: ...
    def publish(self, job_id: str, chunk: torch.Tensor | None, sample_rate: int = 0) -> None: ...


class LocalRelay:
    """Worker and WebSocket in one process: publish calls the listener (from the worker
    thread; the listener hands the chunk to the event loop itself)."""

    def __init__(self) -> None:
        self._listeners: dict[str, Listener] = {}

    def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]:
        self._listeners[job_id] = listener

        def unsubscribe() -> None:
            self._listeners.pop(job_id, None)

        return unsubscribe

    def publish(self, job_id: str, chunk: torch.Tensor | None, sample_rate: int = 0) -> None:
        listener = self._listeners.get(job_id)
        if listener is not None:
            listener(chunk, sample_rate)


class RedisRelay:
    """One Redis Stream per job, ``{prefix}:chunks:{id}``: entries ``{head, data}``, the
    chunk's ``[B, C, t]`` shape and sample rate and its float32 samples, and ``{end: 1}`` last."""

    def __init__(self, url: str, prefix: str = "musicgen"):
        from .redis_store import connect

        self.redis, self.prefix = connect(url), prefix

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:chunks:{job_id}"

    def publish(self, job_id: str, chunk: torch.Tensor | None, sample_rate: int = 0) -> None:
        entry: dict[str, bytes | int]
        if chunk is None:
            entry = {"end": 1}
        else:
            entry = {"head": struct.pack("<4I", *chunk.shape, sample_rate),
                     "data": chunk.float().contiguous().numpy().astype("<f4").tobytes()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self._key(job_id), entry, maxlen=MAX_CHUNKS, approximate=True)
        pipe.expire(self._key(job_id), KEEP_S)
        pipe.execute()

    def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Read the job's stream in a thread, from its first chunk, until ``end`` or until the
        returned function is called; each chunk goes to ``listener``, then ``None``."""
        stop = threading.Event()
        threading.Thread(target=self._read, args=(job_id, listener, stop), daemon=True,
                         name=f"musicgen-relay-{job_id[:8]}").start()
        return stop.set

    def _read(self, job_id: str, listener: Listener, stop: threading.Event) -> None:
        import numpy as np
        import torch

        last = "0"
        try:
            while not stop.is_set():
                found = self.redis.xread({self._key(job_id): last}, count=16, block=500)
                for _, entries in found or ():
                    for entry_id, entry in entries:
                        last = entry_id
                        if b"end" in entry:
                            return
                        *shape, rate = struct.unpack("<4I", entry[b"head"])
                        samples = np.frombuffer(entry[b"data"], dtype="<f4").reshape(shape)
                        listener(torch.from_numpy(samples.copy()), rate)
        finally:
            listener(None, 0)
