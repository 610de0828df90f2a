"""A terminal progress bar for distillation runs (:class:`compression.distill.DistillProgress` events).

On a terminal the bar redraws one line in place (carriage return); anywhere else (CI logs, pipes) it prints a
plain line at most every ``log_interval_s`` seconds and on every stage change, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace
from typing import Any, TextIO

__all__ = ["ProgressBar", "format_duration"]

_STAGE_NAMES = {"teacher_outputs": "teacher", "train": "train", "validate": "validate", "done": "done"}


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Callable for ``distill(on_progress=...)``: renders each event on ``stream`` (default stderr)."""

    def __init__(
        self, stream: TextIO | None = None, width: int = 28, log_interval_s: float = 10.0, tty: bool | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.log_interval_s = log_interval_s
        self.tty = self.stream.isatty() if tty is None else tty
        self._last_line_at = float("-inf")
        self._last_stage: str | None = None
        self._drawn = False

    def __call__(self, event: Any) -> None:
        line = self.render(event)
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width + 80))
            if event.stage == "done":
                self.stream.write("\n")
            self._drawn = event.stage != "done"
        else:
            now = time.monotonic()
            if event.stage != self._last_stage or now - self._last_line_at >= self.log_interval_s:
                self.stream.write(line + "\n")
                self._last_line_at = now
        self._last_stage = event.stage
        self.stream.flush()

    def close(self) -> None:
        """End a line left open on a terminal (e.g. after an interruption)."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def render(self, event: Any) -> str:
        """One line: stage, epoch, bar of the stage's steps, loss, throughput, validation accuracy, time left."""
        total = max(int(event.steps_per_epoch), 1)
        done = total if event.stage == "done" else min(max(int(event.step), 0), total)
        filled = round(self.width * done / total)
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [f"{_STAGE_NAMES.get(event.stage, event.stage):<8}"]
        if event.stage in ("train", "validate", "done"):
            parts.append(f"epoch {event.epoch}/{event.epochs}")
        parts.append(f"[{bar}] {done}/{total}")
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if event.samples_per_s:
            parts.append(f"{event.samples_per_s:,.0f} img/s")
        if event.val_accuracy is not None:
            parts.append(f"val acc {event.val_accuracy:.2%}")
        elif event.val_agreement is not None:
            parts.append(f"val agree {event.val_agreement:.2%}")
        parts.append(f"elapsed {format_duration(event.elapsed_s)}")
        if event.stage != "done":
            parts.append(f"left {format_duration(event.eta_s)}")
        return "  ".join(parts)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


class JobProgressBar:
    """Renders a compression job's progress dicts (:mod:`service.pipeline` events, or the ``progress`` events a
    server streams) with a :class:`ProgressBar` whose bar is the job's overall 0-100 %."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.bar = ProgressBar(stream=stream)
        self.stream = self.bar.stream
        self.started = time.monotonic()

    def __call__(self, data: dict[str, Any]) -> None:
        progress = _number(data.get("progress")) or 0.0
        stage = str(data.get("stage") or "running")
        elapsed = _number(data.get("elapsed_s"))
        view = SimpleNamespace(
            stage=stage,
            steps_per_epoch=100,
            step=round(100 * progress),
            epoch=data.get("epoch") or 0,
            epochs=data.get("epochs") or 0,
            loss=_number(data.get("loss")),
            samples_per_s=_number(data.get("samples_per_s")),
            val_accuracy=_number(data.get("val_accuracy")),
            val_agreement=_number(data.get("val_agreement")),
            elapsed_s=elapsed if elapsed is not None else time.monotonic() - self.started,
            eta_s=_number(data.get("eta_s")),
        )
        if stage not in ("train", "validate", "done"):
            view.epoch = view.epochs = 0
        self.bar(view)

    def close(self) -> None:
        self.bar.close()
