"""Jobs with leases, their events and their artefact records in the metadata store.

Status changes, leases and event ordering are described in :mod:`storage.metadata`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage.access import JobLimitError, claim_uploads, upload_claims
from storage.metadata.base import StoreBase
from storage.metadata.checks import (
    check_int,
    check_job_id,
    check_number,
    check_status,
    check_text,
    check_user_name,
    dump_json,
)
from storage.metadata.records import FINAL_STATUSES, Artifact, Job, JobEvent, JobNotFoundError
from storage.metadata.schema import artifacts, job_events, job_from_row, jobs, users

__all__ = ["JobRecordStore"]

# Status changes update_job accepts (claim_job is the only way into "running").
_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"cancelled", "failed"}),
    "running": frozenset({"queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_LIST = 10_000


class JobRecordStore(StoreBase):
    """The jobs, job events and artefact records of :class:`~storage.metadata.store.MetadataStore`."""

    # jobs ----------------------------------------------------------------------------------------

    def create_job(
        self,
        owner: str,
        spec: Mapping[str, Any],
        *,
        upload_ids: Iterable[str] = (),
        max_active: int | None = None,
    ) -> Job:
        """Create a ``queued`` job owned by ``owner`` (an existing user) with the JSON ``spec``.

        In the same transaction, atomically: with ``max_active``, :class:`~storage.access.JobLimitError` if the owner
        already has that many jobs queued or running; the job claims ``upload_ids``
        (:class:`~storage.access.UploadClaimedError` if another job has one). Of concurrent calls that would break
        either rule, exactly the ones that fit succeed.
        """
        owner = check_user_name(owner, "owner")
        spec_json = dump_json(spec, "spec")
        now = self._now()
        job_id = uuid.uuid4().hex
        with self._writer.begin() as conn:
            # Serialises job creation per owner on PostgreSQL (SQLite's BEGIN IMMEDIATE serialises all writers).
            if conn.execute(sa.select(users.c.name).where(users.c.name == owner).with_for_update()).first() is None:
                raise ValueError(f"no user named {owner!r}")
            if max_active is not None:
                active = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(jobs)
                    .where(jobs.c.owner == owner, jobs.c.status.in_(("queued", "running")))
                ).scalar_one()
                if active >= max_active:
                    raise JobLimitError(owner, int(active), max_active)
            claim_uploads(conn, job_id, owner, upload_ids, now)
            conn.execute(
                sa.insert(jobs).values(
                    id=job_id,
                    owner=owner,
                    status="queued",
                    spec=spec_json,
                    metrics="{}",
                    attempts=0,
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                )
            )
        return Job(id=job_id, owner=owner, status="queued", spec=json.loads(spec_json), created_at=now, updated_at=now)

    def get_job(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or ``None`` if there is none -- or if ``owner`` is given and does not own it."""
        job_id = check_job_id(job_id)
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if owner is not None:
            query = query.where(jobs.c.owner == check_text(owner, "owner", max_len=64))
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else job_from_row(row)

    def list_jobs(
        self, owner: str | None = None, status: str | Iterable[str] | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first, optionally of one owner and with one status (or any of several)."""
        limit = check_int(limit, "limit", minimum=1, maximum=_MAX_LIST)
        query = sa.select(jobs)
        if owner is not None:
            query = query.where(jobs.c.owner == check_text(owner, "owner", max_len=64))
        if status is not None:
            wanted = [check_status(status)] if isinstance(status, str) else [check_status(s) for s in status]
            query = query.where(jobs.c.status.in_(wanted))
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [job_from_row(row) for row in conn.execute(query)]

    def _locked_job(self, conn: Connection, job_id: str) -> Any:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id).with_for_update()).first()
        if row is None:
            raise JobNotFoundError(job_id)
        return row

    def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        stage: str | None = None,
        progress: float | None = None,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
        eta_s: float | None = None,
    ) -> Job:
        """Change the given fields (``None``: leave as is); ``metrics`` are merged into the stored ones.

        A status change must be allowed (:mod:`storage.metadata`); ``running`` is reached only through
        :meth:`claim_job`. Going back to ``queued`` clears the worker and lease; a final status records
        ``finished_at`` and clears the lease and ETA. Returns the updated job.
        """
        job_id = check_job_id(job_id)
        if status is not None:
            check_status(status)
        values: dict[str, Any] = {}
        if stage is not None:
            values["stage"] = check_text(stage, "stage", max_len=200, allow_empty=True)
        if progress is not None:
            values["progress"] = check_number(progress, "progress", minimum=0.0, maximum=1.0)
        if error is not None:
            values["error"] = check_text(error, "error", max_len=100_000, allow_empty=True)
        if eta_s is not None:
            values["eta_s"] = check_number(eta_s, "eta_s", minimum=0.0)
        new_metrics = json.loads(dump_json(metrics, "metrics")) if metrics is not None else None
        with self._writer.begin() as conn:
            row = self._locked_job(conn, job_id)
            now = self._now()
            current = row._mapping["status"]
            if status is not None and status != current:
                if status == "running":
                    raise ValueError("a job becomes 'running' only through claim_job")
                if status not in _TRANSITIONS[current]:
                    raise ValueError(f"job {job_id} cannot go from {current!r} to {status!r}")
                values["status"] = status
                if status == "queued":
                    values.update(worker_id=None, lease_expires_at=None, eta_s=None)
                else:
                    values.update(lease_expires_at=None, eta_s=None, finished_at=now)
            if new_metrics:
                merged = json.loads(row._mapping["metrics"])
                merged.update(new_metrics)
                values["metrics"] = json.dumps(merged, separators=(",", ":"), allow_nan=False)
            values["updated_at"] = now
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))
            return job_from_row(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    def claim_job(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Atomically take a queued job, or a running one whose lease expired, for ``worker_id``.

        On success the job is ``running`` with ``worker_id``, a lease until now + ``lease_s`` and one
        more attempt; returns ``True``. Of concurrent claims exactly one succeeds. Returns ``False``
        when the job is not claimable (held, finished, deleted, missing). An expired job whose
        cancellation was requested is cancelled instead (and ``False`` returned).
        """
        job_id = check_job_id(job_id)
        worker_id = check_text(worker_id, "worker_id", max_len=255)
        lease_s = check_number(lease_s, "lease_s", minimum=0.0, strict=True)
        with self._writer.begin() as conn:
            now = self._now()
            claimable = sa.or_(
                jobs.c.status == "queued",
                sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at <= now),
            )
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.cancel_requested == sa.true(), claimable)
                .values(status="cancelled", lease_expires_at=None, eta_s=None, finished_at=now, updated_at=now)
            )
            result = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.cancel_requested == sa.false(), claimable)
                .values(
                    status="running",
                    worker_id=worker_id,
                    lease_expires_at=now + lease_s,
                    attempts=jobs.c.attempts + 1,
                    started_at=sa.func.coalesce(jobs.c.started_at, now),
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    def heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend the lease to now + ``lease_s``; ``False`` if ``worker_id`` no longer holds the job."""
        job_id = check_job_id(job_id)
        worker_id = check_text(worker_id, "worker_id", max_len=255)
        lease_s = check_number(lease_s, "lease_s", minimum=0.0, strict=True)
        with self._writer.begin() as conn:
            now = self._now()
            result = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.worker_id == worker_id)
                .values(lease_expires_at=now + lease_s, updated_at=now)
            )
            return result.rowcount == 1

    def expired_jobs(self, now: float | None = None) -> list[Job]:
        """Running jobs whose lease has expired at ``now`` (default: the clock), oldest lease first."""
        now = self._now() if now is None else check_number(now, "now", minimum=0.0)
        query = (
            sa.select(jobs)
            .where(jobs.c.status == "running", jobs.c.lease_expires_at <= now)
            .order_by(jobs.c.lease_expires_at, jobs.c.id)
        )
        with self._engine.connect() as conn:
            return [job_from_row(row) for row in conn.execute(query)]

    def request_cancel(self, job_id: str) -> Job:
        """Ask for the job to stop: a queued job is cancelled at once, a running one flagged
        (``cancel_requested``) for its worker; a finished job is left as it is. Returns the job."""
        job_id = check_job_id(job_id)
        with self._writer.begin() as conn:
            row = self._locked_job(conn, job_id)
            now = self._now()
            current = row._mapping["status"]
            if current == "queued":
                values = {"status": "cancelled", "cancel_requested": True, "finished_at": now, "eta_s": None}
            elif current == "running":
                values = {"cancel_requested": True}
            else:
                return job_from_row(row)
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(updated_at=now, **values))
            return job_from_row(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    def finish_job(self, job_id: str, worker_id: str, status: str, error: str | None = None) -> bool:
        """End a running job held by ``worker_id`` with a final ``status``; ``False`` if it does not hold it.

        ``error`` (the reason) is for ``failed`` and ``cancelled`` only. ``succeeded`` sets progress to 1.
        """
        job_id = check_job_id(job_id)
        worker_id = check_text(worker_id, "worker_id", max_len=255)
        if check_status(status) not in FINAL_STATUSES:
            raise ValueError(f"finish_job needs a final status ({', '.join(sorted(FINAL_STATUSES))}), got {status!r}")
        values: dict[str, Any] = {"status": status, "lease_expires_at": None, "eta_s": None}
        if error is not None:
            if status == "succeeded":
                raise ValueError("a succeeded job has no error; use status 'failed'")
            values["error"] = check_text(error, "error", max_len=100_000, allow_empty=True)
        if status == "succeeded":
            values["progress"] = 1.0
        with self._writer.begin() as conn:
            now = self._now()
            result = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.worker_id == worker_id)
                .values(finished_at=now, updated_at=now, **values)
            )
            return result.rowcount == 1

    def delete_job(self, job_id: str) -> bool:
        """Delete the job with its events and artifact records; ``False`` if there was none."""
        job_id = check_job_id(job_id)
        with self._writer.begin() as conn:
            conn.execute(sa.delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(sa.delete(artifacts).where(artifacts.c.job_id == job_id))
            conn.execute(sa.delete(upload_claims).where(upload_claims.c.job_id == job_id))
            return conn.execute(sa.delete(jobs).where(jobs.c.id == job_id)).rowcount == 1

    def count_running(self, owner: str) -> int:
        """How many of ``owner``'s jobs are running."""
        owner = check_text(owner, "owner", max_len=64)
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.owner == owner, jobs.c.status == "running")
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # events --------------------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, data: Mapping[str, Any]) -> int:
        """Record an event of the job (``kind`` such as ``progress``, ``log``, ``status``); return its id."""
        job_id = check_job_id(job_id)
        kind = check_text(kind, "event kind", max_len=64)
        data_json = dump_json(data, "event data")
        with self._writer.begin() as conn:
            self._locked_job(conn, job_id)  # serialises appends per job: ids commit in order
            result = conn.execute(
                sa.insert(job_events).values(job_id=job_id, kind=kind, data=data_json, created_at=self._now())
            )
            key = result.inserted_primary_key
            if key is None:
                raise RuntimeError(f"job {job_id}: the database returned no id for the new event")
            return int(key[0])

    def events_since(self, job_id: str, after_id: int = 0, limit: int = 1000) -> list[JobEvent]:
        """The job's events with an id above ``after_id``, oldest first, at most ``limit``."""
        job_id = check_job_id(job_id)
        after_id = check_int(after_id, "after_id", minimum=0)
        limit = check_int(limit, "limit", minimum=1, maximum=_MAX_LIST)
        query = (
            sa.select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.id > after_id)
            .order_by(job_events.c.id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [
                JobEvent(
                    id=int(row.id),
                    job_id=row.job_id,
                    kind=row.kind,
                    data=json.loads(row.data),
                    created_at=row.created_at,
                )
                for row in conn.execute(query)
            ]

    # artifacts -----------------------------------------------------------------------------------

    def add_artifact(self, job_id: str, name: str, blob_key: str, size: int, sha256: str) -> Artifact:
        """Record an output file of the job; an existing artifact of that name is replaced (a retried job)."""
        job_id = check_job_id(job_id)
        name = check_text(name, "artifact name", max_len=255)
        blob_key = check_text(blob_key, "blob_key", max_len=1024)
        size = check_int(size, "size", minimum=0)
        if not isinstance(sha256, str):
            raise TypeError(f"sha256 must be a str, got {type(sha256).__name__}")
        if not _SHA256_RE.match(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        artifact = Artifact(job_id, name, blob_key, size, sha256, self._now())
        with self._writer.begin() as conn:
            self._locked_job(conn, job_id)
            conn.execute(sa.delete(artifacts).where(artifacts.c.job_id == job_id, artifacts.c.name == name))
            conn.execute(
                sa.insert(artifacts).values(
                    job_id=job_id,
                    name=name,
                    blob_key=blob_key,
                    size=size,
                    sha256=sha256,
                    created_at=artifact.created_at,
                )
            )
        return artifact

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        """The job's artifacts, by name."""
        job_id = check_job_id(job_id)
        query = sa.select(artifacts).where(artifacts.c.job_id == job_id).order_by(artifacts.c.name)
        with self._engine.connect() as conn:
            return [
                Artifact(row.job_id, row.name, row.blob_key, int(row.size), row.sha256, row.created_at)
                for row in conn.execute(query)
            ]
