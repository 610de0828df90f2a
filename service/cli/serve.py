"""``condense serve``: the whole service on one machine -- gunicorn with the app, and local job workers.

:func:`serve` checks the settings, prepares the data directory and the databases (so the child processes do not
race to create them), then starts as child processes:

- ``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`` (``CONDENSE_WEB_WORKERS`` processes of
  ``CONDENSE_WEB_THREADS`` threads on ``CONDENSE_BIND``);
- ``CONDENSE_WORKERS`` job workers (``python -m service.cli worker``, one job at a time each).

With the defaults nothing else is needed: SQLite for metadata and the queue, a local folder for blobs.

Before the children start, on a first start:

- **The first user.** When the metadata store has no users at all, an admin user ``admin`` is created with one API
  token, printed once on the console and written to ``<data dir>/first-token`` (mode 0600), so a fresh install can
  be used at once: ``export CONDENSE_TOKEN=$(cat <data dir>/first-token)``. Later starts (users exist) do nothing.
  Make more users and tokens with ``condense user add`` and ``condense token create``.
- **The demo pool.** When pool ``demo`` does not exist, it is built (``condense pool demo`` as a child process, with
  its progress lines on the console; about 20 s on 2 CPU cores; :mod:`service.cli.demo_pool`), so that a first job,
  whose ``pool`` option defaults to ``demo``, has something to mine. ``CONDENSE_DEMO_POOL=0`` skips this. A build
  that fails is reported and serving goes on (jobs naming ``demo`` then fail until ``condense pool demo`` works);
  Ctrl-C during the build stops ``condense serve`` (nothing half-built is kept; the next start builds it again).

It supervises the children: a job worker that dies is restarted (at most once every 10 s per slot); if gunicorn
exits, everything stops. Ctrl-C or SIGTERM stops all children gracefully -- gunicorn finishes its requests, each
worker puts its running job back in the queue at its last checkpoint -- and kills what is still running after 40 s.
The children run in their own process groups, so the terminal's Ctrl-C reaches them once, through this process.
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
from pathlib import Path

from service.settings import Settings
from storage.files import atomic_write_text

__all__ = ["FIRST_ADMIN", "FIRST_TOKEN_FILE", "serve"]

logger = logging.getLogger(__name__)

_STOP_WAIT_S = 40.0
_RESTART_MIN_INTERVAL_S = 10.0
FIRST_ADMIN = "admin"
FIRST_TOKEN_FILE = "first-token"


def _prepare(settings: Settings) -> str | None:
    """Create the data folders, the metadata tables and, with no users yet, the first admin; return its token."""
    from service.jobs.queue import open_queue
    from storage import open_metadata_store

    for folder in (settings.data_dir, settings.work_dir, settings.tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    token = None
    with open_metadata_store(settings.database_url) as metadata:
        if not metadata.list_users():
            try:
                metadata.create_user(FIRST_ADMIN, "admin", max_running_jobs=4)
            except ValueError:  # another process made it meanwhile
                pass
            else:
                token = metadata.create_token(FIRST_ADMIN, "first token (condense serve)")
                _write_private(settings.data_dir / FIRST_TOKEN_FILE, token + "\n")
    settings.open_blobs().close()
    open_queue(settings.broker_url).close()
    return token


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (mode 0600 from the start, replaced atomically)."""
    atomic_write_text(path, text, mode=0o600)


def _build_demo_pool(settings: Settings, env: Mapping[str, str]) -> int | None:
    """Build the demo pool in a child process if it is missing; None when done or skipped, 130 on Ctrl-C."""
    from service.cli.demo_pool import DEMO_POOL, demo_pool_exists

    if not settings.demo_pool:
        return None
    with settings.open_blobs() as blobs:
        if demo_pool_exists(blobs, DEMO_POOL):
            return None
    print("condense: first start: building the demo pool (CONDENSE_DEMO_POOL=0 skips this)", file=sys.stderr)
    stopping: list[int] = []
    children: list[subprocess.Popen] = []

    def forward(signum: int, _frame: object) -> None:  # Ctrl-C / SIGTERM: the child stops, keeping nothing
        stopping.append(signum)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)

    # Handlers first: a child started while SIGINT is ignored (a shell's background job) would ignore it too.
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        children.append(_start([sys.executable, "-m", "service.cli", "pool", "demo"], env))
        if stopping:
            forward(stopping[0], None)
        status = children[0].wait()  # a signal forwarded meanwhile makes the child exit soon
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        with settings.open_blobs() as blobs:
            built = demo_pool_exists(blobs, DEMO_POOL)
        later = "" if built else "; it is built on the next start"
        print(f"condense: stopped while building the demo pool{later}", file=sys.stderr)
        return 130
    if status != 0:
        print(
            f"condense: could not build the demo pool (exit status {status}); serving without it -- jobs using pool "
            "'demo' fail until 'condense pool demo' succeeds",
            file=sys.stderr,
        )
    return None


def _start(command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=dict(env), start_new_session=True)


def serve(overrides: Mapping[str, str] | None = None) -> int:
    """Run gunicorn and the job workers until interrupted; return the exit status. ``overrides``: extra env vars."""
    env = {**os.environ, **(overrides or {})}
    settings = Settings.from_env(env)
    from service.jobs.worker import configure_logging

    configure_logging(settings.log_level)
    token = _prepare(settings)
    stopped = _build_demo_pool(settings, env)
    if stopped is not None:
        if token is not None:
            print(f"condense: the first API token is in {settings.data_dir / FIRST_TOKEN_FILE}", file=sys.stderr)
        return stopped
    if token is not None:
        print(
            f"condense: created the admin user '{FIRST_ADMIN}' and its API token (shown once; also saved in "
            f"{settings.data_dir / FIRST_TOKEN_FILE}, mode 0600):\n\n    {token}\n",
            file=sys.stderr,
        )
    if settings.bind.startswith("unix:"):
        where = settings.bind
    else:
        host, _, port = settings.bind.rpartition(":")
        where = f"http://{host}:{port}/"
    print(f"condense: serving {where} (API under /api/v1; data in {settings.data_dir})", file=sys.stderr)
    web_command = [
        sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()",
    ]  # fmt: skip
    worker_command = [sys.executable, "-m", "service.cli", "worker"]
    # One heartbeat file per process: several workers touching one would hide a stuck one. These are supervised here.
    worker_env = {name: value for name, value in env.items() if name != "CONDENSE_WORKER_HEARTBEAT_FILE"}
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    web = _start(web_command, env)
    workers = [_start(worker_command, worker_env) for _ in range(settings.workers)]
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
                    workers[slot] = _start(worker_command, worker_env)
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
