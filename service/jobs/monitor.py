"""What watches a running job for its worker: the lease and cancel monitor, and the pipeline's progress sink.

:class:`JobMonitor` renews the job's lease every third of ``CONDENSE_LEASE_S`` and, every ``CONDENSE_POLL_S``, reads
the job row: a cancel request, a deleted job or a lost lease makes ``should_stop()`` true. :class:`ProgressSink` is
the pipeline's ``on_progress``: throttled job-row updates and ``progress`` events, and checkpoint mirroring.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from service.settings import Settings
from storage import MetadataStore


class Worker(Protocol):
    """What the monitor and the sink use of their :class:`~service.jobs.worker.Worker`."""

    settings: Settings
    metadata: MetadataStore
    worker_id: str
    shutdown: threading.Event

    def sync_checkpoints(self, job_id: str, out_dir: Path) -> int: ...


__all__ = ["JobMonitor", "ProgressSink", "jsonable"]

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 0.5  # at most two progress updates per second (stage changes always go through)


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON the metadata store accepts: NaN / infinity become None, NumPy scalars plain numbers."""
    if depth > 20:
        return None
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        with contextlib.suppress(Exception):
            return jsonable(item(), depth + 1)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


class JobMonitor(threading.Thread):
    """Renews a running job's lease and turns a cancel / delete / lost lease / shutdown into ``should_stop()``."""

    def __init__(self, worker: Worker, job_id: str) -> None:
        super().__init__(name=f"monitor-{job_id[:8]}", daemon=True)
        self.worker = worker
        self.job_id = job_id
        self.reason: str | None = None  # "cancel", "deleted", "lost" or "shutdown"
        self._stop_work = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def should_stop(self) -> bool:
        return self._stop_work.is_set()

    def _flag(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
                logger.info("job %s: stopping (%s)", self.job_id, reason)
        self._stop_work.set()

    def run(self) -> None:
        settings = self.worker.settings
        beat_every = settings.lease_s / 3.0
        last_beat = time.monotonic()
        while not self._closed.wait(min(settings.poll_s, beat_every)):
            if self.worker.shutdown.is_set():
                self._flag("shutdown")
            try:
                if time.monotonic() - last_beat >= beat_every:
                    if not self.worker.metadata.heartbeat(self.job_id, self.worker.worker_id, settings.lease_s):
                        self._flag("lost")
                    last_beat = time.monotonic()
                job = self.worker.metadata.get_job(self.job_id)
                if job is None:
                    self._flag("deleted")
                elif job.cancel_requested:
                    self._flag("cancel")
                elif job.status != "running" or job.worker_id != self.worker.worker_id:
                    self._flag("lost")
            except Exception:  # a database hiccup: keep trying; the lease covers a few missed beats
                logger.exception("job %s: heartbeat failed", self.job_id)

    def close(self) -> None:
        self._closed.set()
        self.join(timeout=10)


class ProgressSink:
    """The pipeline's ``on_progress``: throttled job-row updates and events, and checkpoint mirroring."""

    def __init__(self, worker: Worker, job_id: str, out_dir: Path) -> None:
        self.worker = worker
        self.job_id = job_id
        self.out_dir = out_dir
        self.stage: str | None = None
        self._last_sent = float("-inf")
        self._last_sync = time.monotonic()

    def __call__(self, event: Any) -> None:
        if not isinstance(event, Mapping):
            as_dict = getattr(event, "as_dict", None)
            event = as_dict() if callable(as_dict) else vars(event)
        data = jsonable(dict(event))
        stage = str(data.get("stage") or "")[:200]
        progress = data.get("progress")
        progress = min(max(float(progress), 0.0), 1.0) if isinstance(progress, int | float) else None
        eta = data.get("eta_s")
        eta = max(float(eta), 0.0) if isinstance(eta, int | float) else None
        now = time.monotonic()
        stage_changed = stage != self.stage
        if stage_changed or now - self._last_sent >= _PROGRESS_INTERVAL_S:
            self._last_sent = now
            try:
                self.worker.metadata.update_job(self.job_id, stage=stage, progress=progress, eta_s=eta)
                self.worker.metadata.append_event(self.job_id, "progress", {**data, "progress": progress})
            except Exception:
                logger.exception("job %s: could not record progress", self.job_id)
        sync_every = self.worker.settings.checkpoint_sync_s
        if sync_every > 0 and ((stage_changed and self.stage is not None) or now - self._last_sync >= sync_every):
            self._last_sync = now
            try:
                self.worker.sync_checkpoints(self.job_id, self.out_dir)
            except Exception:
                logger.exception("job %s: could not copy its checkpoints to blob storage", self.job_id)
        self.stage = stage
