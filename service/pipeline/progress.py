"""The pipeline's progress: each stage's own 0..1 mapped into the job's 0..1, and the stop check on every event."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.options import JobCancelled

__all__ = ["STAGE_SPAN", "ProgressCallback", "StageProgress"]

ProgressCallback = Callable[[dict[str, Any]], None]
STAGE_SPAN = {"load": (0.0, 0.02), "mining": (0.02, 0.3), "distill": (0.3, 0.9), "export": (0.9, 0.97),
              "report": (0.97, 1.0)}  # fmt: skip


class StageProgress:
    """Maps each stage's own progress into the job's 0..1 and checks ``should_stop`` on every event."""

    def __init__(self, on_progress: ProgressCallback | None, should_stop: Callable[[], bool] | None) -> None:
        self._on_progress = on_progress
        self._should_stop = should_stop
        self.started = time.monotonic()
        self.stage_seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._stage_started = self.started

    def stop_requested(self) -> bool:
        return self._should_stop is not None and bool(self._should_stop())

    def check(self) -> None:
        if self.stop_requested():
            raise JobCancelled(f"stopped during {self._stage}")

    def stage(self, name: str, message: str = "") -> None:
        now = time.monotonic()
        if self._stage is not None:
            self.stage_seconds[self._stage] = round(now - self._stage_started, 3)
        self._stage, self._stage_started = name, now
        self.emit(0.0, message or name)

    def emit(
        self, fraction: float, message: str, eta_s: float | None = None, *, check: bool = True, **extra: Any
    ) -> None:
        low, high = STAGE_SPAN.get(self._stage or "", (0.0, 1.0))
        if self._on_progress is not None:
            self._on_progress(
                {
                    "stage": self._stage,
                    "progress": round(low + (high - low) * min(max(fraction, 0.0), 1.0), 4),
                    "eta_s": eta_s,
                    "message": message,
                    **extra,
                }
            )
        if check:
            self.check()

    def finish(self) -> None:
        if self._stage is not None:
            self.stage_seconds[self._stage] = round(time.monotonic() - self._stage_started, 3)
            self._stage = None
