"""A settable clock for the metadata store (``open_metadata_store(url, clock=...)``): tests move time on instead of
sleeping until a lease expires."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A settable clock for the metadata store: leases expire when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
