"""The service as separate processes, as deploy/ runs it: the commands and their settings.

The Dockerfile, compose.yaml and the Kubernetes manifests start exactly these commands
(tests/test_deploy.py checks it), and the process-level tests (tests/test_serve_scale.py)
start the same ones on loopback, so what is tested is what is deployed. Every other setting
comes from ``MUSICGEN_*`` environment variables (settings.py), never from flags.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from redis_server import RedisServer
from test_serve_restart import free_port

API_COMMAND = ["musicgen-edu", "serve", "--workers", "0"]   # HTTP only: queue jobs, run none
WORKER_COMMAND = ["musicgen-edu", "worker"]                 # generation only: no HTTP API
# the settings every process of one deployment shares (values differ per deployment)
SHARED_ENV = ("MUSICGEN_STORE", "MUSICGEN_REDIS_URL", "MUSICGEN_STORAGE_DIR")


class Deployment:
    """``apis`` API processes and ``workers`` worker processes on one redis-server (AOF on),
    on loopback, as deploy/compose.yaml runs them. Logs go to ``folder/<name>.log``.

    ``settings``: more ``MUSICGEN_*`` values for every process, e.g.
    ``{"MUSICGEN_LEASE_S": "3"}``.
    """

    def __init__(self, folder: Path, apis: int = 2, workers: int = 2,
                 settings: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.redis = RedisServer(self.folder / "redis", aof=True)
        self.env = {**os.environ, "MUSICGEN_STORE": "redis", "MUSICGEN_REDIS_URL": self.redis.url,
                    "MUSICGEN_STORAGE_DIR": str(self.folder / "storage"),
                    "MUSICGEN_API_HOST": "127.0.0.1", "MUSICGEN_LOG_JSON": "true",
                    "MUSICGEN_DEFAULT_MODEL": "debug",
                    "OMP_NUM_THREADS": "1", **(settings or {})}
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        for i in range(apis):
            self.start(f"api{i + 1}", API_COMMAND, "MUSICGEN_API_PORT")
        for i in range(workers):
            self.start(f"worker{i + 1}", WORKER_COMMAND, "MUSICGEN_WORKER_PORT")
        self.wait_ready(list(self.processes))

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.ports[n]}" for n in self.processes if n.startswith("api")]

    def start(self, name: str, command: list[str], port_setting: str) -> None:
        """Start ``command`` (the console script of this Python) with its own port."""
        port = self.ports.setdefault(name, free_port())
        script = str(Path(sys.executable).with_name(command[0]))
        self.processes[name] = subprocess.Popen(
            [script, *command[1:]], env={**self.env, port_setting: str(port)},
            stdout=(self.folder / f"{name}.log").open("a"), stderr=subprocess.STDOUT)

    def wait_ready(self, names: list[str], timeout: float = 180) -> None:
        """Until every named process answers ``/readyz`` with 200."""
        deadline = time.monotonic() + timeout
        for name in names:
            try:
                wait_ready(self.ports[name], self.processes[name], deadline - time.monotonic())
            except (RuntimeError, TimeoutError) as exc:
                raise type(exc)(f"{name}: {exc}; its log: {self.log(name)[-3000:]}") from None

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """``kill -9``: no grace, no clean-up."""
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def terminate(self, name: str, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator stops a pod; the exit code."""
        self.processes[name].send_signal(signal.SIGTERM)
        return self.processes[name].wait(timeout)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until the process listening on ``port`` answers ``/readyz`` with 200."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f} s")
        time.sleep(0.2)
