"""Security: API keys with roles, per-key rate limits, and request size limits.

The checks one request meets, in order::

    BodyLimit (ASGI)   Content-Length, or the bytes actually received, above the limit -> 413
    Auth.identify      X-API-Key: <key> or Authorization: Bearer <key>; none/unknown -> 401
    Auth.authorize     the key's role below the route's role -> 403
                       (viewer: read jobs < user: + generate < admin: everything, all jobs)
    RateLimiter.wait   a token bucket per key (per client address without auth) -> 429 + Retry-After

Keys are compared as SHA-256 digests with ``hmac.compare_digest`` against *every* configured
key (no early exit), so response time says nothing about how much of a key was right. Keys
are never logged or echoed: logs name the key's owner. Auth can be off only in the
development profile (settings.py refuses it in production); then every caller is the
``local`` admin.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException

from ..settings import ROLES, Settings

__all__ = ["Principal", "Auth", "RateLimiter", "BodyLimit"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's owner and role (never the key itself)."""

    owner: str                      # jobs are filed under this name
    role: str                       # viewer, user or admin
    identity: str                   # what the rate limit counts: key fingerprint or address

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Auth:
    """API-key authentication and role checks, from the service settings."""

    def __init__(self, settings: Settings):
        self.enabled = settings.auth_enabled
        self._keys = [(hashlib.sha256(k.key.encode()).digest(), k) for k in settings.keys()]

    @staticmethod
    def _presented(headers) -> str | None:
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if not key and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        return key or None

    def identify(self, headers, client: str = "unknown", query_key: str | None = None) -> Principal:
        """The caller of a request with these headers (``query_key``: WebSocket browsers)."""
        if not self.enabled:
            return Principal("local", "admin", f"addr:{client}")
        presented = self._presented(headers) or query_key
        if not presented:
            raise HTTPException(401, "missing API key: send 'X-API-Key: <key>' or "
                                "'Authorization: Bearer <key>'.",
                                headers={"WWW-Authenticate": "Bearer"})
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        match = None
        for known, key in self._keys:          # no early exit: constant time over all keys
            if hmac.compare_digest(known, digest):
                match = key
        if match is None:
            raise HTTPException(401, "unknown API key; check the key you were given (keys are "
                                "configured with MUSICGEN_API_KEYS).",
                                headers={"WWW-Authenticate": "Bearer"})
        return Principal(match.owner, match.role, "key:" + digest.hex()[:12])

    @staticmethod
    def authorize(principal: Principal, role: str, what: str) -> None:
        """403 unless ``principal`` has ``role`` or a higher one."""
        if ROLES.index(principal.role) < ROLES.index(role):
            allowed = list(ROLES[ROLES.index(role):])
            raise HTTPException(403, f"this key's role is {principal.role!r}; {what} needs one of "
                                f"{allowed}.")


class RateLimiter:
    """Token buckets: ``burst`` requests at once, refilled at ``per_minute`` per minute."""

    def __init__(self, per_minute: int, burst: int):
        self.rate = per_minute / 60.0           # tokens per second (0 = no limit)
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, at)
        self._lock = threading.Lock()

    def wait(self, identity: str) -> float:
        """Take one token for ``identity``: 0 if allowed, else seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[identity] = (tokens - 1, now)
                return 0.0
            self._buckets[identity] = (tokens, now)
            if len(self._buckets) > 10_000:      # forget full buckets (idle callers)
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * self.rate < self.burst}
            return (1 - tokens) / self.rate

    def check(self, identity: str) -> None:
        """429 with Retry-After (whole seconds) when ``identity`` is over its limit."""
        wait = self.wait(identity)
        if wait > 0:
            seconds = max(1, math.ceil(wait))        # Retry-After takes whole seconds
            raise HTTPException(429, f"rate limit exceeded ({self.rate * 60:g} requests per "
                                f"minute, bursts of {self.burst}); retry in {seconds} s.",
                                headers={"Retry-After": str(seconds)})


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit (uploads have a larger one)."""

    def __init__(self, app, max_body: int, max_upload: int, upload_paths: tuple[str, ...]):
        self.app, self.max_body, self.max_upload = app, max_body, max_upload
        self.upload_paths = upload_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        upload = scope["path"] in self.upload_paths
        limit = self.max_upload if upload else self.max_body
        message = (f"{'upload' if upload else 'request body'} too large: the limit is {limit} "
                   f"bytes (setting {'max_upload_bytes' if upload else 'max_body_bytes'}).")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_json(send, 413, message)
        seen = 0

        async def counting_receive():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise HTTPException(413, message)
            return msg

        await self.app(scope, counting_receive, send)


async def _send_json(send, status: int, detail: str) -> None:
    """An error answer from the middleware, shaped like the app's (schemas.ErrorResponse)."""
    import json
    from http import HTTPStatus

    body = json.dumps({"detail": detail, "type": HTTPStatus(status).phrase}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
