"""Real gunicorn on loopback, serving the app with ``service.gunicorn_conf`` (the production configuration).

:func:`start_gunicorn` runs it with a data folder and extra ``CONDENSE_*`` variables and waits for ``/health``;
:class:`LiveServer` holds the process, its URL and log, and stops it.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port
from tests.service.conftest import service_env
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int
    root: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
        connection = self.connection(timeout)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gunicorn(root: Path, **extra: str) -> LiveServer:
    """gunicorn with the app on a free loopback port, every file under ``root``; waits until ``/health`` is 200."""
    port = free_port()
    env = {
        **os.environ,
        **service_env(root, **{"CONDENSE_BIND": f"127.0.0.1:{port}", "CONDENSE_LOG_LEVEL": "WARNING", **extra}),
        "PYTHONPATH": str(REPO),
    }
    root.mkdir(parents=True, exist_ok=True)
    log = root / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
    with log.open("wb") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    server = LiveServer(process, port, root, log)

    def healthy() -> bool:
        try:
            return server.get("/api/v1/health", timeout=5)[0] == 200
        except OSError:
            return False

    try:
        wait_until(
            healthy,
            "gunicorn to answer /health",
            60,
            0.2,
            give_up=lambda: None if process.poll() is None else "it exited",
            details=lambda: log.read_text(errors="replace")[-4000:],
        )
    except BaseException:
        server.stop()
        raise
    return server
