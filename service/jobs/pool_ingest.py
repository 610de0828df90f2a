"""Adding images to a pool as a queued job: an admin uploads an archive, a worker embeds and indexes it.

Ingesting embeds every image with the pool's embedder (minutes for tens of thousands of images), so it never runs in
a web request: :func:`submit_pool_ingest` checks the request and queues a job whose spec is ``{"version": 2,
"kind": "pool_ingest", "pool": {"name", "image_size", "channels"}, "inputs": {"images": {...}}}``; the worker calls
:func:`run_pool_ingest` instead of the compression pipeline. Such jobs share everything else with compression jobs:
leases and take-over after a crashed worker, cancel, the job page with live progress, delete, the per-user job limit.

The pool store's ingest is atomic (:meth:`pu_mining.pool.PoolStore.ingest` commits a new manifest at the end and
removes what an interrupted run left), so a cancelled, failed or crashed ingest leaves the pool as it was. Two
ingests into one pool would remove each other's unfinished files: a second one is refused (409) while one is queued
or running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import ServiceError
from service.jobs.uploads import UploadInfo
from storage import BlobStore, Job, User

if TYPE_CHECKING:
    from service.jobs.service import JobService

__all__ = ["POOL_INGEST_KIND", "is_pool_ingest", "pool_ingest_name", "run_pool_ingest", "submit_pool_ingest"]

POOL_INGEST_KIND = "pool_ingest"
"""The ``kind`` of a pool-ingest job's spec (compression jobs have none)."""
IMAGES_FIELD = "images"
"""The archive's field: the web form's file input and the spec's input role."""
_SKIPPED_KEPT = 20  # a job's metrics list the first skipped members; the count covers all
_ACTIVE_SCANNED = 1000


def is_pool_ingest(job: Job) -> bool:
    """Whether ``job`` adds images to a pool (rather than compressing a model)."""
    return job.spec.get("kind") == POOL_INGEST_KIND


def pool_ingest_name(job: Job) -> str | None:
    """The pool a pool-ingest job adds to (None for other jobs)."""
    pool = job.spec.get("pool") if is_pool_ingest(job) else None
    return str(pool.get("name")) if isinstance(pool, Mapping) else None


def _whole_number(value: object, field: str, allowed: tuple[int, ...] | None, low: int, high: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ServiceError.field(422, field, "must be a whole number") from None
    if allowed is not None and number not in allowed:
        raise ServiceError.field(422, field, f"must be one of {', '.join(map(str, allowed))}")
    if not low <= number <= high:
        raise ServiceError.field(422, field, f"must be between {low} and {high}")
    return number


def _pool_settings(blobs: BlobStore, name: object, image_size: object, channels: object) -> dict[str, Any]:
    """The spec's ``pool`` part: a valid name, and the stored image size and channels of a new pool (an existing
    pool keeps its own; asking for different ones is a 422)."""
    from pu_mining.pool import PoolConfig, PoolNotFoundError, PoolStore
    from pu_mining.pool_types import check_pool_name

    try:
        pool_name = check_pool_name(name)
    except ValueError as error:
        raise ServiceError.field(422, "name", str(error)) from None
    size = _whole_number(image_size, "image_size", None, 8, 256)
    depth = _whole_number(channels, "channels", (1, 3), 1, 3)
    try:
        existing = PoolStore(blobs).manifest(pool_name).config
    except PoolNotFoundError:
        defaults = PoolConfig()
        return {"name": pool_name, "image_size": size or defaults.image_size, "channels": depth or defaults.channels}
    for field, asked, stored in (("image_size", size, existing.image_size), ("channels", depth, existing.channels)):
        if asked is not None and asked != stored:
            reason = f"pool {pool_name} stores {stored}; an existing pool's {field.replace('_', ' ')} cannot change"
            raise ServiceError.field(422, field, reason)
    return {"name": pool_name, "image_size": None, "channels": None}


def _check_archive(path: Path, filename: str, max_files: int) -> None:
    """422 unless the file opens as an accepted image format and its first image reads (the rest is the worker's)."""
    from pu_mining.image_files import iter_images
    from pu_mining.image_types import ReadLimits

    try:
        reader = iter_images(path, ReadLimits(max_files=max_files), on_error="skip")
        next(reader, None)
    except (ValueError, OSError) as error:
        reason = str(error).replace(str(path), filename)
        raise ServiceError.field(422, IMAGES_FIELD, f"{filename}: {reason}") from None


def submit_pool_ingest(
    service: JobService,
    user: User,
    name: object,
    images: UploadInfo,
    *,
    image_size: object = None,
    channels: object = None,
) -> Job:
    """Queue a job adding the images of upload ``images`` to pool ``name`` (created when new); admins only (403).

    Refused with the field and the reason: a bad name,
    sizes that do not fit (422), a file that is not an image archive (422), another ingest into the same pool queued or
    running (409), the user's job limit (429).
    """
    if not user.is_admin:
        raise ServiceError(403, "adding images to a pool needs the admin role")
    pool = _pool_settings(service.blobs, name, image_size, channels)
    service.check_limit(user)
    for other in service.metadata.list_jobs(status=("queued", "running"), limit=_ACTIVE_SCANNED):
        if pool_ingest_name(other) == pool["name"]:
            reason = f"job {other.id[:8]} is already adding images to pool {pool['name']}; wait for it to finish"
            raise ServiceError.field(409, "name", reason)
    with service.scratch() as scratch, service.local_copy(images, scratch, IMAGES_FIELD) as (path, filename):
        _check_archive(path, filename, service.settings.max_pool_ingest_files)
    item = {"upload_id": images.id, "key": images.key, "filename": images.filename, "size": images.size}
    spec = {"version": 2, "kind": POOL_INGEST_KIND, "pool": pool, "inputs": {IMAGES_FIELD: item}}
    job = service.create_job(user, spec, {f"{IMAGES_FIELD}_upload": images})
    service.queue_job(job, [images])
    return job


def run_pool_ingest(
    job: Job,
    archive: Path,
    blobs: BlobStore,
    *,
    cache_dir: Path,
    max_files: int,
    on_progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Ingest ``archive`` into the job's pool; the job's metrics (``pool_ingest``: counts, version, index).

    Raises :class:`~service.options.JobCancelled` at the next progress report (about once a second) after
    ``should_stop()`` turned true; the pool is then unchanged.
    """
    from pu_mining.image_types import ReadLimits
    from pu_mining.pool import PoolConfig, PoolStore
    from service.options import JobCancelled

    pool = job.spec.get("pool")
    if not isinstance(pool, Mapping) or not isinstance(pool.get("name"), str):
        raise ValueError("the job names no pool")
    config = None
    if pool.get("image_size") is not None:  # a new pool at submit time
        config = PoolConfig(image_size=int(pool["image_size"]), channels=int(pool["channels"]))
    filename = str(job.spec.get("inputs", {}).get(IMAGES_FIELD, {}).get("filename") or archive.name)

    def progress(event: Mapping[str, Any]) -> None:
        if should_stop():
            raise JobCancelled()
        on_progress(
            {
                "stage": "ingest",
                "message": f"{event['done']:,} read, {event['added']:,} added, {event['duplicates']:,} duplicates, "
                f"{event['skipped']:,} skipped ({event['images_per_second']:.0f} images/s)",
                **{key: event[key] for key in ("done", "added", "duplicates", "skipped")},
            }
        )

    store = PoolStore(blobs, cache_dir=cache_dir)
    on_progress({"stage": "ingest", "progress": 0.0, "message": f"reading {filename}"})
    try:
        report = store.ingest(
            pool["name"],
            [archive],
            config=config,
            limits=ReadLimits(max_files=max_files),
            on_progress=progress,
            num_threads=num_threads,
        )
    except ValueError as error:
        raise ValueError(str(error).replace(str(archive), filename)) from None
    on_progress({"stage": "ingest", "progress": 1.0, "message": f"pool {report.pool} version {report.version}"})
    summary = report.as_dict()
    summary["skipped_count"] = len(report.skipped)
    summary["skipped"] = [line.replace(str(archive), filename) for line in report.skipped[:_SKIPPED_KEPT]]
    summary["sources"] = {filename: sum(report.sources.values())}
    return {"pool_ingest": summary}
