"""Rate limits every replica shares: security.py's token buckets, kept in Redis.

One Lua script per request takes a token from the caller's bucket (``{prefix}:rate:{identity}``:
tokens and the time they were counted), refilled at ``per_minute`` up to ``burst``, on Redis's
own clock (``TIME``), so the replicas' clocks do not matter; an idle bucket expires by itself.
A key's burst spent on one replica is spent on all of them (tests/test_serve_scale.py).
"""

from __future__ import annotations

from .redis_store import connect
from .security import RateLimiter

__all__ = ["RedisRateLimiter"]

_LIMIT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = math.min(burst, (tonumber(b[1]) or burst) + (now - (tonumber(b[2]) or now)) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter(RateLimiter):
    """:class:`~musicgen_edu.serve.security.RateLimiter`'s token buckets, kept in Redis so
    every replica spends the same tokens (Redis's clock, so replicas' clocks do not matter)."""

    def __init__(self, url: str, per_minute: int, burst: int, prefix: str = "musicgen"):
        super().__init__(per_minute, burst)
        self.redis, self.prefix = connect(url), prefix
        self._take = self.redis.register_script(_LIMIT)

    def wait(self, identity: str) -> float:
        if self.rate <= 0:
            return 0.0
        return float(self._take(keys=[f"{self.prefix}:rate:{identity}"],
                                args=[self.rate, self.burst]))
