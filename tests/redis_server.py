"""A real ``redis-server`` on loopback for the tests (Debian's package; .ci/run installs it).

:class:`RedisServer` starts one on a free port in its own folder, with the append-only file
on (``appendfsync always``, as deploy/ runs it) or off, and can ``kill -9`` and restart it on
the same folder and port. Without ``redis-server`` the tests that need it skip, saying so;
``MUSICGEN_REQUIRE_REDIS=1`` (set by .ci/run) makes that a failure instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_redis() -> None:
    """Skip (or fail, under MUSICGEN_REQUIRE_REDIS=1) when redis-server is missing."""
    if not os.access(REDIS_SERVER, os.X_OK):
        message = ("redis-server is not installed (apt-get install redis-server; .ci/run "
                   "installs it)")
        if os.environ.get("MUSICGEN_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with its files in ``folder``."""

    def __init__(self, folder: Path, aof: bool = False):
        require_redis()
        self.folder, self.aof, self.port = Path(folder), aof, free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else \
            ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.folder), "--protected-mode", "yes", *aof],
            stdout=(self.folder / "redis.log").open("a"), stderr=subprocess.STDOUT)
        import redis

        client, deadline = redis.Redis(port=self.port), time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.BusyLoadingError:   # replaying the append-only file
                pass
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError((self.folder / "redis.log").read_text()[-2000:]) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """``kill -9``: what is not in the append-only file is lost."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
