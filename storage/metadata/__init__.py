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

API tokens (only their SHA-256 is stored): :mod:`storage.metadata.accounts`.
"""

from storage.metadata.engines import open_metadata_store
from storage.metadata.records import (
    FINAL_STATUSES,
    JOB_STATUSES,
    ROLES,
    TOKEN_PREFIX,
    ApiToken,
    Artifact,
    Job,
    JobEvent,
    JobNotFoundError,
    MetadataSchemaError,
    User,
    hash_token,
)
from storage.metadata.schema import SCHEMA_VERSION
from storage.metadata.store import MetadataStore

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
