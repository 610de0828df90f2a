"""``condense serve``: the whole service on one machine -- gunicorn with the app, and local job workers.

:func:`serve` checks the settings, prepares the data directory and the databases (so the child processes do not
race to create them), then starts as child processes:

- ``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`` (``CONDENSE_WEB_WORKERS`` processes of
  ``CONDENSE_WEB_THREADS`` threads on ``CONDENSE_BIND``);
- ``CONDENSE_WORKERS`` job workers (``python -m service.cli worker``, one job at a time each).

With the defaults nothing else is needed: SQLite for metadata and the queue, a local folder for blobs. It supervises
them: a job worker that dies is restarted (at most once every 10 s per slot); if gunicorn exits, everything stops.
Ctrl-C or SIGTERM stops all children gracefully -- gunicorn finishes its requests, each worker puts its running job
back in the queue at its last checkpoint -- and kills what is still running after 40 s. The children run in their
own process groups, so the terminal's Ctrl-C reaches them once, through this process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from service.settings import Settings

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_STOP_WAIT_S = 40.0
_RESTART_MIN_INTERVAL_S = 10.0


def _prepare(settings: Settings) -> int:
    """Create the data folders and the metadata tables; return the number of users."""
    from service.queue import open_queue
    from storage import open_blob_store, open_metadata_store

    for folder in (settings.data_dir, settings.work_dir, settings.tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    with open_metadata_store(settings.database_url) as metadata:
        users = len(metadata.list_users())
    open_blob_store(settings.blob_url).close()
    open_queue(settings.broker_url).close()
    return users


def _start(command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=dict(env), start_new_session=True)


def serve(overrides: Mapping[str, str] | None = None) -> int:
    """Run gunicorn and the job workers until interrupted; return the exit status. ``overrides``: extra env vars."""
    env = {**os.environ, **(overrides or {})}
    settings = Settings.from_env(env)
    from service.worker import configure_logging

    configure_logging(settings.log_level)
    users = _prepare(settings)
    host, _, port = settings.bind.rpartition(":")
    print(f"condense: serving http://{host}:{port}/api/v1 (data in {settings.data_dir})", file=sys.stderr)
    if users == 0:
        print(
            "condense: no users yet -- create one: condense user add NAME && condense token create NAME",
            file=sys.stderr,
        )
    web_command = [
        sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()",
    ]  # fmt: skip
    worker_command = [sys.executable, "-m", "service.cli", "worker"]
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    web = _start(web_command, env)
    workers = [_start(worker_command, env) for _ in range(settings.workers)]
    started = [time.monotonic()] * len(workers)
    status = 0
    try:
        while not stopping:
            time.sleep(0.5)
            if web.poll() is not None:
                logger.error("gunicorn exited with status %s; stopping", web.returncode)
                status = web.returncode or 1
                break
            for slot, process in enumerate(workers):
                if process.poll() is not None and time.monotonic() - started[slot] >= _RESTART_MIN_INTERVAL_S:
                    logger.warning("job worker %d exited with status %s; restarting it", slot, process.returncode)
                    workers[slot] = _start(worker_command, env)
                    started[slot] = time.monotonic()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(web, workers)
    return status


def _stop_all(web: subprocess.Popen, workers: list[subprocess.Popen]) -> None:
    """Ask every child to stop (gunicorn: SIGTERM, graceful; workers: SIGINT, graceful), then kill stragglers."""
    for process, sig in [(web, signal.SIGTERM), *((worker, signal.SIGINT) for worker in workers)]:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
    deadline = time.monotonic() + _STOP_WAIT_S
    for process in [web, *workers]:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            logger.warning("child %d did not stop in time; killing it", process.pid)
            process.kill()
            process.wait()
