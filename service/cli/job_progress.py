"""A compression job's progress on the command line: upload, server-side checks, queue, stages, end.

:class:`JobProgressBar` is fed by ``condense submit --wait`` (the upload's byte counts, then the job's server-sent
events) and by ``condense compress`` (the pipeline's progress dicts). Every phase shows at once:

- ``upload   [#####-----]  52%  1.9/3.6 MB  2.4 MB/s``
- ``checks   the server checks the teacher and the positives  0:03``
- ``queued   waiting for a worker  0:12``
- ``distill  [######----]  61%  epoch 3/5  loss 0.2143  val acc 88.4%  1:02  left 0:40``
- ``export   [#########-]  90%  exporting and verifying the ONNX student  1:45``

A :class:`Ticker` redraws the line every second between events, so the clock keeps moving in stages that report
rarely (the ONNX export, the queue). On a terminal the line is fitted to the terminal's width (parts of least
interest dropped first) and rewritten in place; elsewhere each update is a plain log line, throttled
(:class:`service.cli.progress.ProgressLine`). The job's end is one summary line: ``succeeded in 2:35``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from service.cli.progress import ProgressLine
from service.text import format_duration

__all__ = ["JobProgressBar", "Ticker", "format_bytes"]

_FINAL = {"succeeded", "failed", "cancelled"}
_TRAINING = {"distill", "train", "validate"}


def format_bytes(count: float) -> str:
    """``3_600_000`` -> ``3.6 MB`` (decimal units, as network speeds are quoted)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Ticker:
    """Calls ``redraw`` every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, redraw: Callable[[], None], interval_s: float = 1.0) -> None:
        self._redraw = redraw
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="condense-progress-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._redraw()

    def stop(self) -> None:
        """No more redraws after the one running now (the owner's lock orders them)."""
        self._stopped.set()


class JobProgressBar(ProgressLine):
    """One job's progress as one line (module docstring); status changes are lines of their own."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        log_interval_s: float = 10.0,
        tick_s: float | None = 1.0,
        bar_width: int = 20,
    ) -> None:
        super().__init__(stream, log_interval_s=log_interval_s, tty=tty)
        self.bar_width = bar_width
        self.started = time.monotonic()
        self._phase = "start"
        self._data: dict[str, Any] = {}
        self._received = self.started
        self._phase_started = self.started
        self._upload_started = self.started
        self._ended = False
        self._ticker = Ticker(self._tick, tick_s) if tick_s else None

    # phases before the job exists ------------------------------------------------------------------------------

    def preparing(self, text: str) -> None:
        """Work before the upload (zipping a positives folder), with a ticking clock."""
        with self._lock:
            self._set_phase("prepare")
            self._data = {"text": text}
            self.redraw()

    def upload(self, sent: int, total: int) -> None:
        """The upload's progress (the client calls this as bytes leave); the end switches to the server's checks."""
        with self._lock:
            if self._phase != "upload":
                self._set_phase("upload")
                self._upload_started = time.monotonic()
            self._data = {"sent": sent, "total": total}
            if sent >= total:
                seconds = max(time.monotonic() - self._upload_started, 1e-6)
                self.update(
                    f"uploaded {format_bytes(total)} in {seconds:.1f} s ({format_bytes(total / seconds)}/s)",
                    key="upload",
                    final=True,
                )
                self._set_phase("checks")
            self.redraw()

    def submitted(self, job: dict[str, Any]) -> None:
        """The server accepted the job: its id on a line of its own."""
        with self._lock:
            self._set_phase("queued")
            self._data = {"queue_position": job.get("queue_position")}
            self.message(f"submitted job {job.get('id')}")
            self.redraw()

    # the job's events --------------------------------------------------------------------------------------------

    def __call__(self, event: Any) -> None:
        kind = getattr(event, "kind", None)
        with self._lock:
            if kind is None:  # a pipeline dict (condense compress)
                self._progress(dict(event))
            elif kind == "status":
                self._status(event.data)
            elif kind == "progress":
                self._progress(event.data)
            elif kind == "end":
                self._stop_ticker()

    def _status(self, data: dict[str, Any]) -> None:
        status = str(data.get("status") or "")
        text = data.get("error") or data.get("message") or ""
        if status in _FINAL:
            self._stop_ticker()
            took = format_duration(time.monotonic() - self.started)
            verb = "in" if status == "succeeded" else "after"
            self.message(f"{status} {verb} {took}{': ' + str(text) if text and status == 'failed' else ''}")
            self._ended = True
            return
        if status == "queued":
            position = self._data.get("queue_position") if self._phase == "queued" else None
            self._set_phase("queued")
            self._data = {"queue_position": position, **data}
        elif status == "running":
            self._set_phase("running")
            self.message(f"started{': attempt ' + str(data['attempt']) if _number(data.get('attempt')) else ''}")
        self.redraw()

    def _progress(self, data: dict[str, Any]) -> None:
        stage = str(data.get("stage") or "running")
        if stage == "done":
            return  # the summary line comes with the final status (submit) or the summary itself (compress)
        if stage != self._phase:
            self._set_phase(stage)
        self._data = data
        self._received = time.monotonic()
        self.redraw()

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._phase_started = time.monotonic()
        self._data = {}

    # rendering ---------------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        with self._lock:
            if self._ticker is not None:
                self.redraw()

    def redraw(self) -> None:
        """Draw the current phase (the ticker calls this every second, so clocks move between events)."""
        with self._lock:
            if self._ended or self._phase == "start":
                return
            self.update(self.render(), key=self._phase)

    def _bar(self, fraction: float) -> str:
        filled = round(self.bar_width * min(max(fraction, 0.0), 1.0))
        return f"[{'#' * filled}{'-' * (self.bar_width - filled)}]"

    def render(self) -> str:
        """The current line, fitted to the terminal: parts of least interest are dropped first."""
        now = time.monotonic()
        data, phase = self._data, self._phase
        parts: list[tuple[int, str]] = []  # (priority: lower is dropped later, text)
        if phase == "upload":
            sent, total = int(data.get("sent", 0)), max(int(data.get("total", 1)), 1)
            rate = sent / max(now - self._upload_started, 1e-6)
            parts += [(0, "upload  "), (3, self._bar(sent / total)), (0, f"{sent / total:4.0%}")]
            parts += [(1, f"{format_bytes(sent)}/{format_bytes(total)}"), (2, f"{format_bytes(rate)}/s")]
        elif phase == "prepare":
            parts += [(0, "prepare "), (2, str(data.get("text", ""))), (0, format_duration(now - self._phase_started))]
        elif phase == "checks":
            parts += [(0, "checks  "), (2, "the server checks the teacher and the positives")]
            parts.append((0, format_duration(now - self._phase_started)))
        elif phase == "queued":
            position = _number(data.get("queue_position"))
            ahead = f" ({int(position)} ahead)" if position else ""
            parts += [(0, "queued  "), (2, f"waiting for a worker{ahead}")]
            parts.append((0, format_duration(now - self._phase_started)))
        else:
            progress = _number(data.get("progress")) or 0.0
            parts += [(0, f"{phase:<8}"), (3, self._bar(progress)), (0, f"{progress:4.0%}")]
            epochs = _number(data.get("epochs"))
            if phase in _TRAINING and epochs:
                parts.append((1, f"epoch {int(_number(data.get('epoch')) or 0)}/{int(epochs)}"))
                loss, accuracy = _number(data.get("loss")), _number(data.get("val_accuracy"))
                if loss is not None:
                    parts.append((5, f"loss {loss:.4f}"))
                if accuracy is not None:
                    parts.append((4, f"val acc {accuracy:.1%}"))
            elif data.get("message") and phase not in _TRAINING:
                parts.append((6, str(data["message"])))
            elapsed = _number(data.get("elapsed_s"))
            clock = (elapsed + now - self._received) if elapsed is not None else now - self.started
            parts.append((0, format_duration(clock)))
            eta = _number(data.get("eta_s"))
            if eta is not None and eta > 0:
                parts.append((2, f"left {format_duration(max(eta - (now - self._received), 0.0))}"))
        return self._fitted(parts)

    def _fitted(self, parts: list[tuple[int, str]]) -> str:
        if not self.tty:
            return "  ".join(text for _, text in parts).replace("   ", "  ")
        limit = self.columns() - 1
        kept = list(parts)
        while len("  ".join(text for _, text in kept)) > limit and any(priority for priority, _ in kept):
            worst = max(priority for priority, _ in kept)
            kept = [item for item in kept if item[0] != worst]
        return "  ".join(text for _, text in kept)

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def close(self) -> None:
        """Stop the clock and end a line left open."""
        self._stop_ticker()
        super().close()
