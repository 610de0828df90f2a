"""The worker's heartbeat file on its own: touches at most every ``every_s``, written again when removed, and the
probe's verdict on its age (the worker loop that touches it: tests/service/test_worker.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.jobs.heartbeat import HeartbeatFile, check_heartbeat


def test_beats_touch_the_file_at_most_every_interval(tmp_path: Path) -> None:
    now = [100.0]
    beat = HeartbeatFile(tmp_path / "run" / "alive", every_s=5.0, clock=lambda: now[0])
    beat.start()
    assert beat.path.read_text().startswith(f"pid {os.getpid()} ")
    os.utime(beat.path, (1_000, 1_000))
    now[0] += 4.9
    beat.beat()
    assert beat.path.stat().st_mtime == 1_000  # too soon: untouched
    now[0] += 0.2
    beat.beat()
    assert beat.path.stat().st_mtime > 1_000
    beat.path.unlink()  # a cleaned scratch folder
    now[0] += 5.0
    beat.beat()
    assert beat.path.is_file()


def test_the_probe_judges_the_files_age(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    alive, message = check_heartbeat(path, 60)
    assert not alive and "no heartbeat file" in message
    path.write_text("pid 1\n")
    os.utime(path, (5_000, 5_000))
    assert check_heartbeat(path, 60, now=5_059)[0]
    alive, message = check_heartbeat(path, 60, now=5_061)
    assert not alive and "61 s old (limit 60 s)" in message
    with pytest.raises(ValueError, match="must be > 0"):
        check_heartbeat(path, 0)
