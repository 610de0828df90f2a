"""What users can do with jobs and uploads, with no HTTP in it: the API and the web pages call these.

:class:`JobService` validates and stores uploads, submits jobs (options, per-user limit, upload checks, then the job
row and a queue message), lists, shows, cancels and deletes them, and finds their artefacts. It raises
:class:`~service.errors.ServiceError` for everything a user did wrong; the API turns those into JSON errors.

Blob layout (keys in the blob store; one prefix per job and per upload, so deleting is one ``delete_prefix``):

| key | what |
|---|---|
| ``uploads/<user>/<upload id>/data`` | the bytes of an upload (teacher or positives) |
| ``uploads/<user>/<upload id>/info.json`` | its file name, size, SHA-256, time (written last: marks it complete) |
| ``uploads/<user>/<upload id>/job.json`` | the job that took it: an upload is used by one job and deleted with it |
| ``jobs/<job id>/artifacts/<name>`` | the job's outputs (``student.onnx``, ``report.json``, ``report.html``) |
| ``jobs/<job id>/checkpoints/...`` | a running job's checkpoints, for a worker on another machine to resume from |

A job's spec (the JSON on its row, all a worker needs) is ``{"version": 1, "options": {...}, "inputs": {"teacher":
{...}, "positives": {...}}}``, each input naming its upload (``upload_id``, ``key``, ``filename``, ``size``,
``sha256``) and what the check found. Uploads a job never took are deleted after ``CONDENSE_UPLOAD_TTL_S`` by the
workers' reaper (:func:`purge_stale_uploads`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from service.errors import ServiceError
from service.jobs.checks import check_classes, check_pool, check_positives, check_teacher
from service.jobs.queue import JobQueue
from service.jobs.scratch import scratch_folder
from service.options import JobOptions, OptionsError
from service.settings import Settings
from storage import (
    Artifact,
    BlobNotFoundError,
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
_CHUNK = 1024 * 1024
_MULTIPART_SLACK = 64 * 1024  # a multipart body's boundaries and headers around the file
_HEX_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
_ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_MAX_FILENAME = 200
_MAX_ACTIVE_LISTED = 1000
_MAX_QUEUE_COUNTED = 1000  # a queue position is counted among at most this many queued jobs


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def artifact_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/artifacts/{name}"


def checkpoint_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def upload_prefix(owner: str, upload_id: str) -> str:
    return f"uploads/{owner}/{upload_id}/"


def is_artifact_name(name: str) -> bool:
    """Artefact names are plain file names: letters, digits, ``._-``, not starting with a dot."""
    return bool(_ARTIFACT_NAME_RE.match(name))


def clean_filename(name: str | None, default: str) -> str:
    """The last part of a client's file name, printable and at most 200 characters (for messages and reports)."""
    if not name:
        return default
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:_MAX_FILENAME] or default


@dataclass(frozen=True)
class UploadInfo:
    """A stored upload of ``owner``: where its bytes are and what they are."""

    id: str
    owner: str
    filename: str
    size: int
    sha256: str
    created_at: float

    @property
    def key(self) -> str:
        return upload_prefix(self.owner, self.id) + "data"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class LocalFile:
    """A file the web process holds (a part of a multipart request saved to scratch space) and the client's name."""

    path: Path
    filename: str


JobInput = UploadInfo | LocalFile


class FilePart(Protocol):
    """A file part of a request (werkzeug's ``FileStorage`` is one): its stream and the client's file name."""

    @property
    def stream(self) -> Any: ...

    @property
    def filename(self) -> str | None: ...


class JobService:
    """Uploads and jobs for authenticated users (see the module docstring)."""

    def __init__(self, settings: Settings, metadata: MetadataStore, blobs: BlobStore, queue: JobQueue) -> None:
        self.settings = settings
        self.metadata = metadata
        self.blobs = blobs
        self.queue = queue

    # scratch space ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh folder in the web processes' scratch space, removed afterwards (:mod:`service.jobs.scratch`)."""
        with scratch_folder(self.settings.tmp_dir) as folder:
            yield folder

    def save_stream(self, stream: IO[bytes], dest: Path, *, limit: int, field: str, filename: str) -> LocalFile:
        """Copy ``stream`` to ``dest`` in chunks; 413 naming ``field`` past ``limit`` bytes."""
        written = 0
        with dest.open("wb") as handle:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise ServiceError.field(413, field, f"{filename}: over the {limit:,}-byte limit")
                handle.write(chunk)
        if written == 0:
            raise ServiceError.field(400, field, f"{filename}: the file is empty")
        return LocalFile(dest, filename)

    # uploads -----------------------------------------------------------------------------------------------------

    def upload_usage(self, user: User) -> int:
        """Bytes of ``user``'s stored uploads (those their jobs took included)."""
        return sum(info.size for info in self.blobs.list(f"uploads/{user.name}/") if info.key.endswith("/data"))

    def quota_room(self, user: User, field: str, incoming: int | None = None) -> int:
        """Bytes ``user`` may still upload; 413 naming ``field`` when ``incoming`` bytes would not fit."""
        quota = self.settings.upload_quota_bytes
        used = self.upload_usage(user)
        room = max(quota - used, 0)
        if incoming is not None and incoming > room:
            raise self._over_quota(field, used)
        return room

    def _over_quota(self, field: str, used: int) -> ServiceError:
        quota = self.settings.upload_quota_bytes
        return ServiceError.field(
            413,
            field,
            f"over the upload quota of {quota:,} bytes per user ({used:,} in use); delete unused uploads "
            "(DELETE /api/v1/uploads/{id}) or finished jobs",
        )

    def list_uploads(self, user: User) -> list[dict[str, Any]]:
        """The user's complete uploads, oldest first, each with the job that took it (``job_id``, or None)."""
        found: dict[str, set[str]] = {}
        for info in self.blobs.list(f"uploads/{user.name}/"):
            parts = info.key.split("/")
            if len(parts) == 4:
                found.setdefault(parts[2], set()).add(parts[3])
        uploads = []
        for upload_id, names in found.items():
            if "info.json" not in names:
                continue  # still being written
            prefix = upload_prefix(user.name, upload_id)
            with contextlib.suppress(BlobNotFoundError, ValueError, KeyError):
                info = json.loads(self.blobs.get_bytes(prefix + "info.json"))
                job_id = None
                if "job.json" in names:
                    job_id = json.loads(self.blobs.get_bytes(prefix + "job.json")).get("job_id")
                uploads.append({**info, "id": upload_id, "job_id": job_id})
        return sorted(uploads, key=lambda item: (item.get("created_at", 0), item["id"]))

    def delete_upload(self, user: User, upload_id: str) -> None:
        """Delete an upload no job took; 404 if there is none, 409 if a job took it (delete the job instead)."""
        if not _HEX_ID_RE.match(upload_id):
            raise ServiceError(404, f"no upload {upload_id}")
        prefix = upload_prefix(user.name, upload_id)
        names = {info.key.rsplit("/", 1)[-1] for info in self.blobs.list(prefix)}
        if "data" not in names and "info.json" not in names:
            raise ServiceError(404, f"no upload {upload_id}")
        if "job.json" in names:
            job_id = json.loads(self.blobs.get_bytes(prefix + "job.json")).get("job_id")
            raise ServiceError(409, f"upload {upload_id} is an input of job {job_id}; delete the job to delete it")
        self.blobs.delete_prefix(prefix)

    def store_upload(
        self,
        user: User,
        stream: IO[bytes],
        filename: str | None,
        *,
        field: str = "file",
        content_length: int | None = None,
    ) -> UploadInfo:
        """Stream ``stream`` into a new upload of ``user`` (bounded memory); 413 past ``CONDENSE_MAX_UPLOAD_BYTES``
        or the user's ``CONDENSE_UPLOAD_QUOTA_BYTES``, checked on ``content_length`` before anything is read."""
        limit = self.settings.max_upload_bytes
        name = clean_filename(filename, "upload")
        if content_length is not None and content_length > limit + _MULTIPART_SLACK:
            raise ServiceError.field(413, field, f"{name}: {content_length:,} bytes, over the {limit:,}-byte limit")
        room = self.quota_room(user, field, None if content_length is None else content_length - _MULTIPART_SLACK)
        upload_id = uuid.uuid4().hex
        prefix = upload_prefix(user.name, upload_id)
        digest = hashlib.sha256()
        size = 0
        try:
            with self.blobs.open_write(prefix + "data") as handle:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ServiceError.field(413, field, f"{name}: over the {limit:,}-byte upload limit")
                    if size > room:
                        raise self._over_quota(field, self.settings.upload_quota_bytes - room)
                    digest.update(chunk)
                    handle.write(chunk)
                if size == 0:
                    raise ServiceError.field(400, field, f"{name}: the upload is empty")
            info = UploadInfo(upload_id, user.name, name, size, digest.hexdigest(), time.time())
            self.blobs.put_bytes(prefix + "info.json", json.dumps(info.as_dict()).encode())
        except BaseException:
            with contextlib.suppress(Exception):
                self.blobs.delete_prefix(prefix)
            raise
        return info

    def _store_local(self, user: User, local: LocalFile) -> UploadInfo:
        upload_id = uuid.uuid4().hex
        prefix = upload_prefix(user.name, upload_id)
        digest = hashlib.sha256()
        with local.path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        size = local.path.stat().st_size
        info = UploadInfo(upload_id, user.name, local.filename, size, digest.hexdigest(), time.time())
        try:
            self.blobs.put_file(prefix + "data", local.path)
            self.blobs.put_bytes(prefix + "info.json", json.dumps(info.as_dict()).encode())
        except BaseException:
            with contextlib.suppress(Exception):
                self.blobs.delete_prefix(prefix)
            raise
        return info

    def get_upload(self, user: User, upload_id: object, *, field: str) -> UploadInfo:
        """The user's complete upload ``upload_id``; 400 naming ``field`` if there is none (or it is another's)."""
        if not isinstance(upload_id, str) or not _HEX_ID_RE.match(upload_id):
            raise ServiceError.field(400, field, "must be an upload id (32 hex digits) from POST /api/v1/uploads")
        prefix = upload_prefix(user.name, upload_id)
        try:
            raw = json.loads(self.blobs.get_bytes(prefix + "info.json"))
        except BlobNotFoundError:
            raise ServiceError.field(400, field, f"no upload {upload_id} (expired, used, or not yours)") from None
        if self.blobs.exists(prefix + "job.json"):
            raise ServiceError.field(409, field, f"upload {upload_id} already belongs to another job")
        return UploadInfo(
            upload_id, user.name, raw["filename"], int(raw["size"]), raw["sha256"], float(raw["created_at"])
        )

    @contextlib.contextmanager
    def _local(self, item: JobInput, scratch: Path, name: str) -> Iterator[tuple[Path, str]]:
        if isinstance(item, LocalFile):
            yield item.path, item.filename
            return
        local = self.blobs.local_path(item.key)
        if local is None:
            local = scratch / name
            self.blobs.download(item.key, local)
        yield local, item.filename

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
                with self._local(teacher, scratch, "teacher") as (teacher_path, teacher_name):
                    teacher_check = check_teacher(
                        teacher_path, filename=teacher_name, max_bytes=self.settings.max_teacher_bytes, options=options
                    )
                positives_check = None
                if positives is not None:
                    with self._local(positives, scratch, "positives") as (positives_path, positives_name):
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
                    with self._local(test, scratch, "test") as (test_path, test_name):
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
                    teacher = self._store_local(user, teacher)
                    stored.append(teacher)
                if isinstance(positives, LocalFile):
                    positives = self._store_local(user, positives)
                    stored.append(positives)
                if isinstance(test, LocalFile):
                    test = self._store_local(user, test)
                    stored.append(test)
            job_inputs: dict[str, Any] = {"teacher": {**_input_spec(teacher), "check": teacher_check.as_dict()}}
            if positives is not None and positives_check is not None:
                job_inputs["positives"] = {**_input_spec(positives), "check": positives_check.as_dict()}
            if test is not None and test_check is not None:
                job_inputs["test"] = {**_input_spec(test), "check": test_check.as_dict()}
            spec = {"version": SPEC_VERSION, "options": options.to_dict(), "inputs": job_inputs}
            try:
                claimed = {"teacher_upload": teacher, "positives_upload": positives, "test_upload": test}
                upload_ids = [info.id for info in claimed.values() if isinstance(info, UploadInfo)]
                job = self.metadata.create_job(user.name, spec, upload_ids=upload_ids, max_active=user.max_running_jobs)
            except UploadClaimedError as error:
                field = next(
                    (name for name, info in claimed.items() if getattr(info, "id", None) == error.upload_id),
                    "positives_upload",
                )
                raise ServiceError.field(409, field, str(error)) from None
            except JobLimitError as error:
                raise ServiceError(429, f"{error}; wait for one to finish or cancel one") from None
        except BaseException:
            for info in stored:
                with contextlib.suppress(Exception):
                    self.blobs.delete_prefix(upload_prefix(info.owner, info.id))
            raise
        for info in (item for item in (teacher, positives, test) if item is not None):
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
        logger.info("job %s queued for %s", job.id, user.name)
        return job

    def get(self, user: User, job_id: str) -> Job:
        """The user's job; 404 if there is none or it is another user's."""
        job = self.metadata.get_job(job_id, owner=user.name) if _HEX_ID_RE.match(job_id) else None
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
            if isinstance(upload_id, str) and _HEX_ID_RE.match(upload_id):
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


def purge_stale_uploads(blobs: BlobStore, ttl_s: float, now: float | None = None) -> int:
    """Delete uploads no job took within ``ttl_s`` seconds (and incomplete ones as old); return how many."""
    now = time.time() if now is None else now
    seen: dict[str, set[str]] = {}
    for info in blobs.list("uploads/"):
        parts = info.key.split("/")
        if len(parts) == 4:
            seen.setdefault("/".join(parts[:3]) + "/", set()).add(parts[3])
    purged = 0
    for prefix, names in seen.items():
        if "job.json" in names:
            continue
        created: float | None = None
        if "info.json" in names:
            with contextlib.suppress(Exception):
                created = float(json.loads(blobs.get_bytes(prefix + "info.json"))["created_at"])
        if created is None:
            path = blobs.local_path(prefix + "data") if "data" in names else None
            created = path.stat().st_mtime if path is not None else None
        if created is not None and now - created > ttl_s:
            blobs.delete_prefix(prefix)
            purged += 1
    return purged
