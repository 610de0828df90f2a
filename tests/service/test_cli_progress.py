"""``condense submit --wait`` against a live server: under an 80-column pseudo-terminal the screen holds one
progress line that rewrites itself; without a terminal every update is a plain log line; plus the renderer's
fitting and phases on their own."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from service.cli.client import SseEvent
from service.cli.job_progress import JobProgressBar, format_bytes
from tests.service.test_client import REPO, _positives_folder, server  # noqa: F401  (the live server fixture)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(r"\[[#-]{5,}\]")


def _screen(raw: str, columns: int) -> list[str]:
    """What a terminal of ``columns`` shows after ``raw``: carriage return, clear to end of line, wrapping."""
    rows, row, col = [[]], 0, 0
    index = 0
    while index < len(raw):
        char = raw[index]
        if raw.startswith("\x1b[K", index):
            del rows[row][col:]
            index += 3
            continue
        match = _ANSI.match(raw, index)
        if match:
            index = match.end()
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            if row == len(rows):
                rows.append([])
        else:
            if col >= columns:  # the terminal wraps a line that is too long
                row, col = row + 1, 0
                if row == len(rows):
                    rows.append([])
            line = rows[row]
            line[col : col + 1] = [char]
            col += 1
        index += 1
    return ["".join(line) for line in rows]


def _submit_command(server: dict, teacher: Path, positives: Path, out: Path) -> list[str]:  # noqa: F811
    return [
        sys.executable, "-m", "service.cli", "submit", "--server", server["url"], "--token", server["token"],
        "--teacher", str(teacher), "--positives", str(positives), "--input-shape", "1,28,28", "--epochs", "2",
        "--wait", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.servers  # condense serve
def test_submit_wait_in_an_80_column_terminal_keeps_one_progress_line(server, service_inputs, tmp_path) -> None:  # noqa: F811
    positives = _positives_folder(service_inputs["positives"], tmp_path / "positives")
    command = _submit_command(server, service_inputs["teacher"], positives, tmp_path / "out")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80", "TERM": "xterm"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    raw = b"".join(chunks).decode("utf-8", "replace")
    screen = [row for row in _screen(raw, 80) if row.strip()]
    bars = [row for row in screen if _BAR.search(row)]
    assert len(bars) <= 1, "\n".join(screen)  # every update rewrote the same line
    assert all(len(row) <= 80 for row in screen)
    assert raw.count("\r\x1b[K") >= 3  # it was redrawn in place, more than once
    text = "\n".join(screen)
    assert re.search(r"uploaded .* in [0-9.]+ s \(.*/s\)", text), text
    assert "submitted job" in text and re.search(r"succeeded in \d+:\d\d", text), text
    assert "zipping the positives folder" in raw  # a folder is zipped before the upload, and says so
    assert "epoch 0/0" not in raw and "done" not in [row.split()[0] for row in screen]
    assert "student.onnx" in text  # the summary printed after the job


@pytest.mark.servers  # condense serve
def test_submit_wait_without_a_terminal_prints_plain_lines(server, service_inputs, tmp_path) -> None:  # noqa: F811
    command = _submit_command(server, service_inputs["teacher"], service_inputs["positives"], tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("uploaded ") for line in lines), lines
    assert any(line.startswith("submitted job ") for line in lines)
    assert re.match(r"succeeded in \d+:\d\d", lines[-1]), lines
    assert len(lines) < 40  # throttled: stage changes and at most one line per 10 s


def test_renderer_fits_narrow_terminals_and_ticks() -> None:
    stream = io.StringIO()
    bar = JobProgressBar(stream, tty=True, tick_s=None)
    bar.columns = lambda: 40  # type: ignore[method-assign]
    bar.upload(500_000, 2_000_000)
    bar.upload(2_000_000, 2_000_000)
    bar.submitted({"id": "j1"})
    bar(SseEvent(1, "status", {"status": "running", "attempt": 1}))
    event = {"stage": "distill", "progress": 0.5, "epoch": 2, "epochs": 4, "loss": 0.25, "val_accuracy": 0.9}
    bar(SseEvent(2, "progress", {**event, "eta_s": 30}))
    line = bar.render()
    assert len(line) <= 39 and line.startswith("distill") and "50%" in line
    bar.columns = lambda: 200  # type: ignore[method-assign]
    wide = bar.render()
    assert "epoch 2/4" in wide and "val acc 90.0%" in wide and "left 0:" in wide
    bar.columns = lambda: 40  # type: ignore[method-assign]
    bar(SseEvent(3, "progress", {"stage": "export", "progress": 0.9, "message": "exporting"}))
    first = bar.render()
    bar._received -= 65  # a minute without events: the clock moves anyway
    bar.started -= 65
    assert first != bar.render() and "1:0" in bar.render()
    bar(SseEvent(4, "status", {"status": "succeeded"}))
    screen = [row for row in _screen(stream.getvalue(), 40) if row]
    assert screen[-1].startswith("succeeded in 1:0") and len(screen) == 4, screen  # uploaded, submitted, started
    assert format_bytes(3_600_000) == "3.6 MB" and format_bytes(512) == "512 B"


def test_cancel_is_a_plain_line_and_a_failure_carries_its_reason() -> None:
    stream = io.StringIO()
    bar = JobProgressBar(stream, tty=False, tick_s=None)
    bar.submitted({"id": "j2"})
    bar(SseEvent(1, "status", {"status": "failed", "error": "bad teacher"}))
    assert stream.getvalue().splitlines()[-1].startswith("failed after 0:0")
    assert stream.getvalue().splitlines()[-1].endswith(": bad teacher")


@pytest.mark.parametrize("columns", [20, 80, 300])
def test_screen_model_wraps(columns: int) -> None:
    assert _screen("a" * (columns + 1), columns) == ["a" * columns, "a"]
