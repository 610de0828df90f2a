"""The service's configuration: :class:`Settings`, read once from the environment.

The app factory (:func:`service.app.create_app`), ``condense worker`` and ``condense serve`` each call
:meth:`Settings.from_env` once and pass the object on; nothing else reads these variables (nothing at import time).
A bad value raises :class:`SettingsError` (a ValueError) naming the variable, the value and what is expected.

Settings is a frozen pydantic model: each field carries its ``CONDENSE_*`` variable, type, default, limits and
meaning, and the table of ``docs/settings.md`` is generated from the fields (:mod:`service.settings_doc`; a test
fails when the file is stale). How each kind of value is read from text: :mod:`service.setting_types`. On the
client side only: ``CONDENSE_SERVER`` / ``CONDENSE_TOKEN`` (``condense submit|status|download|cancel``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from service.setting_types import (
    AbsolutePath,
    Addresses,
    Bind,
    Flag,
    Seconds,
    Size,
    WholeNumber,
    absolute_path,
    env_name,
    hide_password,
    one_of,
    parse_bytes,
    reason,
    setting,
    url_schemes,
)
from storage.files import atomic_write_text

if TYPE_CHECKING:
    from storage import BlobStore

__all__ = ["Settings", "SettingsError", "parse_bytes"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_PIPELINE_RE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
_MIN_SECRET_CHARS = 32
_SECRET_FILE = "secret_key"


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _default_data_dir(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_DATA_HOME", "").strip()
    if xdg:
        return Path(xdg) / "condense"
    home = env.get("HOME", "").strip()
    if home and Path(home).is_dir():
        return Path(home) / ".local" / "share" / "condense"
    return Path.cwd() / "condense-data"


_DB_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_BROKER_SCHEMES = ("sqlite", "redis", "rediss")
_DATA_DIR_DEFAULT = "`$XDG_DATA_HOME/condense`, else `~/.local/share/condense`, else `./condense-data`"
_THREADS_DEFAULT = (
    "unset (their defaults: torch follows `OMP_NUM_THREADS`, else the machine's cores; ONNX Runtime the cores)"
)


class Settings(BaseModel):
    """The service's settings, each field set by one ``CONDENSE_*`` variable. Build with :meth:`from_env`."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Settings")

    data_dir: AbsolutePath = setting(
        "CONDENSE_DATA_DIR",
        ...,
        "Where the embedded defaults keep their files: SQLite databases, local blobs, worker scratch space, "
        "the pool cache, `first-token`, `secret_key`.",
        shown_default=_DATA_DIR_DEFAULT,
    )
    database_url: Annotated[str, url_schemes(_DB_SCHEMES)] = setting(
        "CONDENSE_DATABASE_URL",
        ...,
        "Job metadata, users and tokens: `sqlite:///path` or `postgresql://user:pw@host:5432/db`.",
        shown_default="`sqlite:////<data dir>/condense.db`",
    )
    blob_url: Annotated[str, url_schemes(("file", "s3", ""))] = setting(
        "CONDENSE_BLOB_URL",
        ...,
        "Uploads, artefacts, checkpoints and pools: `file:///path` (or a plain path) or `s3://bucket/prefix` "
        "(endpoint from `?endpoint_url=`, else `CONDENSE_S3_ENDPOINT_URL`; credentials the usual boto3 way).",
        shown_default="`file:///<data dir>/blobs`",
    )
    s3_endpoint_url: Annotated[str, url_schemes(("http", "https"))] | None = setting(
        "CONDENSE_S3_ENDPOINT_URL",
        None,
        "The S3 endpoint for MinIO, Ceph and other S3-compatible stores, when the blob URL has no `?endpoint_url=`.",
        shown_default="unset (AWS itself, or `AWS_ENDPOINT_URL`)",
    )
    broker_url: Annotated[str, url_schemes(_BROKER_SCHEMES)] = setting(
        "CONDENSE_BROKER_URL",
        ...,
        "The job queue (Huey): `sqlite:///path` (one machine, no server) or `redis://host:6379/0` "
        "(`rediss://` for TLS).",
        shown_default="`sqlite:////<data dir>/queue.db`",
    )
    work_dir: AbsolutePath = setting(
        "CONDENSE_WORK_DIR",
        ...,
        "A worker's scratch space: one folder per job with its inputs and checkpoints, kept while the job is "
        "unfinished.",
        shown_default="`<data dir>/work`",
    )
    max_upload_bytes: Size = setting(
        "CONDENSE_MAX_UPLOAD_BYTES",
        2 * 1024**3,
        "Largest positives archive (and any one upload). `K`, `M`, `G` suffixes are binary units.",
        ge=1,
    )
    max_teacher_bytes: Size = setting(
        "CONDENSE_MAX_TEACHER_BYTES",
        512 * 1024**2,
        "Largest teacher model file (the web process memory-maps it to check it; the worker reads it whole).",
        ge=1,
    )
    max_positives_files: WholeNumber = setting(
        "CONDENSE_MAX_POSITIVES_FILES", 100_000, "Most members of a positives archive.", ge=1
    )
    max_pool_ingest_files: WholeNumber = setting(
        "CONDENSE_MAX_POOL_INGEST_FILES",
        200_000,
        "Most members of an archive an admin adds to a pool from the pools page (the command line has no limit).",
        ge=1,
    )
    lease_s: Seconds = setting(
        "CONDENSE_LEASE_S",
        60.0,
        "A running job's lease in seconds: its worker renews it every third of this; a job whose lease ran out is "
        "taken over.",
        ge=1.0,
    )
    poll_s: Seconds = setting(
        "CONDENSE_POLL_S",
        1.0,
        "How often a worker checks its running job for a cancel request (a cancel stops the work within about this).",
        ge=0.05,
    )
    max_attempts: WholeNumber = setting(
        "CONDENSE_MAX_ATTEMPTS",
        3,
        "How many times a job is started before losing its worker once more makes it fail.",
        ge=1,
    )
    reaper_interval_s: Seconds = setting(
        "CONDENSE_REAPER_INTERVAL_S", 30.0, "How often each worker looks for jobs whose worker was lost.", ge=0.1
    )
    checkpoint_sync_s: Seconds = setting(
        "CONDENSE_CHECKPOINT_SYNC_S",
        300.0,
        "How often (and at every stage change) a worker copies a job's checkpoints to blob storage so that another "
        "machine can resume it; `0` turns this off (one machine).",
        ge=0.0,
    )
    upload_ttl_s: Seconds = setting(
        "CONDENSE_UPLOAD_TTL_S",
        86_400.0,
        "Uploads (`POST /api/v1/uploads`) that no job took within this are deleted.",
        ge=60.0,
    )
    worker_heartbeat_file: AbsolutePath | None = setting(
        "CONDENSE_WORKER_HEARTBEAT_FILE",
        None,
        "`condense worker` writes this file at start and touches it from its work loop (waiting for jobs and during "
        "a job's stop checks and progress reports); `condense worker --check-heartbeat MAX_AGE_S` exits 1 when it is "
        "older, a liveness probe for a process that serves no HTTP. One file per worker process: `condense serve` "
        "does not pass it to its workers.",
        shown_default="unset (no file)",
    )
    worker_heartbeat_s: Seconds = setting(
        "CONDENSE_WORKER_HEARTBEAT_S",
        5.0,
        "At most how often the heartbeat file is touched (the loop may touch it less often during a long step).",
        ge=0.1,
    )
    workers: WholeNumber = setting(
        "CONDENSE_WORKERS",
        1,
        "Job worker processes `condense serve` starts (`condense worker` is always one). `condense serve "
        "--workers N` overrides it.",
        ge=0,
    )
    num_threads: WholeNumber | None = setting(
        "CONDENSE_NUM_THREADS",
        None,
        "Threads a job worker gives torch and ONNX Runtime for mining and distillation (`run_compression"
        "(num_threads=...)`). Set it to the CPUs the worker may use (a container's CPU limit): more threads than "
        "CPUs makes training several times slower under a CPU quota.",
        shown_default=_THREADS_DEFAULT,
        ge=1,
    )
    web_workers: WholeNumber = setting(
        "CONDENSE_WEB_WORKERS", 2, "gunicorn worker processes (`condense serve --web-workers N`).", ge=1
    )
    web_threads: WholeNumber = setting(
        "CONDENSE_WEB_THREADS",
        8,
        "Threads per gunicorn worker for requests other than event streams (streams get `CONDENSE_SSE_STREAMS` "
        "more threads of their own).",
        ge=1,
    )
    bind: Bind = setting(
        "CONDENSE_BIND",
        "127.0.0.1:8000",
        "gunicorn's listening address (`0.0.0.0:8000` in containers, or `unix:/path.sock`; `condense serve --bind`).",
    )
    forwarded_allow_ips: Addresses = setting(
        "CONDENSE_FORWARDED_ALLOW_IPS",
        "127.0.0.1,::1",
        "gunicorn's `forwarded_allow_ips`: the proxies (IP addresses or networks such as `10.0.0.0/8`, comma-"
        "separated; `*` for any) whose `X-Forwarded-Proto` is believed, so a request that reached a TLS-terminating "
        "proxy over HTTPS counts as HTTPS. Loopback only by default: a proxy on the same machine.",
    )
    sse_max_s: Seconds = setting(
        "CONDENSE_SSE_MAX_S",
        300.0,
        "Longest one `/events` response streams before it closes (the client reconnects with `Last-Event-ID`).",
        ge=1.0,
    )
    sse_keepalive_s: Seconds = setting(
        "CONDENSE_SSE_KEEPALIVE_S", 15.0, "Keep-alive comment interval of an event stream.", ge=0.1
    )
    sse_streams: WholeNumber = setting(
        "CONDENSE_SSE_STREAMS",
        64,
        "Event streams one gunicorn worker serves at once, on threads added to `CONDENSE_WEB_THREADS` (so streams "
        "never take the threads of other requests); past it `/events` answers 503 with `Retry-After`.",
        ge=1,
    )
    sse_streams_per_user: WholeNumber = setting(
        "CONDENSE_SSE_STREAMS_PER_USER",
        4,
        "Event streams one user may hold open on one gunicorn worker; past it `/events` answers 429 (`Retry-After`).",
        ge=1,
    )
    upload_quota_bytes: Size = setting(
        "CONDENSE_UPLOAD_QUOTA_BYTES",
        4 * 1024**3,
        "Bytes of uploads one user may keep at once (their jobs' inputs included); past it uploads answer 413.",
        ge=1,
    )
    session_ttl_s: Seconds = setting(
        "CONDENSE_SESSION_TTL_S",
        43_200.0,
        "Lifetime of a web sign-in (12 hours); signing out ends it at once.",
        ge=60.0,
    )
    log_level: Annotated[str, one_of(_LOG_LEVELS)] = setting(
        "CONDENSE_LOG_LEVEL",
        "INFO",
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`.",
    )
    session_key: str | None = setting(
        "CONDENSE_SECRET_KEY",
        None,
        f"Signs the web pages' session cookies; at least {_MIN_SECRET_CHARS} characters. Set it or "
        "`CONDENSE_SECRET_KEY_FILE` (the same everywhere) when several machines with separate data directories "
        "serve the pages.",
        shown_default="made on first start, kept in `<data dir>/secret_key`",
        min_length=_MIN_SECRET_CHARS,
        repr=False,
    )
    session_key_file: AbsolutePath | None = setting(
        "CONDENSE_SECRET_KEY_FILE",
        None,
        "A file holding the session key (a mounted Kubernetes Secret or compose secret; surrounding whitespace is "
        "dropped), read once at start-up: a file that cannot be read or holds under "
        f"{_MIN_SECRET_CHARS} characters stops the command with a message naming it. Setting it and "
        "`CONDENSE_SECRET_KEY` both is an error.",
    )
    secure_cookies: Flag = setting(
        "CONDENSE_SECURE_COOKIES",
        False,
        "`1` marks the session cookie `Secure` (sent over HTTPS only): set it wherever the pages are served over "
        "HTTPS, a TLS-terminating proxy included. Off by default because the embedded server speaks plain HTTP on "
        "127.0.0.1, where a browser would drop a Secure cookie.",
    )
    demo_pool: Flag = setting(
        "CONDENSE_DEMO_POOL",
        True,
        "`condense serve` builds the demo pool (pool `demo`, 4,500 packaged real images, about 20 s on 2 CPU "
        "cores) on first start when it does not exist; `0` skips it (build it later with `condense pool demo`). "
        "Also accepts `true`/`false`, `yes`/`no`, `on`/`off`.",
    )
    pipeline: str | None = setting(
        "CONDENSE_PIPELINE",
        None,
        "**Tests only**: `module:function` run instead of `service.pipeline.run_compression`.",
        pattern=_PIPELINE_RE,
        expected="module.path:function (tests only)",
    )

    @property
    def max_request_bytes(self) -> int:
        """Flask's ``MAX_CONTENT_LENGTH``: a teacher, a positives archive and a little for the form."""
        return self.max_upload_bytes + self.max_teacher_bytes + 1024**2

    def open_blobs(self) -> BlobStore:
        """The blob store of ``CONDENSE_BLOB_URL`` (S3 endpoint from ``CONDENSE_S3_ENDPOINT_URL`` when set)."""
        from storage import open_blob_store

        return open_blob_store(self.blob_url, s3_endpoint_url=self.s3_endpoint_url)

    @property
    def tmp_dir(self) -> Path:
        """Scratch space of the web processes (uploads being checked), inside the data directory."""
        return self.data_dir / "tmp"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``CONDENSE_*`` variables of ``environ`` (default ``os.environ``); SettingsError naming a bad one.

        A variable that is unset or blank leaves its field's default; surrounding whitespace is dropped. The data
        directory defaults to ``$XDG_DATA_HOME/condense``, else ``~/.local/share/condense``, else
        ``./condense-data``; the database, blob and broker URLs and the work directory default to places inside it.
        Every bad variable is named in the one message.
        """
        env = os.environ if environ is None else environ
        given: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            text = env.get(env_name(field), "").strip()
            if text:
                given[name] = text
        data_dir = absolute_path(given["data_dir"]) if "data_dir" in given else _default_data_dir(env).absolute()
        values: dict[str, object] = {
            "database_url": f"sqlite:///{data_dir}/condense.db",
            "blob_url": f"file://{data_dir}/blobs",
            "broker_url": f"sqlite:///{data_dir}/queue.db",
            "work_dir": data_dir / "work",
            **given,
            "data_dir": data_dir,
        }
        problems = _read_session_key_file(values)
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            problems += [_problem(cls, item, given) for item in error.errors()]
        if problems:
            raise SettingsError("; ".join(problems))
        return settings

    def session_secret(self) -> str:
        """The key signing the web pages' session cookies: ``CONDENSE_SECRET_KEY`` or the file named by
        ``CONDENSE_SECRET_KEY_FILE`` (both read by :meth:`from_env`), else ``<data dir>/secret_key``.

        The file is created on the first call with a fresh random key (mode 0600, written to a temporary file and
        linked into place, so processes starting together agree on one key and none reads a half-written one).
        SettingsError if the file exists but holds no usable key.
        """
        if self.session_key is not None:
            return self.session_key
        path = self.data_dir / _SECRET_FILE
        existing = _read_secret(path)
        if existing is not None:
            return existing
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            atomic_write_text(path, key + "\n", mode=0o600, overwrite=False)
        except FileExistsError:  # another process made it first: use theirs
            theirs = _read_secret(path)
            if theirs is None:
                raise SettingsError(f"{path} vanished while it was being read") from None
            return theirs
        return key

    def as_dict(self) -> dict[str, object]:
        """The settings as JSON-ready values, with passwords in URLs and the secret key hidden (for logs, ``serve``)."""
        result: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "session_key":
                value = None if value is None else "***"
            if isinstance(value, Path):
                value = str(value)
            if name.endswith("_url") and isinstance(value, str):
                value = hide_password(value)
            result[name] = value
        return result


def _read_secret(path: Path) -> str | None:
    """The key stored in ``path``; None if there is no such file; SettingsError if it holds no usable key."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: cannot read the session secret key ({error})") from None
    if len(text) < _MIN_SECRET_CHARS:
        raise SettingsError(
            f"{path}: holds no usable session secret key (under {_MIN_SECRET_CHARS} characters); delete the file "
            "to have a new one made (signs everyone out) or set CONDENSE_SECRET_KEY"
        )
    return text


def _read_session_key_file(values: dict[str, object]) -> list[str]:
    """Put the key from the file ``CONDENSE_SECRET_KEY_FILE`` names (a mounted Kubernetes or compose secret;
    surrounding whitespace dropped) into ``values``; the problems found, worded. Setting the variable and
    ``CONDENSE_SECRET_KEY`` both is an error: two sources of one key could disagree between replicas and sign
    users out without a word. The key itself is never repeated in a message."""
    path_text = values.get("session_key_file")
    if not isinstance(path_text, str):
        return []
    name, file_name = (env_name(Settings.model_fields[field]) for field in ("session_key", "session_key_file"))
    if values.pop("session_key", None) is not None:
        return [f"{name} and {file_name} are both set: set only one of them"]
    try:
        key = absolute_path(path_text).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return [f"{file_name}={path_text!r}: cannot read the session key from it ({why})"]
    if len(key) < _MIN_SECRET_CHARS:
        need = f"a session key needs at least {_MIN_SECRET_CHARS}"
        return [f"{file_name}={path_text!r}: holds {len(key)} characters; {need}"]
    values["session_key"] = key
    return []


def _problem(model: type[Settings], error: ErrorDetails, given: Mapping[str, str]) -> str:
    """One of pydantic's errors as ``VARIABLE='value': what is expected`` (secrets and URL passwords hidden)."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = model.model_fields.get(name)
    if field is None:
        return f"{name or 'settings'}: {error['msg']}"
    value = given.get(name, error["input"])
    if not field.repr:  # a secret
        return f"{env_name(field)}: {reason(error, field)}"
    shown = hide_password(value) if name.endswith("_url") and isinstance(value, str) else value
    return f"{env_name(field)}={shown!r}: {reason(error, field)}"
