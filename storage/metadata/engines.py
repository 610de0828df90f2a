"""The two databases of the metadata store and the URL that picks one.

- SQLite (:func:`sqlite_engine`): a file, WAL journalling, a 30 s busy timeout, foreign keys; every writing
  transaction starts with ``BEGIN IMMEDIATE``. In-memory databases are refused.
- PostgreSQL (:func:`postgresql_engine`): through the psycopg 3 driver, connections checked before use.

:func:`open_metadata_store` reads the URL, builds the engine and opens a
:class:`~storage.metadata.store.MetadataStore` on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from storage.metadata.store import MetadataStore

__all__ = ["open_metadata_store", "postgresql_engine", "sqlite_engine"]


def sqlite_engine(url: URL) -> Engine:
    """The embedded default: a SQLite file in WAL mode, writers serialised by ``BEGIN IMMEDIATE``."""
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


def postgresql_engine(url: URL) -> Engine:
    """For several web and worker machines: PostgreSQL through psycopg 3 (``postgres://`` and
    ``postgresql+psycopg://`` are the same), connections checked before use."""
    if not url.database:
        raise ValueError(f"PostgreSQL URL {url.render_as_string()!r} names no database")
    return sa.create_engine(url.set(drivername="postgresql+psycopg"), pool_pre_ping=True)


def open_metadata_store(url: str, *, clock: Callable[[], float] | None = None, echo: bool = False) -> MetadataStore:
    """Open (creating the tables if needed) the metadata database at ``url``; see :mod:`storage.metadata`.

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
        engine = sqlite_engine(parsed)
    elif driver in ("postgresql", "postgres", "postgresql+psycopg"):
        engine = postgresql_engine(parsed)
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
