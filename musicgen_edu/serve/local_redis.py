"""A ``redis-server`` on loopback, for lecture 09 and the tests: the Redis store without setup.

``start_redis(folder)`` runs the ``redis-server`` on the PATH (Debian/Ubuntu and Colab:
``apt-get install redis-server``) on 127.0.0.1 at a free port, with its files in ``folder``
and the append-only file on (``appendfsync always``, as deploy/ runs it: every acknowledged
write is on disk), and waits until it answers. A deployment runs its own Redis (deploy/).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError

__all__ = ["LocalRedis", "start_redis"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedis:
    """``redis-server`` on 127.0.0.1:``port`` with its files in ``folder``; ``.url``."""

    def __init__(self, folder: str | Path, aof: bool = True, port: int = 0):
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("redis-server is not installed: apt-get install redis-server "
                              "(Colab: !apt-get -qq install redis-server), or point redis_url "
                              "at a Redis you run.")
        self.binary, self.folder, self.aof = binary, Path(folder), aof
        self.port = port or _free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        """Start it (again, on the same port and files) and wait until it answers."""
        import redis

        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else \
            ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.folder), *durability],
            stdout=(self.folder / "redis.log").open("a"), stderr=subprocess.STDOUT)
        client, deadline = redis.Redis(port=self.port), time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:    # replaying the append-only file
                    pass
                except redis.exceptions.ConnectionError:
                    if self.process.poll() is not None:
                        raise RuntimeError("redis-server exited: " + (
                            self.folder / "redis.log").read_text()[-2000:]) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """``kill -9``: only what is in the append-only file survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the server flushes and exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> LocalRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = self.process is not None and self.process.poll() is None
        return f"LocalRedis({self.url}, running={running})"


def start_redis(folder: str | Path, aof: bool = True) -> LocalRedis:
    """A redis-server on loopback with its files in ``folder`` (see the module docstring)."""
    return LocalRedis(folder, aof=aof)
