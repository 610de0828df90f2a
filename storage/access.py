"""Web sign-in sessions and upload claims: the records behind server-side sessions and one-job-per-upload.

Both live in the metadata database, next to the tables of :mod:`storage.metadata`, which creates them (through
:data:`access_meta`) and calls :func:`claim_uploads` inside the transaction that creates a job.

- ``web_sessions``: a signed-in browser. The cookie carries a random session id (``cds_`` + 256 random bits); only
  its SHA-256 is stored, with the user, an absolute expiry and, once signed out, ``ended_at``. Signing out ends the
  row, so the old cookie stops working even if a copy of it is replayed.
- ``upload_claims``: which job took an upload. The upload id is the primary key, so of any number of jobs created
  at once with the same upload exactly one inserts its row; the others fail with :class:`UploadClaimedError`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

__all__ = [
    "SESSION_PREFIX",
    "JobLimitError",
    "SessionStore",
    "UploadClaimedError",
    "WebSession",
    "access_meta",
    "claim_uploads",
]

SESSION_PREFIX = "cds_"

access_meta = sa.MetaData()
web_sessions = sa.Table(
    "web_sessions",
    access_meta,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double, nullable=True),
    sa.Column("token_hash", sa.String(64), nullable=True),
)
upload_claims = sa.Table(
    "upload_claims",
    access_meta,
    sa.Column("upload_id", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)


class UploadClaimedError(ValueError):
    """An upload already belongs to a job (each upload is used by one job)."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"upload {upload_id} already belongs to another job")
        self.upload_id = upload_id


class JobLimitError(ValueError):
    """The user already has as many queued or running jobs as allowed."""

    def __init__(self, owner: str, active: int, limit: int) -> None:
        super().__init__(f"{owner} has {active} job(s) queued or running, the most allowed ({limit})")
        self.owner, self.active, self.limit = owner, active, limit


def claim_uploads(conn: Connection, job_id: str, owner: str, upload_ids: Iterable[str], now: float) -> None:
    """Record that ``job_id`` takes ``upload_ids``, in the caller's transaction; :class:`UploadClaimedError` if
    another job has one."""
    for upload_id in upload_ids:
        taken = conn.execute(sa.select(upload_claims.c.job_id).where(upload_claims.c.upload_id == upload_id)).first()
        if taken is not None:
            raise UploadClaimedError(upload_id)
        try:
            conn.execute(
                sa.insert(upload_claims).values(upload_id=upload_id, job_id=job_id, owner=owner, created_at=now)
            )
        except IntegrityError:  # PostgreSQL: a concurrent claim committed first
            raise UploadClaimedError(upload_id) from None


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser's session record (no secret)."""

    user_name: str
    created_at: float
    expires_at: float
    token_hash: str | None = None
    """The SHA-256 of the API token the browser signed in with: revoking that token ends the session too."""


class SessionStore:
    """Server-side web sessions in the metadata database (see the module docstring)."""

    def __init__(self, engine: Engine, writer: Engine, clock: Callable[[], float]) -> None:
        self._engine, self._writer, self._clock = engine, writer, clock

    def create(self, user_name: str, ttl_s: float, *, token_hash: str | None = None) -> str:
        """A new session of ``user_name`` valid ``ttl_s`` seconds; returns its id (shown once, for the cookie)."""
        if not isinstance(ttl_s, int | float) or not 0 < ttl_s <= 10 * 365 * 86400:
            raise ValueError(f"a session lifetime must be in (0, 10 years] seconds, got {ttl_s!r}")
        session_id = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = float(self._clock())
        with self._writer.begin() as conn:
            conn.execute(
                sa.insert(web_sessions).values(
                    id_hash=_hash(session_id),
                    user_name=user_name,
                    created_at=now,
                    expires_at=now + float(ttl_s),
                    token_hash=token_hash,
                )
            )
        return session_id

    def lookup(self, session_id: str) -> WebSession | None:
        """The live (not ended, not expired) session with this id, or None."""
        if not isinstance(session_id, str) or not session_id.startswith(SESSION_PREFIX) or len(session_id) > 200:
            return None
        query = sa.select(web_sessions).where(
            web_sessions.c.id_hash == _hash(session_id),
            web_sessions.c.ended_at.is_(None),
            web_sessions.c.expires_at > float(self._clock()),
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return WebSession(row.user_name, row.created_at, row.expires_at, row.token_hash)

    def end(self, session_id: str) -> bool:
        """End the session (sign-out); whether a live one was ended."""
        if not isinstance(session_id, str):
            return False
        with self._writer.begin() as conn:
            result = conn.execute(
                sa.update(web_sessions)
                .where(web_sessions.c.id_hash == _hash(session_id), web_sessions.c.ended_at.is_(None))
                .values(ended_at=float(self._clock()))
            )
        return result.rowcount == 1

    def end_all(self, user_name: str) -> int:
        """End every live session of ``user_name``; how many."""
        with self._writer.begin() as conn:
            result = conn.execute(
                sa.update(web_sessions)
                .where(web_sessions.c.user_name == user_name, web_sessions.c.ended_at.is_(None))
                .values(ended_at=float(self._clock()))
            )
        return int(result.rowcount)

    def purge(self, older_than_s: float = 86400.0) -> int:
        """Delete sessions that ended or expired over ``older_than_s`` seconds ago; how many."""
        cutoff = float(self._clock()) - older_than_s
        with self._writer.begin() as conn:
            result = conn.execute(
                sa.delete(web_sessions).where(
                    sa.or_(web_sessions.c.expires_at < cutoff, web_sessions.c.ended_at < cutoff)
                )
            )
        return int(result.rowcount)
