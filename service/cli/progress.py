"""The command line's one progress renderer, :class:`ProgressLine`, and the formatters that feed it.

On a terminal :class:`ProgressLine` redraws one line in place (carriage return, clear to the end of the line);
anywhere else (CI logs, pipes) it prints a plain line at most every ``log_interval_s`` seconds and whenever the
update's ``key`` (a stage) changes, so logs stay readable. A ``final`` update ends its line in both cases.

What is shown comes from small formatters over the same renderer:

- :class:`ProgressBar`: distillation events (:class:`compression.distill.DistillProgress`): stage, epoch, a bar of
  the stage's steps, loss, throughput, validation accuracy, time left (``condense distill``);
- :class:`service.cli.job_progress.JobProgressBar`: a compression job's progress (``condense compress``,
  ``condense submit --wait``), with the upload and a ticking clock between events;
- :class:`DemoPoolProgress`: the demo pool's build (``condense pool demo``, ``condense serve``'s first start);
- plain text updates (``condense example``, ``condense pool ingest``) call :meth:`ProgressLine.update` directly.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from service.text import format_duration

__all__ = ["DemoPoolProgress", "ProgressBar", "ProgressLine", "format_duration"]

_STAGE_NAMES = {"teacher_outputs": "teacher", "train": "train", "validate": "validate", "done": "done"}


class ProgressLine:
    """One progress line on ``stream`` (default stderr): redrawn on a terminal, throttled log lines elsewhere."""

    def __init__(
        self, stream: TextIO | None = None, *, log_interval_s: float = 10.0, tty: bool | None = None, prefix: str = ""
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.log_interval_s = log_interval_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.prefix = prefix
        self._last_line_at = float("-inf")
        self._last_key: object = None
        self._open = False
        self._lock = threading.RLock()  # a ticking clock (:class:`service.cli.job_progress.Ticker`) redraws too

    def columns(self) -> int:
        """The terminal's width now (it may change while a job runs); 80 when it cannot be asked."""
        try:
            return max(20, os.get_terminal_size(self.stream.fileno()).columns)
        except (AttributeError, OSError, ValueError):
            try:
                return max(20, int(os.environ.get("COLUMNS", "80")))
            except ValueError:
                return 80

    def fit(self, text: str) -> str:
        """``text`` cut to one row of the terminal (a wrapped line could not be redrawn in place)."""
        limit = self.columns() - 1
        return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"

    def update(self, text: str, *, key: object = None, final: bool = False) -> None:
        """Show ``text``; ``key`` (e.g. the stage) changing always prints a log line; ``final`` ends the line."""
        with self._lock:
            text = self.prefix + text
            if self.tty:
                self.stream.write(f"\r\033[K{self.fit(text)}" + ("\n" if final else ""))
                self._open = not final
            else:
                now = time.monotonic()
                if final or key != self._last_key or now - self._last_line_at >= self.log_interval_s:
                    self.stream.write(text + "\n")
                    self._last_line_at = now
            self._last_key = key
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (a status change), ending any progress line left open first."""
        with self._lock:
            if self._open:  # the progress line gives way to the message and comes back below it
                self.stream.write("\r\033[K")
                self._open = False
            self.stream.write(self.prefix + text + "\n")
            self.stream.flush()
            self._last_key = None

    def close(self) -> None:
        """End a line left open on a terminal (e.g. after an interruption)."""
        with self._lock:
            if self._open:
                self.stream.write("\n")
                self.stream.flush()
                self._open = False


class ProgressBar(ProgressLine):
    """Callable for ``distill(on_progress=...)``: renders each event as one progress line."""

    def __init__(
        self, stream: TextIO | None = None, width: int = 28, log_interval_s: float = 10.0, tty: bool | None = None
    ) -> None:
        super().__init__(stream, log_interval_s=log_interval_s, tty=tty)
        self.width = width

    def __call__(self, event: Any) -> None:
        self.update(self.render(event), key=event.stage, final=event.stage == "done")

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


class DemoPoolProgress(ProgressLine):
    """``building the demo pool: 1,024/4,500 images (350 images/s) ...`` for
    :func:`service.cli.demo_pool.ensure_demo_pool`: redrawn on a terminal, one line per update otherwise."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "") -> None:
        super().__init__(stream, log_interval_s=0.0, prefix=prefix)

    def __call__(self, event: dict[str, Any]) -> None:
        stage = event["stage"]
        if stage == "missing":
            self.update(f"demo pool: leaving out {event['source']} ({event['message']})", final=True)
            return
        if stage == "done":
            self.update(
                f"demo pool built: {event['message']} in {event['elapsed_s']:.1f} s "
                f"({event['images_per_second']:.0f} images/s)",
                final=True,
            )
            return
        rate = f" ({event['images_per_second']:.0f} images/s)" if event["images_per_second"] >= 1 else ""
        what = " -- loading the embedder" if stage == "load" else ""
        self.update(f"building the demo pool: {event['done']:,}/{event['total']:,} images{rate}{what} ...")
