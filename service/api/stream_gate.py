"""How many event streams one web process serves at once, in all and per user.

An event stream holds a gunicorn thread while it is open. gunicorn gives each worker ``CONDENSE_WEB_THREADS +
CONDENSE_SSE_STREAMS`` threads (:mod:`service.gunicorn_conf`) and this gate admits at most ``CONDENSE_SSE_STREAMS``
streams per process and ``CONDENSE_SSE_STREAMS_PER_USER`` per user, so streams can never take the threads that
``/health`` and the other requests need, and one user cannot take every stream slot. Past a limit the request is
refused at once: 429 (the user's own limit) or 503 (the process is full), both with ``Retry-After``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ServiceError

__all__ = ["StreamGate"]

_RETRY_AFTER_S = 5


class StreamGate:
    """Counts the open streams of one process (thread-safe)."""

    def __init__(self, total: int, per_user: int) -> None:
        if total < 1 or per_user < 1:
            raise ValueError("stream limits must be >= 1")
        self.total, self.per_user = total, per_user
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def admit(self, user: str) -> None:
        """Count one more stream of ``user``; ServiceError 429 / 503 with ``Retry-After`` past a limit."""
        with self._lock:
            if self._open[user] >= self.per_user:
                error = ServiceError(
                    429,
                    f"{user} already has {self._open[user]} event stream(s) open here, the most allowed "
                    f"({self.per_user}); close one or poll GET /jobs/{{id}}",
                )
            elif sum(self._open.values()) >= self.total:
                error = ServiceError(503, f"this server is serving its most event streams ({self.total}); retry soon")
            else:
                self._open[user] += 1
                return
        error.retry_after_s = _RETRY_AFTER_S
        raise error

    def release(self, user: str) -> None:
        with self._lock:
            self._open[user] -= 1
            if self._open[user] <= 0:
                del self._open[user]

    @contextmanager
    def held(self, user: str) -> Iterator[None]:
        """Admit a stream of ``user`` for the duration of the block."""
        self.admit(user)
        try:
            yield
        finally:
            self.release(user)
