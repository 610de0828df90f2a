"""What users can do with jobs and uploads, with no HTTP in it: the API and the web pages call these.

:class:`JobService` validates and stores uploads, submits jobs (options, per-user limit, upload checks, then the job
row and a queue message), lists, shows, cancels and deletes them, and finds their artefacts. It raises
:class:`~service.errors.ServiceError` for everything a user did wrong; the API turns those into JSON errors.

Blob layout: :mod:`service.jobs.layout`; uploads: :mod:`service.jobs.uploads` (:class:`JobService` is an
:class:`~service.jobs.uploads.UploadService`).

A job's spec (the JSON on its row, all a worker needs) is ``{"version": 1, "options": {...}, "inputs": {"teacher":
{...}, "positives": {...}}}``, each input naming its upload (``upload_id``, ``key``, ``filename``, ``size``,
``sha256``) and what the check found. Uploads a job never took are deleted after ``CONDENSE_UPLOAD_TTL_S`` by the
workers' reaper (:func:`purge_stale_uploads`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from service.errors import ServiceError
from service.jobs.checks import check_classes, check_pool, check_positives, check_teacher
from service.jobs.layout import (
    HEX_ID_RE,
    artifact_key,
    checkpoint_prefix,
    is_artifact_name,
    job_prefix,
    upload_prefix,
)
from service.jobs.pool_ingest import pool_ingest_name
from service.jobs.queue import JobQueue
from service.jobs.uploads import (
    FilePart,
    JobInput,
    LocalFile,
    UploadInfo,
    UploadService,
    clean_filename,
    purge_stale_uploads,
)
from service.options import JobOptions, OptionsError
from service.settings import Settings
from storage import (
    Artifact,
    BlobStore,
    Job,
    JobLimitError,
    MetadataStore,
    UploadClaimedError,
    User,
)

__all__ = [
    "FILE_FIELDS",
    "OPTIONAL_FILE_FIELDS",
    "SPEC_VERSION",
    "FilePart",
    "JobService",
    "LocalFile",
    "UploadInfo",
    "artifact_key",
    "checkpoint_prefix",
    "clean_filename",
    "is_artifact_name",
    "job_prefix",
    "purge_stale_uploads",
    "upload_prefix",
]

logger = logging.getLogger(__name__)

SPEC_VERSION = 2
FILE_FIELDS: tuple[str, str] = ("teacher", "positives")
"""The two files of a job, named like the API's multipart parts and the web form's file inputs."""
REQUIRED_FILE_FIELDS: tuple[str, ...] = ("teacher",)
"""Without positives a job runs in the no-labels mode (DFND selection, :mod:`service.pipeline.stages`)."""
OPTIONAL_FILE_FIELDS: tuple[str] = ("test",)
"""The optional file of a job: a labelled test set (the positives' format and classes), never trained on."""
_MAX_ACTIVE_LISTED = 1000
_MAX_QUEUE_COUNTED = 1000  # a queue position is counted among at most this many queued jobs


class JobService(UploadService):
    """Uploads and jobs for authenticated users (see the module docstring)."""

    def __init__(self, settings: Settings, metadata: MetadataStore, blobs: BlobStore, queue: JobQueue) -> None:
        super().__init__(settings, blobs)
        self.metadata = metadata
        self.queue = queue

    # jobs --------------------------------------------------------------------------------------------------------

    def parse_options(self, data: object) -> JobOptions:
        """:class:`JobOptions` from JSON; 422 with every bad option as ``options.<name>``."""
        try:
            return JobOptions.from_dict(data)
        except OptionsError as error:
            fields = [{"field": f"options.{p['field']}", "reason": p["reason"]} for p in error.problems]
            raise ServiceError(422, str(error), fields) from None

    def check_limit(self, user: User) -> None:
        """429 when ``user`` has ``max_running_jobs`` jobs queued or running already."""
        active = self.metadata.list_jobs(user.name, status=("queued", "running"), limit=_MAX_ACTIVE_LISTED)
        if len(active) >= user.max_running_jobs:
            raise ServiceError(
                429,
                f"{user.name} has {len(active)} job(s) queued or running, the most allowed "
                f"({user.max_running_jobs}); wait for one to finish or cancel one",
            )

    def submit_files(self, user: User, options_data: object, parts: Mapping[str, FilePart | None]) -> Job:
        """Submit a job whose files came in this request (the API's multipart body and the web form alike).

        The options and the presence of both files are checked together first, so every problem is reported at once
        and no file is copied for a request that will be refused; then the per-user limit; then the files are saved
        to scratch space (413 past their limits) and :meth:`submit` runs every other check.
        """
        problems: list[dict[str, str]] = []
        messages: list[str] = []
        status = 400
        try:
            self.parse_options(options_data)
        except ServiceError as error:
            problems.extend(error.fields)
            messages.append(error.message)
            status = error.status
        present = {name: part for name in FILE_FIELDS if (part := parts.get(name)) is not None and part.filename}
        missing = [name for name in REQUIRED_FILE_FIELDS if name not in present]
        if missing:
            problems.extend({"field": name, "reason": "choose a file"} for name in missing)
            messages.append(f"missing file(s): {', '.join(missing)}")
        for name in OPTIONAL_FILE_FIELDS:
            if (part := parts.get(name)) is not None and part.filename:
                present[name] = part
        if problems:
            raise ServiceError(status, "; ".join(messages), problems)
        self.check_limit(user)
        limits = {
            "teacher": self.settings.max_teacher_bytes,
            "positives": self.settings.max_upload_bytes,
            "test": self.settings.max_upload_bytes,
        }
        with self.scratch() as scratch:
            saved = {}
            for name, part in present.items():
                saved[name] = self.save_stream(
                    part.stream,
                    scratch / name,
                    limit=limits[name],
                    field=name,
                    filename=clean_filename(part.filename, name),
                )
            return self.submit(user, options_data, saved["teacher"], saved.get("positives"), saved.get("test"))

    def submit(
        self,
        user: User,
        options_data: object,
        teacher: JobInput,
        positives: JobInput | None,
        test: JobInput | None = None,
    ) -> Job:
        """Validate everything, then create and queue the job (see the module docstring). ServiceError if refused.

        ``positives`` None is the no-labels mode. ``test`` is the optional labelled test set; it is checked like the
        positives and must have their classes (without positives: as many classes as the teacher has outputs).
        """
        options = self.parse_options(options_data)
        if positives is None and options.selection in ("pu", "pu-half"):
            reason = "needs positives (the PU classifier learns from them); without them use default, dfnd or random"
            raise ServiceError.field(422, "options.selection", reason)
        self.check_limit(user)
        check_pool(self.blobs, options.pool)
        if isinstance(teacher, UploadInfo) and isinstance(positives, UploadInfo) and teacher.id == positives.id:
            raise ServiceError.field(400, "positives_upload", "the teacher and the positives are the same upload")
        if isinstance(test, UploadInfo) and test.id in {getattr(teacher, "id", None), getattr(positives, "id", None)}:
            raise ServiceError.field(400, "test_upload", "the test set must be an upload of its own")
        stored: list[UploadInfo] = []
        try:
            with self.scratch() as scratch:
                with self.local_copy(teacher, scratch, "teacher") as (teacher_path, teacher_name):
                    teacher_check = check_teacher(
                        teacher_path, filename=teacher_name, max_bytes=self.settings.max_teacher_bytes, options=options
                    )
                positives_check = None
                if positives is not None:
                    with self.local_copy(positives, scratch, "positives") as (positives_path, positives_name):
                        positives_check = check_positives(
                            positives_path,
                            filename=positives_name,
                            input_shape=teacher_check.input_shape,
                            max_bytes=self.settings.max_upload_bytes,
                            max_files=self.settings.max_positives_files,
                        )
                    check_classes(teacher_check, positives_check, filename=positives_name)
                test_check = None
                if test is not None:
                    with self.local_copy(test, scratch, "test") as (test_path, test_name):
                        test_check = check_positives(
                            test_path,
                            filename=test_name,
                            input_shape=teacher_check.input_shape,
                            max_bytes=self.settings.max_upload_bytes,
                            max_files=self.settings.max_positives_files,
                            field="test",
                        )
                    if positives_check is None:
                        check_classes(teacher_check, test_check, filename=test_name, field="test")
                    elif set(test_check.classes) != set(positives_check.classes):
                        raise ServiceError.field(
                            422,
                            "test",
                            f"the test set's classes ({', '.join(sorted(test_check.classes))}) are not the "
                            f"positives' ({', '.join(sorted(positives_check.classes))})",
                        )
                local_bytes = sum(
                    item.path.stat().st_size for item in (teacher, positives, test) if isinstance(item, LocalFile)
                )
                if local_bytes:
                    self.quota_room(user, "teacher" if isinstance(teacher, LocalFile) else "positives", local_bytes)
                if isinstance(teacher, LocalFile):
                    teacher = self.store_local(user, teacher)
                    stored.append(teacher)
                if isinstance(positives, LocalFile):
                    positives = self.store_local(user, positives)
                    stored.append(positives)
                if isinstance(test, LocalFile):
                    test = self.store_local(user, test)
                    stored.append(test)
            job_inputs: dict[str, Any] = {"teacher": {**_input_spec(teacher), "check": teacher_check.as_dict()}}
            if positives is not None and positives_check is not None:
                job_inputs["positives"] = {**_input_spec(positives), "check": positives_check.as_dict()}
            if test is not None and test_check is not None:
                job_inputs["test"] = {**_input_spec(test), "check": test_check.as_dict()}
            spec = {"version": SPEC_VERSION, "options": options.to_dict(), "inputs": job_inputs}
            job = self.create_job(
                user, spec, {"teacher_upload": teacher, "positives_upload": positives, "test_upload": test}
            )
        except BaseException:
            for info in stored:
                with contextlib.suppress(Exception):
                    self.blobs.delete_prefix(upload_prefix(info.owner, info.id))
            raise
        self.queue_job(job, [item for item in (teacher, positives, test) if item is not None])
        return job

    def create_job(self, user: User, spec: dict[str, Any], claimed: Mapping[str, JobInput | None]) -> Job:
        """The job row for ``spec``, claiming the uploads of ``claimed`` (request field -> upload) atomically with the
        user's job limit: 409 naming the field of an upload another job took, 429 at the limit."""
        try:
            upload_ids = [info.id for info in claimed.values() if isinstance(info, UploadInfo)]
            return self.metadata.create_job(user.name, spec, upload_ids=upload_ids, max_active=user.max_running_jobs)
        except UploadClaimedError as error:
            field = next(
                (name for name, info in claimed.items() if getattr(info, "id", None) == error.upload_id),
                next(iter(claimed), "upload"),
            )
            raise ServiceError.field(409, field, str(error)) from None
        except JobLimitError as error:
            raise ServiceError(429, f"{error}; wait for one to finish or cancel one") from None

    def queue_job(self, job: Job, inputs: list[JobInput]) -> None:
        """Mark ``inputs`` as taken by ``job`` and queue it; 503 (the job ends failed) when the queue is down."""
        for info in inputs:
            if isinstance(info, UploadInfo):
                marker = json.dumps({"job_id": job.id}).encode()
                self.blobs.put_bytes(upload_prefix(info.owner, info.id) + "job.json", marker)
        self.metadata.append_event(job.id, "status", {"status": "queued"})
        try:
            self.queue.enqueue(job.id)
        except Exception as error:
            logger.exception("job %s: could not be queued", job.id)
            reason = f"the job queue is unreachable ({type(error).__name__}); submit the job again later"
            self.metadata.update_job(job.id, status="failed", error=reason)
            self.metadata.append_event(job.id, "status", {"status": "failed", "error": reason})
            raise ServiceError(503, reason) from None
        logger.info("job %s queued for %s", job.id, job.owner)

    def get(self, user: User, job_id: str) -> Job:
        """The user's job; 404 if there is none or it is another user's."""
        job = self.metadata.get_job(job_id, owner=user.name) if HEX_ID_RE.match(job_id) else None
        if job is None:
            raise ServiceError(404, f"no job {job_id}")
        return job

    def list(self, user: User, status: str | None = None, limit: int = 100) -> list[Job]:
        """The user's jobs, newest first."""
        return self.metadata.list_jobs(user.name, status=status, limit=limit)

    def cancel(self, user: User, job_id: str) -> Job:
        """Cancel a queued job at once; ask a running job's worker to stop (within seconds). 409 if it finished."""
        job = self.get(user, job_id)
        if job.is_final:
            raise ServiceError(409, f"job {job_id} has already {job.status}; nothing to cancel")
        updated = self.metadata.request_cancel(job.id)
        if updated.status == "cancelled" and job.status != "cancelled":
            self.metadata.append_event(job.id, "status", {"status": "cancelled", "error": "cancelled by the user"})
        else:
            self.metadata.append_event(job.id, "cancel_requested", {"message": "cancel requested by the user"})
        return updated

    def delete(self, user: User, job_id: str) -> None:
        """Delete the job, its artefacts, checkpoints and inputs. 409 while it runs (cancel it first)."""
        job = self.get(user, job_id)
        if job.status == "queued":
            job = self.metadata.request_cancel(job.id)
        if job.status == "running":
            raise ServiceError(409, f"job {job_id} is running; cancel it and delete it once it has stopped")
        self.blobs.delete_prefix(job_prefix(job.id))
        for item in job.spec.get("inputs", {}).values():
            upload_id = item.get("upload_id")
            if isinstance(upload_id, str) and HEX_ID_RE.match(upload_id):
                self.blobs.delete_prefix(upload_prefix(job.owner, upload_id))
        self.metadata.delete_job(job.id)
        logger.info("job %s deleted by %s", job.id, user.name)

    def artifact(self, user: User, job_id: str, name: str) -> Artifact:
        """The record of one artefact of the user's job; 404 if there is none."""
        job = self.get(user, job_id)
        for artifact in self.metadata.list_artifacts(job.id):
            if artifact.name == name:
                return artifact
        raise ServiceError(404, f"job {job_id} has no artefact {name!r}")

    def queue_position(self, job: Job) -> int | None:
        """How many queued jobs (of every user) were submitted before ``job``; None unless it is queued."""
        if job.status != "queued":
            return None
        queued = self.metadata.list_jobs(status="queued", limit=_MAX_QUEUE_COUNTED)
        return sum(1 for other in queued if (other.created_at, other.id) < (job.created_at, job.id))

    def view(self, job: Job, *, url_prefix: str = "/api/v1") -> dict[str, Any]:
        """The job as the API shows it (no worker ids or leases; artefacts with their download URLs)."""
        inputs = {}
        for role, item in job.spec.get("inputs", {}).items():
            inputs[role] = {
                key: item.get(key) for key in ("upload_id", "filename", "size", "sha256") if key in item
            } | dict(item.get("check", {}))
        artifacts = [
            {
                "name": a.name,
                "size": a.size,
                "sha256": a.sha256,
                "url": f"{url_prefix}/jobs/{job.id}/artifacts/{a.name}",
            }
            for a in self.metadata.list_artifacts(job.id)
        ]
        return {
            "id": job.id,
            "kind": job.spec.get("kind") or "compress",
            "pool": pool_ingest_name(job),
            "owner": job.owner,
            "status": job.status,
            "stage": job.stage,
            "progress": job.progress,
            "eta_s": job.eta_s,
            "error": job.error,
            "metrics": job.metrics,
            "attempts": job.attempts,
            "cancel_requested": job.cancel_requested,
            "queue_position": self.queue_position(job),
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "options": job.spec.get("options", {}),
            "inputs": inputs,
            "artifacts": artifacts,
        }


def _input_spec(info: JobInput) -> dict[str, Any]:
    if not isinstance(info, UploadInfo):
        raise TypeError("inputs are stored before the job is created")
    return {"upload_id": info.id, "key": info.key, "filename": info.filename, "size": info.size, "sha256": info.sha256}
