"""A real ``redis-server`` on loopback for the tests (Debian's package; .ci/run installs it).

:func:`RedisServer` is the package's :class:`~musicgen_edu.serve.local_redis.LocalRedis`
(append-only file on or off; ``kill -9`` and restart on the same folder and port), after
:func:`require_redis`: without ``redis-server`` the tests that need it skip, saying so;
``MUSICGEN_REQUIRE_REDIS=1`` (set by .ci/run) makes that a failure instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tooling import missing_tool

from musicgen_edu.serve.local_redis import LocalRedis


def require_redis() -> None:
    """Skip (or fail, under MUSICGEN_REQUIRE_REDIS=1) when redis-server is missing."""
    if shutil.which("redis-server") is None:
        missing_tool("redis-server is not installed (apt-get install redis-server; .ci/run "
                     "installs it)", "MUSICGEN_REQUIRE_REDIS")


def RedisServer(folder: Path, aof: bool = False) -> LocalRedis:
    require_redis()
    return LocalRedis(folder, aof=aof)
