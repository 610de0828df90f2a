"""The reaper: what every worker does for jobs whose worker was lost, and for leftovers.

Run by every worker at start-up and every ``CONDENSE_REAPER_INTERVAL_S`` (:meth:`Reaper.start_reaper`): it finds
jobs whose lease expired (:meth:`~storage.MetadataStore.expired_jobs`) and puts each back in the queue (status
``queued``, a new message), or, once it has been started ``CONDENSE_MAX_ATTEMPTS`` times, ends it ``failed``; an
expired job with a cancel request ends ``cancelled``. It also removes this machine's work folders of finished jobs
and, once an hour, uploads no job took (:func:`~service.jobs.service.purge_stale_uploads`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Mapping
from typing import Any

from service.jobs.queue import JobQueue
from service.jobs.service import checkpoint_prefix, purge_stale_uploads
from service.settings import Settings
from storage import BlobStore, Job, MetadataStore

__all__ = ["Reaper"]

logger = logging.getLogger(__name__)

_UPLOAD_PURGE_INTERVAL_S = 3600.0


class Reaper:
    """The reaper's part of a :class:`~service.jobs.worker.Worker` (which provides the attributes below)."""

    settings: Settings
    metadata: MetadataStore
    blobs: BlobStore
    queue: JobQueue
    shutdown: threading.Event
    _reaper: threading.Thread | None
    _last_purge: float

    def _event(self, job_id: str, kind: str, data: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _gave_up(self, job: Job) -> str:
        raise NotImplementedError

    def _lost_attempts(self, job: Job) -> int:
        raise NotImplementedError

    def reap(self) -> int:
        """Re-queue (or end) running jobs whose worker was lost; return how many jobs it acted on."""
        acted = 0
        for job in self.metadata.expired_jobs():
            try:
                acted += self._reap_one(job)
            except Exception:
                logger.exception("reaper: job %s", job.id)
        self._clean_work_dirs()
        now = time.monotonic()
        if now - self._last_purge >= _UPLOAD_PURGE_INTERVAL_S:
            self._last_purge = now
            try:
                purged = purge_stale_uploads(self.blobs, self.settings.upload_ttl_s)
                if purged:
                    logger.info("reaper: deleted %d unused upload(s)", purged)
            except Exception:
                logger.exception("reaper: could not purge stale uploads")
        return acted

    def _reap_one(self, job: Job) -> int:
        lost = job.worker_id or "?"
        if job.cancel_requested:
            if self.metadata.finish_job(job.id, lost, "cancelled", error="cancelled by the user (its worker was lost)"):
                self._event(job.id, "status", {"status": "cancelled", "error": "cancelled by the user"})
                self.blobs.delete_prefix(checkpoint_prefix(job.id))
                return 1
            return 0
        if self._lost_attempts(job) >= self.settings.max_attempts:
            reason = self._gave_up(job)
            if self.metadata.finish_job(job.id, lost, "failed", error=reason):
                self._event(job.id, "status", {"status": "failed", "error": reason})
                logger.warning("reaper: job %s failed: %s", job.id, reason)
                self.blobs.delete_prefix(checkpoint_prefix(job.id))
                return 1
            return 0
        current = self.metadata.get_job(job.id)
        if (
            current is None
            or current.status != "running"
            or current.worker_id != job.worker_id
            or current.lease_expires_at != job.lease_expires_at
        ):
            return 0  # taken over or renewed meanwhile
        self.metadata.update_job(job.id, status="queued", stage="waiting for a worker")
        message = f"its worker ({lost}) stopped answering; it resumes from its last checkpoint"
        self._event(job.id, "status", {"status": "queued", "message": message})
        self.queue.enqueue(job.id)
        logger.warning("reaper: job %s re-queued: %s", job.id, message)
        return 1

    def _clean_work_dirs(self) -> None:
        """Remove this machine's work folders of jobs that are finished or gone (their worker died)."""
        root = self.settings.work_dir
        if not root.is_dir():
            return
        for folder in root.iterdir():
            if not folder.is_dir() or len(folder.name) != 32:
                continue
            try:
                job = self.metadata.get_job(folder.name)
            except (TypeError, ValueError):
                continue
            if job is None or job.is_final:
                shutil.rmtree(folder, ignore_errors=True)

    def resend_waiting(self) -> int:
        """Re-send jobs queued for longer than a lease (their message may be lost); duplicates are harmless."""
        cutoff = time.time() - self.settings.lease_s
        count = 0
        for job in self.metadata.list_jobs(status="queued", limit=10_000):
            if job.updated_at < cutoff:
                self.queue.enqueue(job.id)
                count += 1
        return count

    def start_reaper(self) -> None:
        """Run the reaper now and then every ``CONDENSE_REAPER_INTERVAL_S`` in a thread, until :attr:`shutdown`."""

        def loop() -> None:
            while True:
                try:
                    self.reap()
                except Exception:
                    logger.exception("reaper failed")
                if self.shutdown.wait(self.settings.reaper_interval_s):
                    return

        self._reaper = threading.Thread(target=loop, name="reaper", daemon=True)
        self._reaper.start()
