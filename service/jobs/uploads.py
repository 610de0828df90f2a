"""Uploads, with no HTTP in them: :class:`UploadService` streams a user's files into the blob store (within the
per-file limit and the per-user quota), lists and deletes them, and hands a job's inputs to the checks as local files.

An upload is ``uploads/<user>/<upload id>/data`` with its ``info.json`` (written last: marks it complete) and, once
a job took it, ``job.json`` (:mod:`service.jobs.layout`). Uploads a job never took are deleted after
``CONDENSE_UPLOAD_TTL_S`` by the workers' reaper (:func:`purge_stale_uploads`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from service.errors import ServiceError
from service.jobs.layout import HEX_ID_RE, upload_prefix
from service.jobs.scratch import scratch_folder
from service.settings import Settings
from storage import BlobNotFoundError, BlobStore, User

__all__ = [
    "FilePart",
    "JobInput",
    "LocalFile",
    "UploadInfo",
    "UploadService",
    "clean_filename",
    "purge_stale_uploads",
]

_CHUNK = 1024 * 1024
_MULTIPART_SLACK = 64 * 1024  # a multipart body's boundaries and headers around the file
_MAX_FILENAME = 200


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


class UploadService:
    """A user's uploads and the web processes' scratch space; :class:`~service.jobs.service.JobService` builds on it."""

    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs

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
        if not HEX_ID_RE.match(upload_id):
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

    def store_local(self, user: User, local: LocalFile) -> UploadInfo:
        """Store a file saved in scratch space as an upload of ``user`` (the quota is the caller's check)."""
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
        if not isinstance(upload_id, str) or not HEX_ID_RE.match(upload_id):
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
    def local_copy(self, item: JobInput, scratch: Path, name: str) -> Iterator[tuple[Path, str]]:
        """``(path, filename)`` of ``item`` on this machine: in place when local, else copied into ``scratch``."""
        if isinstance(item, LocalFile):
            yield item.path, item.filename
            return
        local = self.blobs.local_path(item.key)
        if local is None:
            local = scratch / name
            self.blobs.download(item.key, local)
        yield local, item.filename


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
