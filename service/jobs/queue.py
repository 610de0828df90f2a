"""The job queue: Huey, in SQLite on one machine and on Redis for several, carrying job ids only.

Why Huey (https://huey.readthedocs.io) and not Celery. The service needs one task ("run job X") with no results,
no chains and no schedule, and two deployments of the same code: one machine with nothing to install, and many
machines around a broker. Huey has a first-class, documented SQLite storage (``SqliteHuey``: a queue table in a
local file, safe across processes through SQLite's locking) and a Redis storage (``RedisHuey``), both behind one
API, and is a few thousand lines with one optional dependency (``redis``). Celery needs a broker server for
anything durable: its broker-less options for one machine are the filesystem and SQLAlchemy transports of kombu,
documented as experimental, without the guarantees of its RabbitMQ / Redis transports. RQ and Dramatiq have no
server-less mode at all.

What the queue is trusted with, and what not:

- A message carries only a job id (32 hex digits). Everything else -- the job's spec, status, lease, attempts,
  progress -- lives in the metadata store (:mod:`storage.metadata`), which is the source of truth. The queue only
  wakes a worker; a message for a job that is gone, finished or held by another worker is dropped by the worker
  (:meth:`storage.MetadataStore.claim_job` is atomic), so duplicate messages are harmless and the reaper
  (:mod:`service.jobs.worker`) may re-send freely.
- Messages are JSON, not pickles (:class:`JsonSerializer` replaces Huey's default pickle serializer): whoever can
  write to the broker (a shared Redis) cannot make a worker run code, only name a job id, which is checked.
- Huey stores no task results (``results=False``) and retries nothing itself (a lost job is re-sent by the reaper).

Broker URLs (``CONDENSE_BROKER_URL``): ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
(SQLAlchemy's convention, as for the metadata store), ``redis://[:password@]host:6379/0`` or ``rediss://`` (TLS).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from huey.registry import Message
from huey.serializer import Serializer

__all__ = ["QUEUE_NAME", "TASK_NAME", "JobQueue", "JsonSerializer", "open_queue"]

QUEUE_NAME = "condense"
TASK_NAME = "run_job"
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def _check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str):
        raise TypeError(f"job_id must be a str, got {type(job_id).__name__}")
    if not _JOB_ID_RE.match(job_id):
        raise ValueError(f"not a job id (32 hex digits): {job_id!r}")
    return job_id


class JsonSerializer(Serializer):
    """Huey messages as JSON: only our task's messages (one job-id argument, no callbacks) are accepted.

    Huey's :class:`huey.serializer.Serializer` with its pickle steps replaced. A message that is not one of ours
    raises ValueError, which Huey's worker logs and skips.
    """

    def _serialize(self, data: Any) -> bytes:
        return self.encode(data)

    def _deserialize(self, data: bytes) -> Any:
        return self.decode(data)

    @staticmethod
    def encode(message: Any) -> bytes:
        """A Huey ``Message`` as JSON bytes (callbacks, chords and schedules are refused: the queue uses none)."""
        if message.on_complete is not None or message.on_error is not None or message.chord_config is not None:
            raise ValueError("the job queue carries no task callbacks or chords")
        args = list(message.args or ())
        if len(args) != 1 or message.kwargs:
            raise ValueError("a job message carries exactly one job id")
        _check_job_id(args[0])
        payload = {
            "id": message.id,
            "name": message.name,
            "job_id": args[0],
            "eta": None if message.eta is None else message.eta.isoformat(),
            "priority": message.priority,
        }
        return json.dumps(payload, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def decode(data: bytes) -> Any:
        """JSON bytes back to a Huey ``Message``; ValueError for anything that is not a job message."""
        try:
            payload = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a job message: {error}") from None
        if not isinstance(payload, dict) or set(payload) != {"id", "name", "job_id", "eta", "priority"}:
            raise ValueError("not a job message")
        name, task_id = payload["name"], payload["id"]
        if not isinstance(name, str) or not name.endswith("." + TASK_NAME) or not isinstance(task_id, str):
            raise ValueError(f"not a job message: task {name!r}")
        priority = payload["priority"]
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int | float)):
            raise ValueError("not a job message: bad priority")
        eta = payload["eta"]
        eta_value = None if eta is None else dt.datetime.fromisoformat(str(eta))
        return Message(
            id=task_id,
            name=name,
            eta=eta_value,
            retries=0,
            retry_delay=0,
            priority=priority,
            args=(_check_job_id(payload["job_id"]),),
            kwargs={},
        )


def _huey(url: str, name: str) -> Any:
    """A Huey instance for the broker ``url`` (see the module docstring)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    common = {"results": False, "serializer": JsonSerializer(), "utc": True}
    if scheme in ("sqlite", "sqlite+pysqlite"):
        from huey import SqliteHuey

        raw = unquote(url.split("://", 1)[1])
        if not raw.startswith("/") or raw in ("/", "/:memory:"):
            raise ValueError(f"broker URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
        path = Path(raw[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        # fsync: a queued job survives a power cut; timeout: several worker processes share the file.
        return SqliteHuey(name, filename=str(path), fsync=True, timeout=30, **common)
    if scheme in ("redis", "rediss"):
        from huey import RedisHuey

        return RedisHuey(name, url=url, blocking=True, read_timeout=1, **common)
    raise ValueError(
        f"unknown broker URL scheme {parts.scheme!r} in {url!r}: use sqlite:///path.db or redis://host:port/0"
    )


class JobQueue:
    """Send job ids to workers, and (in a worker) run a handler for each one received.

    The producer (the web app) calls :meth:`enqueue`. A worker sets its handler with :meth:`set_handler` and runs
    Huey's consumer on :attr:`huey` (see :mod:`service.jobs.worker`).
    """

    def __init__(self, url: str, *, name: str = QUEUE_NAME) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError("a broker URL must be a non-empty str")
        self.url = url
        self.huey = _huey(url, name)
        self._handler: Callable[[str], None] | None = None
        self._task = self.huey.task(name=TASK_NAME)(self._dispatch)

    def __repr__(self) -> str:
        return f"JobQueue({type(self.huey).__name__}, name={self.huey.name!r})"

    def enqueue(self, job_id: str) -> None:
        """Send ``job_id`` to the workers."""
        self._task(_check_job_id(job_id))

    def set_handler(self, handler: Callable[[str], None]) -> None:
        """Make this process run ``handler(job_id)`` for every message its consumer receives."""
        if not callable(handler):
            raise TypeError("handler must be callable")
        self._handler = handler

    def _dispatch(self, job_id: str) -> None:
        if self._handler is None:
            raise RuntimeError("this JobQueue has no handler: only a worker (service.jobs.worker) runs jobs")
        self._handler(_check_job_id(job_id))

    def pending(self) -> int:
        """Messages waiting (a health check that the broker answers)."""
        return int(self.huey.pending_count())

    def flush(self) -> None:
        """Drop every waiting message (tests)."""
        self.huey.storage.flush_queue()

    def close(self) -> None:
        """Release the broker connection."""
        storage = self.huey.storage
        close = getattr(storage, "close", None)
        if callable(close):
            close()


def open_queue(url: str) -> JobQueue:
    """The :class:`JobQueue` on the broker at ``url``."""
    return JobQueue(url)
