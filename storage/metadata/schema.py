"""The tables of the metadata store, their creation and migration, and rows read back into records.

One SQLAlchemy Core description serves SQLite and PostgreSQL alike. :func:`init_schema` creates the tables
(idempotently; on PostgreSQL under an advisory lock, so several processes may open a new database at once) and
migrates older schema versions; a database written by a newer schema raises :class:`MetadataSchemaError`.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage.access import access_meta
from storage.metadata.records import ApiToken, Job, MetadataSchemaError, User

__all__ = [
    "SCHEMA_VERSION",
    "api_tokens",
    "artifacts",
    "init_schema",
    "job_events",
    "job_from_row",
    "jobs",
    "schema_info",
    "stored_schema_version",
    "token_from_row",
    "user_from_row",
    "users",
]

SCHEMA_VERSION = 2
_PG_INIT_LOCK = 0x436F6E64656E7365  # "Condense": serialises table creation between processes

_meta = sa.MetaData()

schema_info = sa.Table(
    "schema_info",
    _meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
users = sa.Table(
    "users",
    _meta,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("max_running_jobs", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)
api_tokens = sa.Table(
    "api_tokens",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_name", sa.String(64), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Column("expires_at", sa.Double, nullable=True),
    sqlite_autoincrement=True,
)
jobs = sa.Table(
    "jobs",
    _meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(64), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("stage", sa.String(200), nullable=True),
    sa.Column("progress", sa.Double, nullable=True),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("eta_s", sa.Double, nullable=True),
    sa.Column("worker_id", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", sa.Double, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("finished_at", sa.Double, nullable=True),
    sa.Index("ix_jobs_owner_created", "owner", "created_at"),
    sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
)
job_events = sa.Table(
    "job_events",
    _meta,
    # INTEGER PRIMARY KEY AUTOINCREMENT in SQLite (ids never reused), BIGSERIAL-like in PostgreSQL
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_job_events_job_id", "job_id", "id"),
    sqlite_autoincrement=True,
)
artifacts = sa.Table(
    "artifacts",
    _meta,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("blob_key", sa.String(1024), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)


def init_schema(conn: Connection, *, postgres: bool) -> None:
    """Create the missing tables and migrate an older schema, inside the caller's writing transaction."""
    if postgres:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_INIT_LOCK)))
    _meta.create_all(conn)
    access_meta.create_all(conn)
    stored = conn.execute(
        sa.select(schema_info.c.value).where(schema_info.c.key == "schema_version")
    ).scalar_one_or_none()
    if stored is None:
        conn.execute(sa.insert(schema_info).values(key="schema_version", value=str(SCHEMA_VERSION)))
    elif stored == "1":  # version 2 added token expiry (and the tables of storage.access, created above)
        conn.execute(sa.text("ALTER TABLE api_tokens ADD COLUMN expires_at DOUBLE PRECISION"))
        conn.execute(
            sa.update(schema_info).where(schema_info.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
        )
    elif not stored.isdigit() or int(stored) != SCHEMA_VERSION:
        raise MetadataSchemaError(
            f"the database has schema version {stored!r}; this code uses version {SCHEMA_VERSION} "
            "and has no migration for it"
        )


def stored_schema_version(conn: Connection) -> int:
    """The schema version recorded in the database."""
    return int(conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "schema_version")).scalar_one())


def job_from_row(row: Any) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        owner=m["owner"],
        status=m["status"],
        spec=json.loads(m["spec"]),
        stage=m["stage"],
        progress=m["progress"],
        metrics=json.loads(m["metrics"]),
        error=m["error"],
        eta_s=m["eta_s"],
        worker_id=m["worker_id"],
        lease_expires_at=m["lease_expires_at"],
        attempts=int(m["attempts"]),
        cancel_requested=bool(m["cancel_requested"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
    )


def user_from_row(row: Any) -> User:
    m = row._mapping
    return User(name=m["name"], role=m["role"], max_running_jobs=int(m["max_running_jobs"]), created_at=m["created_at"])


def token_from_row(row: Any) -> ApiToken:
    m = row._mapping
    return ApiToken(
        id=int(m["id"]),
        user_name=m["user_name"],
        label=m["label"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        expires_at=m["expires_at"],
    )
