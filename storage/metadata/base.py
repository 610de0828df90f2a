"""What the parts of :class:`~storage.metadata.store.MetadataStore` share: the engine, the engine for writing
transactions and the clock."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from storage.access import SessionStore

__all__ = ["StoreBase"]


class StoreBase:
    """The engine (reads), the writing engine (on SQLite its transactions start with ``BEGIN IMMEDIATE``), the
    clock and the web sessions, set up by :class:`~storage.metadata.store.MetadataStore`."""

    _engine: Engine
    _writer: Engine
    _clock: Callable[[], float]
    sessions: SessionStore

    def _now(self) -> float:
        return float(self._clock())
