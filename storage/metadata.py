"""Job metadata: users, API tokens, jobs with leases, job events and artifacts, in SQLite or PostgreSQL.

One code path (SQLAlchemy Core 2.x) for both databases; :func:`open_metadata_store` picks the engine
from a URL:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` -- the embedded default. The file
  (and its folder) is created. Connections use WAL journalling (readers never block the writer), a
  30 s busy timeout and foreign keys. Every writing transaction starts with ``BEGIN IMMEDIATE``, so
  read-modify-write operations (merging metrics, claiming a job) are serialised between processes
  instead of failing on a lock upgrade. In-memory databases (``sqlite://``) are refused: every
  pooled connection would see a different, empty database.
- ``postgresql://user:password@host:port/db`` (also ``postgres://`` and ``postgresql+psycopg://``) --
  for several web and worker machines, through the psycopg 3 driver. Query parameters are passed to
  psycopg (e.g. ``?sslmode=require`` or ``?options=-csearch_path%3Dcondense`` for another schema).

Tables are created when a store is opened (idempotent, safe for several processes opening at once:
PostgreSQL takes an advisory lock for it). The ``schema_info`` table holds a ``schema_version`` row;
a database written by a newer schema is refused with :class:`MetadataSchemaError`.

Conventions. Times are seconds since the Unix epoch (UTC) as ``float``, stored as double-precision
columns and taken from the store's clock (``time.time`` unless a ``clock`` is given -- tests pass a
fake one; machines that share a database should keep their clocks in sync with NTP, leases depend on
it). JSON values (job specs, metrics, event data) are stored as JSON text, which both databases
handle alike; they must be JSON-serialisable without NaN or infinity (:class:`ValueError` otherwise --
browsers cannot parse those). Operations return frozen dataclasses, never rows. Bad arguments raise
:class:`ValueError` / :class:`TypeError`; operating on a job that does not exist raises
:class:`JobNotFoundError` (a :class:`KeyError`), except for the lookups and worker calls documented
to return ``None`` / ``False``.

Jobs. Status is one of :data:`JOB_STATUSES`. A job is created ``queued``; a worker takes it with
:meth:`MetadataStore.claim_job` (atomic: of any number of concurrent claims exactly one wins), which
makes it ``running`` with a lease; the worker renews the lease with :meth:`MetadataStore.heartbeat`
and ends the job with :meth:`MetadataStore.finish_job`. A running job whose lease has expired may be
claimed by another worker (its ``attempts`` counts the claims); until someone does, the old worker
still holds it -- holding means "``running`` with my ``worker_id``", so a heartbeat or finish from a
worker that lost the job returns ``False`` and the worker should stop. :meth:`MetadataStore.request_cancel`
cancels a queued job at once and flags a running one (``cancel_requested``) for its worker to notice;
an expired, cancel-flagged job is cancelled instead of being claimed again. Allowed status changes::

    queued  -> running (claim_job) | cancelled | failed
    running -> succeeded | failed | cancelled | queued (put back, worker and lease cleared)

Anything else, such as leaving a final status (succeeded, failed, cancelled), raises :class:`ValueError`.

Events. :meth:`MetadataStore.append_event` returns an id that increases across the whole store; the
events of one job are committed in id order (appends to one job are serialised by locking the job's
row), so a reader that asks :meth:`MetadataStore.events_since` with the last id it saw misses nothing.
Deleting a job deletes its events and artifact records (not the blobs: delete those from the blob
store).

API tokens are ``cdn_`` followed by 43 URL-safe characters (256 random bits). Only their SHA-256 is
stored; :meth:`MetadataStore.authenticate` hashes the presented token and looks the hash up, so no
comparison against a secret happens in Python and the plaintext cannot be recovered from the database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from storage.access import JobLimitError, SessionStore, access_meta, claim_uploads, upload_claims

__all__ = [
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "ROLES",
    "SCHEMA_VERSION",
    "TOKEN_PREFIX",
    "ApiToken",
    "Artifact",
    "Job",
    "JobEvent",
    "JobNotFoundError",
    "MetadataSchemaError",
    "MetadataStore",
    "User",
    "hash_token",
    "open_metadata_store",
]

SCHEMA_VERSION = 2
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ROLES: tuple[str, ...] = ("user", "admin")
TOKEN_PREFIX = "cdn_"

# Status changes update_job accepts (claim_job is the only way into "running").
_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"cancelled", "failed"}),
    "running": frozenset({"queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
_USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PG_INIT_LOCK = 0x436F6E64656E7365  # "Condense": serialises table creation between processes
_MAX_LIST = 10_000

# --------------------------------------------------------------------------------------------------
# schema

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


# --------------------------------------------------------------------------------------------------
# errors and records


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


# --------------------------------------------------------------------------------------------------
# validation helpers


def hash_token(token: str) -> str:
    """The stored form of an API token: the SHA-256 of its UTF-8 bytes, as 64 hex digits."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _text(value: object, what: str, *, max_len: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    return value


def _user_name(value: object, what: str = "user name") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not _USER_NAME_RE.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: 1-64 characters, letters, digits and '_.@-', starting with a letter or digit"
        )
    return value


def _int(value: object, what: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


def _number(value: object, what: str, *, minimum: float, maximum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value}")
    if number < minimum or (strict and number == minimum) or (maximum is not None and number > maximum):
        low = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(
            f"{what} must be {low}" + (f" and <= {maximum:g}" if maximum is not None else "") + f", got {value}"
        )
    return number


def _status(value: object, what: str = "status") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value not in JOB_STATUSES:
        raise ValueError(f"unknown {what} {value!r}; one of {', '.join(JOB_STATUSES)}")
    return value


def _dump_json(value: object, what: str) -> str:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from None
    except ValueError as exc:  # NaN / infinity, circular references
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def _job_id(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"job_id must be a str, got {type(value).__name__}")
    return value


def _job(row: Any) -> Job:
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


def _user(row: Any) -> User:
    m = row._mapping
    return User(name=m["name"], role=m["role"], max_running_jobs=int(m["max_running_jobs"]), created_at=m["created_at"])


def _token(row: Any) -> ApiToken:
    m = row._mapping
    return ApiToken(
        id=int(m["id"]),
        user_name=m["user_name"],
        label=m["label"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        expires_at=m["expires_at"],
    )


# --------------------------------------------------------------------------------------------------
# the store


class MetadataStore:
    """Users, tokens, jobs, events and artifacts in one SQL database. Thread-safe; see the module docstring.

    Build one with :func:`open_metadata_store`; the constructor takes a ready SQLAlchemy engine (as
    :func:`open_metadata_store` configures it) and creates the tables.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] | None = None) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a sqlalchemy Engine, got {type(engine).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds since the epoch")
        self._engine = engine
        # Writing transactions: on SQLite this option makes the 'begin' hook emit BEGIN IMMEDIATE.
        self._writer = engine.execution_options(condense_write=True)
        self._clock = clock or time.time
        self._is_postgres = engine.dialect.name == "postgresql"
        self._init_schema()
        self.sessions = SessionStore(engine, self._writer, self._now)
        """Server-side web sessions (:class:`storage.access.SessionStore`)."""

    # housekeeping --------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for administration and tests)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"MetadataStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _now(self) -> float:
        return float(self._clock())

    def _init_schema(self) -> None:
        with self._writer.begin() as conn:
            if self._is_postgres:
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
                    sa.update(schema_info)
                    .where(schema_info.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )
            elif not stored.isdigit() or int(stored) != SCHEMA_VERSION:
                raise MetadataSchemaError(
                    f"the database has schema version {stored!r}; this code uses version {SCHEMA_VERSION} "
                    "and has no migration for it"
                )

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._engine.connect() as conn:
            return int(
                conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "schema_version")).scalar_one()
            )

    # users ---------------------------------------------------------------------------------------

    def create_user(self, name: str, role: str = "user", max_running_jobs: int = 2) -> User:
        """Create a user; a name already taken raises :class:`ValueError`."""
        name = _user_name(name)
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        max_running_jobs = _int(max_running_jobs, "max_running_jobs", minimum=0, maximum=1000)
        user = User(name=name, role=role, max_running_jobs=max_running_jobs, created_at=self._now())
        try:
            with self._writer.begin() as conn:
                if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None:
                    raise ValueError(f"a user named {name!r} already exists")
                conn.execute(
                    sa.insert(users).values(
                        name=name, role=role, max_running_jobs=max_running_jobs, created_at=user.created_at
                    )
                )
        except IntegrityError:
            raise ValueError(f"a user named {name!r} already exists") from None
        return user

    def get_user(self, name: str) -> User | None:
        if not isinstance(name, str):
            raise TypeError(f"user name must be a str, got {type(name).__name__}")
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        with self._engine.connect() as conn:
            return [_user(row) for row in conn.execute(sa.select(users).order_by(users.c.name))]

    def _require_user(self, conn: Connection, name: str) -> None:
        if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is None:
            raise ValueError(f"no user named {name!r}")

    # API tokens ----------------------------------------------------------------------------------

    def create_token(self, user_name: str, label: str = "", *, expires_in_s: float | None = None) -> str:
        """Create an API token for ``user_name`` and return it; this is the only time it is visible.

        With ``expires_in_s`` the token stops working that many seconds from now; without, it lasts until revoked.
        """
        user_name = _user_name(user_name)
        label = _text(label, "token label", max_len=200, allow_empty=True)
        now = self._now()
        expires_at = None
        if expires_in_s is not None:
            expires_at = now + _number(expires_in_s, "expires_in_s", minimum=1.0, maximum=100 * 365 * 86400.0)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._writer.begin() as conn:
            self._require_user(conn, user_name)
            conn.execute(
                sa.insert(api_tokens).values(
                    user_name=user_name,
                    token_hash=hash_token(token),
                    label=label,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return token

    def authenticate(self, token: str) -> User | None:
        """The user owning the (unrevoked) token, or ``None``."""
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        query = (
            sa.select(users)
            .join(api_tokens, api_tokens.c.user_name == users.c.name)
            .where(
                api_tokens.c.token_hash == hash_token(token),
                api_tokens.c.revoked_at.is_(None),
                sa.or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > self._now()),
            )
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _user(row)

    def session_user(self, session_id: str) -> User | None:
        """The user of a live web session (:attr:`sessions`) whose sign-in token is still valid, or ``None``."""
        record = self.sessions.lookup(session_id)
        if record is None:
            return None
        if record.token_hash is None:
            return self.get_user(record.user_name)
        query = (
            sa.select(users)
            .join(api_tokens, api_tokens.c.user_name == users.c.name)
            .where(
                api_tokens.c.token_hash == record.token_hash,
                users.c.name == record.user_name,
                api_tokens.c.revoked_at.is_(None),
                sa.or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > self._now()),
            )
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _user(row)

    def revoke_token(self, token: int | str, *, user_name: str | None = None) -> bool:
        """Revoke a token given by its id (from :meth:`list_tokens`) or its secret text.

        With ``user_name``, only that user's token is revoked (so a user cannot revoke others' tokens).
        Returns whether an active token was revoked.
        """
        if isinstance(token, bool) or not isinstance(token, int | str):
            raise TypeError(f"token must be a token id (int) or the token (str), got {type(token).__name__}")
        where: list[sa.ColumnElement[bool]] = [api_tokens.c.revoked_at.is_(None)]
        where.append(
            api_tokens.c.id == token if isinstance(token, int) else api_tokens.c.token_hash == hash_token(token)
        )
        if user_name is not None:
            where.append(api_tokens.c.user_name == _user_name(user_name))
        with self._writer.begin() as conn:
            result = conn.execute(sa.update(api_tokens).where(*where).values(revoked_at=self._now()))
        return result.rowcount == 1

    def list_tokens(self, user_name: str) -> list[ApiToken]:
        """The user's tokens (revoked ones included, marked), oldest first; no secrets."""
        user_name = _user_name(user_name)
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(api_tokens).where(api_tokens.c.user_name == user_name).order_by(api_tokens.c.id)
            )
            return [_token(row) for row in rows]

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
        owner = _user_name(owner, "owner")
        spec_json = _dump_json(spec, "spec")
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
        job_id = _job_id(job_id)
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if owner is not None:
            query = query.where(jobs.c.owner == _text(owner, "owner", max_len=64))
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _job(row)

    def list_jobs(
        self, owner: str | None = None, status: str | Iterable[str] | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first, optionally of one owner and with one status (or any of several)."""
        limit = _int(limit, "limit", minimum=1, maximum=_MAX_LIST)
        query = sa.select(jobs)
        if owner is not None:
            query = query.where(jobs.c.owner == _text(owner, "owner", max_len=64))
        if status is not None:
            wanted = [_status(status)] if isinstance(status, str) else [_status(s) for s in status]
            query = query.where(jobs.c.status.in_(wanted))
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [_job(row) for row in conn.execute(query)]

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

        A status change must be allowed (module docstring); ``running`` is reached only through
        :meth:`claim_job`. Going back to ``queued`` clears the worker and lease; a final status records
        ``finished_at`` and clears the lease and ETA. Returns the updated job.
        """
        job_id = _job_id(job_id)
        if status is not None:
            _status(status)
        values: dict[str, Any] = {}
        if stage is not None:
            values["stage"] = _text(stage, "stage", max_len=200, allow_empty=True)
        if progress is not None:
            values["progress"] = _number(progress, "progress", minimum=0.0, maximum=1.0)
        if error is not None:
            values["error"] = _text(error, "error", max_len=100_000, allow_empty=True)
        if eta_s is not None:
            values["eta_s"] = _number(eta_s, "eta_s", minimum=0.0)
        new_metrics = json.loads(_dump_json(metrics, "metrics")) if metrics is not None else None
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
            return _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    def claim_job(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Atomically take a queued job, or a running one whose lease expired, for ``worker_id``.

        On success the job is ``running`` with ``worker_id``, a lease until now + ``lease_s`` and one
        more attempt; returns ``True``. Of concurrent claims exactly one succeeds. Returns ``False``
        when the job is not claimable (held, finished, deleted, missing). An expired job whose
        cancellation was requested is cancelled instead (and ``False`` returned).
        """
        job_id = _job_id(job_id)
        worker_id = _text(worker_id, "worker_id", max_len=255)
        lease_s = _number(lease_s, "lease_s", minimum=0.0, strict=True)
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
        job_id = _job_id(job_id)
        worker_id = _text(worker_id, "worker_id", max_len=255)
        lease_s = _number(lease_s, "lease_s", minimum=0.0, strict=True)
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
        now = self._now() if now is None else _number(now, "now", minimum=0.0)
        query = (
            sa.select(jobs)
            .where(jobs.c.status == "running", jobs.c.lease_expires_at <= now)
            .order_by(jobs.c.lease_expires_at, jobs.c.id)
        )
        with self._engine.connect() as conn:
            return [_job(row) for row in conn.execute(query)]

    def request_cancel(self, job_id: str) -> Job:
        """Ask for the job to stop: a queued job is cancelled at once, a running one flagged
        (``cancel_requested``) for its worker; a finished job is left as it is. Returns the job."""
        job_id = _job_id(job_id)
        with self._writer.begin() as conn:
            row = self._locked_job(conn, job_id)
            now = self._now()
            current = row._mapping["status"]
            if current == "queued":
                values = {"status": "cancelled", "cancel_requested": True, "finished_at": now, "eta_s": None}
            elif current == "running":
                values = {"cancel_requested": True}
            else:
                return _job(row)
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(updated_at=now, **values))
            return _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    def finish_job(self, job_id: str, worker_id: str, status: str, error: str | None = None) -> bool:
        """End a running job held by ``worker_id`` with a final ``status``; ``False`` if it does not hold it.

        ``error`` (the reason) is for ``failed`` and ``cancelled`` only. ``succeeded`` sets progress to 1.
        """
        job_id = _job_id(job_id)
        worker_id = _text(worker_id, "worker_id", max_len=255)
        if _status(status) not in FINAL_STATUSES:
            raise ValueError(f"finish_job needs a final status ({', '.join(sorted(FINAL_STATUSES))}), got {status!r}")
        values: dict[str, Any] = {"status": status, "lease_expires_at": None, "eta_s": None}
        if error is not None:
            if status == "succeeded":
                raise ValueError("a succeeded job has no error; use status 'failed'")
            values["error"] = _text(error, "error", max_len=100_000, allow_empty=True)
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
        job_id = _job_id(job_id)
        with self._writer.begin() as conn:
            conn.execute(sa.delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(sa.delete(artifacts).where(artifacts.c.job_id == job_id))
            conn.execute(sa.delete(upload_claims).where(upload_claims.c.job_id == job_id))
            return conn.execute(sa.delete(jobs).where(jobs.c.id == job_id)).rowcount == 1

    def count_running(self, owner: str) -> int:
        """How many of ``owner``'s jobs are running."""
        owner = _text(owner, "owner", max_len=64)
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.owner == owner, jobs.c.status == "running")
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # events --------------------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, data: Mapping[str, Any]) -> int:
        """Record an event of the job (``kind`` such as ``progress``, ``log``, ``status``); return its id."""
        job_id = _job_id(job_id)
        kind = _text(kind, "event kind", max_len=64)
        data_json = _dump_json(data, "event data")
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
        job_id = _job_id(job_id)
        after_id = _int(after_id, "after_id", minimum=0)
        limit = _int(limit, "limit", minimum=1, maximum=_MAX_LIST)
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
        job_id = _job_id(job_id)
        name = _text(name, "artifact name", max_len=255)
        blob_key = _text(blob_key, "blob_key", max_len=1024)
        size = _int(size, "size", minimum=0)
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
        job_id = _job_id(job_id)
        query = sa.select(artifacts).where(artifacts.c.job_id == job_id).order_by(artifacts.c.name)
        with self._engine.connect() as conn:
            return [
                Artifact(row.job_id, row.name, row.blob_key, int(row.size), row.sha256, row.created_at)
                for row in conn.execute(query)
            ]


# --------------------------------------------------------------------------------------------------
# URLs


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise ValueError(
            "in-memory SQLite databases are not supported (each connection would see its own); "
            "use a file: sqlite:///path/to/condense.db"
        )
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30.0})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN; the hook below does
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("condense_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_metadata_store(url: str, *, clock: Callable[[], float] | None = None, echo: bool = False) -> MetadataStore:
    """Open (creating the tables if needed) the metadata database at ``url``; see the module docstring.

    ``clock`` replaces ``time.time`` (tests); ``echo`` logs the SQL.
    """
    if not isinstance(url, str):
        raise TypeError(f"a metadata URL must be a str, got {type(url).__name__}")
    if not url.strip():
        raise ValueError("a metadata URL must not be empty")
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r} ({exc})") from None
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        engine = _sqlite_engine(parsed)
    elif driver in ("postgresql", "postgres", "postgresql+psycopg"):
        if not parsed.database:
            raise ValueError(f"PostgreSQL URL {parsed.render_as_string()!r} names no database")
        engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    else:
        raise ValueError(
            f"unsupported metadata URL scheme {driver!r}: use sqlite:///path.db or postgresql://user@host:port/db"
        )
    if echo:
        engine.echo = True
    try:
        return MetadataStore(engine, clock=clock)
    except BaseException:
        engine.dispose()
        raise
