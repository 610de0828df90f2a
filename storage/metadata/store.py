"""The metadata store: one SQL database of users, tokens, jobs, events and artefacts (see :mod:`storage.metadata`).

:class:`MetadataStore` joins its parts -- :class:`~storage.metadata.accounts.AccountStore` (users, tokens) and
:class:`~storage.metadata.job_records.JobRecordStore` (jobs, events, artefacts) -- over one engine and clock, and
creates or migrates the tables when it is opened.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from storage.access import SessionStore
from storage.metadata.accounts import AccountStore
from storage.metadata.job_records import JobRecordStore
from storage.metadata.schema import init_schema, stored_schema_version

__all__ = ["MetadataStore"]


class MetadataStore(AccountStore, JobRecordStore):
    """Users, tokens, jobs, events and artifacts in one SQL database. Thread-safe; see :mod:`storage.metadata`.

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

    def _init_schema(self) -> None:
        with self._writer.begin() as conn:
            init_schema(conn, postgres=self._is_postgres)

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._engine.connect() as conn:
            return stored_schema_version(conn)
