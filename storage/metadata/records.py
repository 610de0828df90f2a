"""The records of the metadata store: job statuses and roles, errors, and the frozen dataclasses operations return.

Rows never leave the store; :mod:`storage.metadata` hands out these dataclasses instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "ROLES",
    "TOKEN_PREFIX",
    "ApiToken",
    "Artifact",
    "Job",
    "JobEvent",
    "JobNotFoundError",
    "MetadataSchemaError",
    "User",
    "hash_token",
]

JOB_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ROLES: tuple[str, ...] = ("user", "admin")
TOKEN_PREFIX = "cdn_"


class JobNotFoundError(KeyError):
    """No job with this id exists."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MetadataSchemaError(RuntimeError):
    """The database holds a schema this code cannot use (written by a newer version)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str  # "user" or "admin"
    max_running_jobs: int
    created_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class ApiToken:
    """An API token's record; the secret itself is never stored."""

    id: int
    user_name: str
    label: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Job:
    """A job row. ``spec`` and ``metrics`` are fresh dicts (changing them changes nothing stored)."""

    id: str
    owner: str
    status: str
    spec: dict[str, Any]
    created_at: float
    updated_at: float
    stage: str | None = None
    progress: float | None = None  # 0..1
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    eta_s: float | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "status": self.status,
            "spec": json.loads(json.dumps(self.spec)),
            "stage": self.stage,
            "progress": self.progress,
            "metrics": json.loads(json.dumps(self.metrics)),
            "error": self.error,
            "eta_s": self.eta_s,
            "worker_id": self.worker_id,
            "lease_expires_at": self.lease_expires_at,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class JobEvent:
    id: int
    job_id: str
    kind: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class Artifact:
    job_id: str
    name: str
    blob_key: str
    size: int
    sha256: str
    created_at: float


def hash_token(token: str) -> str:
    """The stored form of an API token: the SHA-256 of its UTF-8 bytes, as 64 hex digits."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
