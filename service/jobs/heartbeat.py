"""A job worker's heartbeat file: the liveness signal of a process that serves no HTTP.

``condense worker`` with ``CONDENSE_WORKER_HEARTBEAT_FILE`` set writes that file when it starts and then touches it
(its modification time) at most every ``CONDENSE_WORKER_HEARTBEAT_S`` seconds, only from its work loop -- the thread
that takes jobs from the queue and runs them (:mod:`service.jobs.worker`):

- waiting for a job: before each read of the queue (a read returns or times out within a second);
- running one: each time the pipeline asks whether to stop or reports progress, and between fetching the inputs
  and storing the artefacts.

No background timer touches it: one would go on touching while the loop is stuck. A worker whose loop hangs (a
deadlock, a read that never returns) leaves the file to age, while its lease monitor may still be renewing the job's
lease; ``condense worker --check-heartbeat MAX_AGE_S`` (:func:`check_heartbeat`, an exec probe for Kubernetes or a
compose health check) then fails and the container is restarted, which frees the job for the reaper.

``MAX_AGE_S`` must exceed the longest stretch of a job without a stop check or a progress report (the ONNX export,
the int8 quantization and the side-by-side timing are the longest: see ``docs/deploy.md``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from storage.files import atomic_write_text

__all__ = ["HeartbeatFile", "check_heartbeat"]

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0


class HeartbeatFile:
    """The heartbeat file ``path``: :meth:`start` writes it, :meth:`beat` touches it at most every ``every_s``."""

    def __init__(self, path: Path, every_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not every_s >= 0:
            raise ValueError(f"every_s must be >= 0, got {every_s!r}")
        self.path = Path(path)
        self.every_s = float(every_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._last_warning = float("-inf")

    def start(self) -> None:
        """Write the file afresh (replacing one a previous run left); OSError when it cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, f"pid {os.getpid()} on {socket.gethostname()}\n", mode=0o644)
        with self._lock:
            self._last = self._clock()

    def beat(self) -> None:
        """Touch the file unless that was done less than ``every_s`` ago. Never raises: a failure is logged."""
        now = self._clock()
        with self._lock:
            if now - self._last < self.every_s:
                return
            self._last = now
        try:
            try:
                os.utime(self.path)
            except FileNotFoundError:  # removed meanwhile (a cleaned scratch folder): write it again
                self.start()
        except OSError as error:
            if now - self._last_warning >= _WARN_EVERY_S:
                self._last_warning = now
                logger.warning("cannot touch the heartbeat file %s: %s", self.path, error)


def check_heartbeat(path: Path, max_age_s: float, *, now: float | None = None) -> tuple[bool, str]:
    """``(alive, message)``: whether ``path`` was touched within ``max_age_s`` seconds, and a line saying so."""
    if not max_age_s > 0:
        raise ValueError(f"the heartbeat's maximum age must be > 0 seconds, got {max_age_s!r}")
    try:
        modified = Path(path).stat().st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat file {path} (the worker has not started, or writes another file)"
    age = max(0.0, (time.time() if now is None else now) - modified)
    if age > max_age_s:
        return False, f"heartbeat {path} is {age:.0f} s old (limit {max_age_s:g} s): the worker's loop is stuck"
    return True, f"heartbeat {path} is {age:.1f} s old (limit {max_age_s:g} s)"
