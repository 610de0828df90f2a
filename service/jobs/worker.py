"""Job workers: take a job from the queue, run the compression pipeline on it, store the results; and the reaper.

One worker process (``condense worker``; ``condense serve`` starts ``CONDENSE_WORKERS`` of them) runs one job at a
time: Huey's consumer (:mod:`service.jobs.queue`) with one worker thread calls :meth:`Worker.run_job` with a job id.
The metadata store, not the queue, decides who runs what.

Running a job (:meth:`Worker.run_job`):

1. :meth:`~storage.MetadataStore.claim_job` with a lease of ``CONDENSE_LEASE_S``. A message for a job that is gone,
   finished, cancelled or held by a live worker is dropped here, so duplicate messages are harmless.
2. A monitor thread (:class:`JobMonitor`) renews the lease every third of it and, every ``CONDENSE_POLL_S``,
   reads the job row: a cancel request, a deleted job, or a lost lease (another worker took the job after this one
   stalled) makes ``should_stop()`` true, and the pipeline stops at its next check -- within seconds.
3. The inputs are copied from the blob store to the work folder ``CONDENSE_WORK_DIR/<job id>/`` (a local blob
   store's files are used in place). The pipeline writes its outputs to ``<work>/out/`` and its checkpoints to
   ``<work>/out/work/``.
4. ``run_compression(teacher, positives, options, out_dir, blob_store=..., on_progress=..., should_stop=...,
   num_threads=CONDENSE_NUM_THREADS)``
   (:mod:`service.pipeline`; ``CONDENSE_PIPELINE=module:function`` replaces it -- tests only). Progress
   events update the job row (stage, progress, ETA) and are appended as ``progress`` events, at most two per
   second plus every stage change.
5. Every top-level file of ``out/`` is stored as ``jobs/<id>/artifacts/<name>`` and recorded with its SHA-256;
   the pipeline's summary is merged into the job's metrics; the job ends ``succeeded``. A ``ValueError`` from the
   pipeline (bad input found late) ends it ``failed`` with the message (server paths replaced by the user's file
   names); any other exception ends it ``failed`` as an internal error (traceback in the worker's log).
   :class:`~service.options.JobCancelled` (raised when ``should_stop()`` was true) ends it ``cancelled`` after a
   user's cancel. A final job's work folder and checkpoint blobs are removed.

Faults:

- **Worker killed** (SIGKILL, out of memory, machine lost): its lease runs out. The reaper -- run by every worker
  at start-up and every ``CONDENSE_REAPER_INTERVAL_S`` -- finds jobs whose lease expired
  (:meth:`~storage.MetadataStore.expired_jobs`) and puts each back in the queue (status ``queued``, a new message),
  or, once it has been started ``CONDENSE_MAX_ATTEMPTS`` times, ends it ``failed`` saying its worker was lost each
  time; an expired job with a cancel request ends ``cancelled``. The next worker resumes from the checkpoints.
- **Resuming elsewhere**: the work folder stays on its machine, so a job resumed there reuses its checkpoints
  directly. For other machines the worker mirrors ``out/work/`` to ``jobs/<id>/checkpoints/`` at every stage change
  and every ``CONDENSE_CHECKPOINT_SYNC_S`` (between pipeline steps, from the progress callback, so files are not
  half-written), with a manifest ``jobs/<id>/checkpoints.json``; a worker starting the job restores them when they
  are newer than what it has locally.
- **Worker stopped** (Ctrl-C, SIGTERM, a deploy): the running job is asked to stop (``should_stop()``), its
  checkpoints are mirrored, and it goes back to the queue without counting as a lost attempt. Huey's consumer waits
  up to 25 s for this; a job that does not stop by then is left to the reaper.
- **Lease lost while running** (the worker stalled longer than the lease and another took over): the heartbeat
  fails, the pipeline is stopped, and this worker leaves the job (and its work folder) alone.
- **Web process crashed between creating a job and queueing it**: at start-up a worker re-sends the jobs that have
  been waiting longer than a lease (duplicates are dropped at the claim).

Liveness: a worker serves no HTTP. With ``CONDENSE_WORKER_HEARTBEAT_FILE`` set it touches that file from its work
loop, waiting or running a job (:mod:`service.jobs.heartbeat`); ``condense worker --check-heartbeat MAX_AGE_S`` is
the probe. (Unrelated to the lease renewal above, which the monitor thread does.)

Known limit: two workers on one machine can briefly share a job's work folder when one stalled past its lease and
the other took over; the stalled one stops at its next ``should_stop()`` check.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from service.jobs.heartbeat import HeartbeatFile
from service.jobs.monitor import JobMonitor, ProgressSink, jsonable
from service.jobs.pool_ingest import IMAGES_FIELD, is_pool_ingest, run_pool_ingest
from service.jobs.queue import JobQueue
from service.jobs.reaper import Reaper
from service.jobs.service import artifact_key, checkpoint_prefix, is_artifact_name
from service.options import JobCancelled, JobOptions
from service.settings import Settings
from storage import BlobNotFoundError, BlobStore, Job, MetadataStore, validate_key
from storage.hashing import file_sha256

__all__ = ["Pipeline", "Worker", "load_pipeline", "run_worker"]

logger = logging.getLogger(__name__)

Pipeline = Callable[..., dict]

_SHUTDOWN_TIMEOUT_S = 25.0
_QUEUE_POLL_MAX_S = 1.0
_CHUNK = 1024 * 1024
_GRACEFUL_REQUEUES = "requeued_on_shutdown"  # metrics key: starts that do not count as lost attempts
REQUIRED_ARTIFACT = "student.onnx"  # a job that "succeeds" without it has failed


def load_pipeline(spec: str | None = None) -> Pipeline:
    """The compression pipeline: ``module:function`` when given (tests), else ``service.pipeline.run_compression``."""
    if spec:
        module_name, _, name = spec.partition(":")
        function = getattr(importlib.import_module(module_name), name, None)
        if not callable(function):
            raise ValueError(f"CONDENSE_PIPELINE={spec!r}: {module_name} has no function {name!r}")
        return function
    from service.pipeline import run_compression  # imported when the first job runs

    return run_compression


class Worker(Reaper):
    """Runs jobs for one worker process (see the module docstring). ``pipeline`` defaults to :func:`load_pipeline`."""

    def __init__(
        self,
        settings: Settings,
        metadata: MetadataStore,
        blobs: BlobStore,
        queue: JobQueue,
        *,
        pipeline: Pipeline | None = None,
        worker_id: str | None = None,
        heartbeat_file: HeartbeatFile | None = None,
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        self.blobs = blobs
        self.queue = queue
        self.heartbeat_file = heartbeat_file
        self._pipeline = pipeline
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.shutdown = threading.Event()
        self._reaper: threading.Thread | None = None
        self._last_purge = float("-inf")

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = load_pipeline(self.settings.pipeline)
        return self._pipeline

    def beat(self) -> None:
        """A sign of life of the work loop (:mod:`service.jobs.heartbeat`); call it only from the loop's thread."""
        if self.heartbeat_file is not None:
            self.heartbeat_file.beat()

    # events ------------------------------------------------------------------------------------------------------

    def _event(self, job_id: str, kind: str, data: Mapping[str, Any]) -> None:
        try:
            self.metadata.append_event(job_id, kind, jsonable(dict(data)))
        except Exception:
            logger.exception("job %s: could not record a %s event", job_id, kind)

    def _lost_attempts(self, job: Job) -> int:
        graceful = job.metrics.get(_GRACEFUL_REQUEUES, 0)
        return job.attempts - (graceful if isinstance(graceful, int) else 0)

    # running a job -----------------------------------------------------------------------------------------------

    def run_job(self, job_id: str) -> None:
        """Claim and run one job (the queue's handler); never raises for a job's own failure."""
        if self.shutdown.is_set():
            self.queue.enqueue(job_id)  # received while stopping: leave it for another worker
            return
        if not self.metadata.claim_job(job_id, self.worker_id, self.settings.lease_s):
            logger.info("job %s: not claimable (taken, finished, cancelled or gone); message dropped", job_id)
            return
        job = self.metadata.get_job(job_id)
        if job is None:
            return
        if self._lost_attempts(job) > self.settings.max_attempts:
            self._finish(job_id, "failed", self._gave_up(job))
            return
        logger.info("job %s: started (attempt %d) by %s", job_id, job.attempts, self.worker_id)
        self._event(job_id, "status", {"status": "running", "attempt": job.attempts})
        monitor = JobMonitor(self, job_id)
        monitor.start()
        work = self.settings.work_dir / job_id
        out_dir = work / "out"
        names: dict[str, str] = {str(work): "<work>"}
        try:
            outcome, message, result = self._execute(job, work, out_dir, monitor, names)
        finally:
            monitor.close()
        reason = monitor.reason
        if outcome == "succeeded" and reason not in ("lost", "deleted"):
            self._succeed(job_id, out_dir, result, required=None if is_pool_ingest(job) else REQUIRED_ARTIFACT)
            self._cleanup(job_id, work)
        elif reason in ("lost", "deleted"):
            logger.warning("job %s: left alone (%s)", job_id, reason)
            if reason == "deleted":
                self._cleanup(job_id, work)
        elif reason == "cancel":
            self._cleanup(job_id, work)  # first: a cancelled job never resumes, and its end is then final
            self._finish(job_id, "cancelled", "cancelled by the user")
        elif reason == "shutdown" and outcome == "stopped":
            self._requeue_after_shutdown(job_id, out_dir)
        else:
            self._finish(job_id, "failed", message or "the job failed")
            self._cleanup(job_id, work)

    def _execute(
        self, job: Job, work: Path, out_dir: Path, monitor: JobMonitor, names: dict[str, str]
    ) -> tuple[str, str | None, dict[str, Any]]:
        """Run the pipeline; ``(outcome, message, result)`` with outcome ``succeeded``, ``stopped`` or ``failed``."""
        try:
            if is_pool_ingest(job):
                return "succeeded", None, self._ingest(job, work, monitor, names)
            options = JobOptions.from_spec(job.spec)
            inputs = work / "inputs"
            teacher = self._fetch_input(job, "teacher", inputs, names)
            labelled = "positives" in job.spec.get("inputs", {})  # no positives: the no-labels mode
            positives = self._fetch_input(job, "positives", inputs, names) if labelled else None
            extra: dict[str, Any] = {}
            if job.spec.get("inputs", {}).get("test") is not None:  # the optional labelled test set
                extra["test_path"] = self._fetch_input(job, "test", inputs, names)
            out_dir.mkdir(parents=True, exist_ok=True)
            self.restore_checkpoints(job.id, out_dir)
            self.beat()
            on_progress, should_stop = self._callbacks(job.id, out_dir, monitor)
            result = self.pipeline(
                teacher,
                positives,
                options,
                out_dir,
                blob_store=self.blobs,
                on_progress=on_progress,
                should_stop=should_stop,
                pool_cache_dir=self.settings.data_dir / "cache",  # remote pools: downloaded once per machine
                num_threads=self.settings.num_threads,  # CONDENSE_NUM_THREADS: the CPUs this worker may use
                job_id=job.id,  # student.onnx names the job that made it
                **extra,
            )
            return "succeeded", None, jsonable(result) if isinstance(result, Mapping) else {}
        except JobCancelled:
            return "stopped", None, {}
        except Exception as error:
            if monitor.should_stop():  # stopped while, e.g., a read was interrupted: the stop's reason decides
                return "stopped", None, {}
            message = str(error)
            for path, shown in sorted(names.items(), key=lambda item: -len(item[0])):
                message = message.replace(path, shown)
            if isinstance(error, ValueError):
                logger.info("job %s: failed: %s", job.id, message)
                return "failed", message, {}
            logger.exception("job %s: internal error", job.id)
            return "failed", f"internal error ({type(error).__name__}): {message}", {}

    def _callbacks(
        self, job_id: str, out_dir: Path, monitor: JobMonitor
    ) -> tuple[Callable[[Any], None], Callable[[], bool]]:
        """``on_progress`` and ``should_stop`` for a job's work: both are signs of life of the work loop."""
        sink = ProgressSink(self, job_id, out_dir)

        def on_progress(event: Any) -> None:
            self.beat()
            sink(event)

        def should_stop() -> bool:
            self.beat()
            return monitor.should_stop()

        return on_progress, should_stop

    def _ingest(self, job: Job, work: Path, monitor: JobMonitor, names: dict[str, str]) -> dict[str, Any]:
        """A pool-ingest job (:mod:`service.jobs.pool_ingest`): its metrics. Raises like the pipeline does."""
        archive = self._fetch_input(job, IMAGES_FIELD, work / "inputs", names)
        on_progress, should_stop = self._callbacks(job.id, work / "out", monitor)
        return run_pool_ingest(
            job,
            archive,
            self.blobs,
            cache_dir=self.settings.data_dir / "cache",
            max_files=self.settings.max_pool_ingest_files,
            on_progress=on_progress,
            should_stop=should_stop,
            num_threads=self.settings.num_threads,
        )

    def _fetch_input(self, job: Job, role: str, inputs: Path, names: dict[str, str]) -> Path:
        item = job.spec.get("inputs", {}).get(role)
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise ValueError(f"the job has no {role} input")
        key, filename = item["key"], str(item.get("filename") or role)
        try:
            local = self.blobs.local_path(key)
            if local is None:
                inputs.mkdir(parents=True, exist_ok=True)
                local = inputs / role
                if not (local.is_file() and local.stat().st_size == item.get("size")):
                    self.blobs.download(key, local)
        except BlobNotFoundError:
            raise ValueError(f"the job's {role} upload {filename!r} is gone (deleted?)") from None
        names[str(local)] = filename
        self.beat()
        return local

    def _succeed(self, job_id: str, out_dir: Path, result: dict[str, Any], *, required: str | None) -> None:
        """Store the outputs and end the job succeeded; failed instead when the ``required`` artefact is missing."""
        if required is not None and not (out_dir / required).is_file():
            logger.error("job %s: the pipeline returned without writing %s", job_id, required)
            self._finish(job_id, "failed", f"internal error: the pipeline produced no {required}")
            return
        try:
            stored = self._store_artifacts(job_id, out_dir)
            if result:
                self.metadata.update_job(job_id, metrics=result)
        except Exception as error:
            logger.exception("job %s: could not store its results", job_id)
            self._finish(job_id, "failed", f"internal error storing the results ({type(error).__name__}: {error})")
            return
        self._finish(job_id, "succeeded", None, artifacts=stored)

    def _store_artifacts(self, job_id: str, out_dir: Path) -> list[str]:
        stored = []
        for path in sorted(out_dir.iterdir()) if out_dir.is_dir() else ():
            if path.is_symlink() or not path.is_file() or not is_artifact_name(path.name):
                continue
            key = artifact_key(job_id, path.name)
            sha256 = file_sha256(path)
            size = path.stat().st_size
            self.blobs.put_file(key, path)
            self.metadata.add_artifact(job_id, path.name, key, size, sha256)
            stored.append(path.name)
            self.beat()
        return stored

    def _finish(self, job_id: str, status: str, error: str | None, **extra: Any) -> None:
        if self.metadata.finish_job(job_id, self.worker_id, status, error=error):
            logger.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")
            data: dict[str, Any] = {"status": status, **extra}
            if error:
                data["error"] = error
            self._event(job_id, "status", data)
        else:
            logger.warning("job %s: could not mark it %s: this worker no longer holds it", job_id, status)

    def _gave_up(self, job: Job) -> str:
        return (
            f"gave up after {self._lost_attempts(job)} attempts: the worker running it stopped answering each time "
            f"(killed, out of memory or disconnected; last: {job.worker_id})"
        )

    def _requeue_after_shutdown(self, job_id: str, out_dir: Path) -> None:
        if not self.metadata.heartbeat(job_id, self.worker_id, self.settings.lease_s):
            return
        with contextlib.suppress(Exception):
            self.sync_checkpoints(job_id, out_dir)
        job = self.metadata.get_job(job_id)
        graceful = (job.metrics.get(_GRACEFUL_REQUEUES, 0) if job else 0) or 0
        self.metadata.update_job(
            job_id, status="queued", stage="waiting for a worker", metrics={_GRACEFUL_REQUEUES: int(graceful) + 1}
        )
        message = "its worker stopped; it resumes from its checkpoint"
        self._event(job_id, "status", {"status": "queued", "message": message})
        self.queue.enqueue(job_id)
        logger.info("job %s: put back in the queue (worker shutting down)", job_id)

    def _cleanup(self, job_id: str, work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(Exception):
            self.blobs.delete_prefix(checkpoint_prefix(job_id))
            self.blobs.delete(f"jobs/{job_id}/checkpoints.json")

    # checkpoints -------------------------------------------------------------------------------------------------

    def sync_checkpoints(self, job_id: str, out_dir: Path) -> int:
        """Mirror ``out_dir/work/`` to ``jobs/<id>/checkpoints/`` (changed files only); return how many were copied."""
        work = out_dir / "work"
        if not work.is_dir():
            return 0
        prefix = checkpoint_prefix(job_id)
        manifest_key = f"jobs/{job_id}/checkpoints.json"
        try:
            previous = json.loads(self.blobs.get_bytes(manifest_key)).get("files", {})
        except (BlobNotFoundError, ValueError):
            previous = {}
        files: dict[str, list[int]] = {}
        copied = 0
        for path in sorted(work.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            relative = path.relative_to(work).as_posix()
            try:
                validate_key(prefix + relative)
            except ValueError:
                continue  # a temporary file or a name no blob store takes
            stat = path.stat()
            signature = [stat.st_size, stat.st_mtime_ns]
            files[relative] = signature
            if previous.get(relative) != signature:
                self.blobs.put_file(prefix + relative, path)
                copied += 1
        for relative in set(previous) - set(files):
            self.blobs.delete(prefix + relative)
        manifest = {"synced_at": time.time(), "worker": self.worker_id, "files": files}
        self.blobs.put_bytes(manifest_key, json.dumps(manifest).encode())
        return copied

    def restore_checkpoints(self, job_id: str, out_dir: Path) -> bool:
        """Replace ``out_dir/work/`` by the mirrored checkpoints when those are newer; return whether it did."""
        try:
            manifest = json.loads(self.blobs.get_bytes(f"jobs/{job_id}/checkpoints.json"))
        except (BlobNotFoundError, ValueError):
            return False
        work = out_dir / "work"
        local_files = [p for p in work.rglob("*") if p.is_file()] if work.is_dir() else []
        newest_local = max((p.stat().st_mtime for p in local_files), default=None)
        if newest_local is not None and newest_local >= float(manifest.get("synced_at", 0)):
            return False
        shutil.rmtree(work, ignore_errors=True)
        prefix = checkpoint_prefix(job_id)
        for info in self.blobs.list(prefix):
            relative = info.key[len(prefix) :]
            dest = work.joinpath(*relative.split("/"))  # keys have no '..' or empty parts
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.blobs.download(info.key, dest)
        logger.info("job %s: restored its checkpoints from blob storage", job_id)
        return True


# ------------------------------------------------------------------------------------------------- the process


def _consumer_class(beat: Callable[[], None]) -> type:
    """Huey's consumer whose work loop calls ``beat`` before each read of the queue (:mod:`service.jobs.heartbeat`)."""
    from huey.consumer import Consumer
    from huey.consumer import Worker as QueueReader

    class _QueueReader(QueueReader):
        def loop(self, now: Any = None) -> None:
            beat()
            super().loop(now)

    class _Consumer(Consumer):
        """Huey's consumer; stopping first asks the running job to stop and re-queue, then waits for it."""

        worker_class = _QueueReader
        worker: Worker

        def stop(self, graceful: bool = False) -> None:
            self.worker.shutdown.set()
            super().stop(graceful=True)

    return _Consumer


def configure_logging(level: str) -> None:
    """The worker's logging (:func:`service.log_setup.configure_logging`)."""
    from service.log_setup import configure_logging as configure

    configure(level)


def run_worker(settings: Settings, *, pipeline: Pipeline | None = None) -> int:
    """``condense worker``: run jobs from the queue until SIGINT / SIGTERM. Returns the exit status."""
    from service.jobs.queue import open_queue
    from service.jobs.scratch import make_private
    from storage import open_metadata_store

    configure_logging(settings.log_level)
    make_private(settings.data_dir)
    heartbeat_file = None
    if settings.worker_heartbeat_file is not None:
        heartbeat_file = HeartbeatFile(settings.worker_heartbeat_file, settings.worker_heartbeat_s)
        heartbeat_file.start()  # replaces a file an earlier run left; OSError when it cannot be written
    metadata = open_metadata_store(settings.database_url)
    blobs = settings.open_blobs()
    queue = open_queue(settings.broker_url)
    worker = Worker(settings, metadata, blobs, queue, pipeline=pipeline, heartbeat_file=heartbeat_file)
    if pipeline is None and settings.pipeline:
        worker._pipeline = load_pipeline(settings.pipeline)  # fail at start-up, not on the first job
    queue.set_handler(worker.run_job)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    resent = worker.resend_waiting()
    if resent:
        logger.info("re-sent %d waiting job(s)", resent)
    worker.start_reaper()
    consumer = _consumer_class(worker.beat)(
        queue.huey,
        workers=1,
        worker_type="thread",
        periodic=False,
        initial_delay=0.1,
        backoff=1.5,
        max_delay=_QUEUE_POLL_MAX_S,
        check_worker_health=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    consumer.worker = worker
    logger.info("worker %s: waiting for jobs on %s", worker.worker_id, queue)
    try:
        consumer.run()
    finally:
        worker.shutdown.set()
        queue.close()
        metadata.close()
        blobs.close()
    return 0
