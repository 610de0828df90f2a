"""The service's configuration: :class:`Settings`, read once from the environment.

The app factory (:func:`service.app.create_app`), ``condense worker`` and ``condense serve`` each call
:meth:`Settings.from_env` once and pass the object on; nothing else reads these variables (nothing at import time).
A bad value raises :class:`SettingsError` (a ValueError) naming the variable, the value and what is expected.

Each variable, its default and what it sets: :data:`service.settings_doc.VARIABLES` (the table of
``docs/settings.md`` is generated from it; a test fails when one of them is stale). On the client side only:
``CONDENSE_SERVER`` / ``CONDENSE_TOKEN`` (``condense submit|status|download|cancel``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from storage.files import atomic_write_text

if TYPE_CHECKING:
    from storage import BlobStore

__all__ = ["Settings", "SettingsError", "parse_bytes"]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_PIPELINE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_MIN_SECRET_CHARS = 32
_SECRET_FILE = "secret_key"


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; plain digits are bytes; K, M, G, T are powers of 1024 (``MiB``, ``MB`` alike)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"expected a size such as 1048576, 512M or 2G, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _default_data_dir(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_DATA_HOME", "").strip()
    if xdg:
        return Path(xdg) / "condense"
    home = env.get("HOME", "").strip()
    if home and Path(home).is_dir():
        return Path(home) / ".local" / "share" / "condense"
    return Path.cwd() / "condense-data"


@dataclass(frozen=True)
class Settings:
    """The service's settings (see the module docstring for each one). Build with :meth:`from_env`."""

    data_dir: Path
    database_url: str
    blob_url: str
    broker_url: str
    work_dir: Path
    max_upload_bytes: int = 2 * 1024**3
    max_teacher_bytes: int = 512 * 1024**2
    max_positives_files: int = 100_000
    lease_s: float = 60.0
    poll_s: float = 1.0
    max_attempts: int = 3
    reaper_interval_s: float = 30.0
    checkpoint_sync_s: float = 300.0
    upload_ttl_s: float = 86_400.0
    workers: int = 1
    num_threads: int | None = None
    web_workers: int = 2
    web_threads: int = 8
    bind: str = "127.0.0.1:8000"
    forwarded_allow_ips: str = "127.0.0.1,::1"
    sse_max_s: float = 300.0
    sse_keepalive_s: float = 15.0
    sse_streams: int = 64
    sse_streams_per_user: int = 4
    upload_quota_bytes: int = 4 * 1024**3
    session_ttl_s: float = 43_200.0
    log_level: str = "INFO"
    secure_cookies: bool = False
    demo_pool: bool = True
    pipeline: str | None = None
    s3_endpoint_url: str | None = None
    worker_heartbeat_file: Path | None = None
    worker_heartbeat_s: float = 5.0
    session_key_file: Path | None = None
    session_key: str | None = field(default=None, repr=False)

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
        """Read the ``CONDENSE_*`` variables of ``environ`` (default ``os.environ``); SettingsError naming a bad one."""
        env = dict(os.environ if environ is None else environ)
        reader = _Reader(env)
        data_text = reader.text("CONDENSE_DATA_DIR")
        data_dir = Path(data_text).expanduser() if data_text else _default_data_dir(env)
        data_dir = data_dir.absolute()
        work_text = reader.text("CONDENSE_WORK_DIR")
        key_file, session_key = reader.session_key("CONDENSE_SECRET_KEY", "CONDENSE_SECRET_KEY_FILE")
        settings = cls(
            data_dir=data_dir,
            database_url=reader.url("CONDENSE_DATABASE_URL", f"sqlite:///{data_dir}/condense.db", _DB_SCHEMES),
            blob_url=reader.url("CONDENSE_BLOB_URL", f"file://{data_dir}/blobs", ("file", "s3", "")),
            broker_url=reader.url("CONDENSE_BROKER_URL", f"sqlite:///{data_dir}/queue.db", _BROKER_SCHEMES),
            work_dir=(Path(work_text).expanduser().absolute() if work_text else data_dir / "work"),
            max_upload_bytes=reader.size("CONDENSE_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_teacher_bytes=reader.size("CONDENSE_MAX_TEACHER_BYTES", cls.max_teacher_bytes),
            max_positives_files=reader.integer("CONDENSE_MAX_POSITIVES_FILES", cls.max_positives_files, minimum=1),
            lease_s=reader.number("CONDENSE_LEASE_S", cls.lease_s, minimum=1.0),
            poll_s=reader.number("CONDENSE_POLL_S", cls.poll_s, minimum=0.05),
            max_attempts=reader.integer("CONDENSE_MAX_ATTEMPTS", cls.max_attempts, minimum=1),
            reaper_interval_s=reader.number("CONDENSE_REAPER_INTERVAL_S", cls.reaper_interval_s, minimum=0.1),
            checkpoint_sync_s=reader.number("CONDENSE_CHECKPOINT_SYNC_S", cls.checkpoint_sync_s, minimum=0.0),
            upload_ttl_s=reader.number("CONDENSE_UPLOAD_TTL_S", cls.upload_ttl_s, minimum=60.0),
            workers=reader.integer("CONDENSE_WORKERS", cls.workers, minimum=0),
            num_threads=reader.count("CONDENSE_NUM_THREADS"),
            web_workers=reader.integer("CONDENSE_WEB_WORKERS", cls.web_workers, minimum=1),
            web_threads=reader.integer("CONDENSE_WEB_THREADS", cls.web_threads, minimum=1),
            bind=reader.bind("CONDENSE_BIND", cls.bind),
            forwarded_allow_ips=reader.addresses("CONDENSE_FORWARDED_ALLOW_IPS", cls.forwarded_allow_ips),
            sse_max_s=reader.number("CONDENSE_SSE_MAX_S", cls.sse_max_s, minimum=1.0),
            sse_keepalive_s=reader.number("CONDENSE_SSE_KEEPALIVE_S", cls.sse_keepalive_s, minimum=0.1),
            sse_streams=reader.integer("CONDENSE_SSE_STREAMS", cls.sse_streams, minimum=1),
            sse_streams_per_user=reader.integer("CONDENSE_SSE_STREAMS_PER_USER", cls.sse_streams_per_user, minimum=1),
            upload_quota_bytes=reader.size("CONDENSE_UPLOAD_QUOTA_BYTES", cls.upload_quota_bytes),
            session_ttl_s=reader.number("CONDENSE_SESSION_TTL_S", cls.session_ttl_s, minimum=60.0),
            log_level=reader.choice("CONDENSE_LOG_LEVEL", cls.log_level, _LOG_LEVELS),
            secure_cookies=reader.flag("CONDENSE_SECURE_COOKIES", cls.secure_cookies),
            demo_pool=reader.flag("CONDENSE_DEMO_POOL", cls.demo_pool),
            pipeline=reader.pipeline("CONDENSE_PIPELINE"),
            s3_endpoint_url=reader.optional_url("CONDENSE_S3_ENDPOINT_URL", ("http", "https")),
            worker_heartbeat_file=reader.path("CONDENSE_WORKER_HEARTBEAT_FILE"),
            worker_heartbeat_s=reader.number("CONDENSE_WORKER_HEARTBEAT_S", cls.worker_heartbeat_s, minimum=0.1),
            session_key_file=key_file,
            session_key=session_key,
        )
        if reader.errors:
            raise SettingsError("; ".join(reader.errors))
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
        for name, value in self.__dict__.items():
            if name == "session_key":
                value = None if value is None else "***"
            if isinstance(value, Path):
                value = str(value)
            if name.endswith("_url") and isinstance(value, str):
                value = _hide_password(value)
            result[name] = value
        return result


_DB_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_BROKER_SCHEMES = ("sqlite", "redis", "rediss")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class _Reader:
    """Reads variables, collecting every problem (so one error message names all bad variables)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def text(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def _fail(self, name: str, value: str, expected: str) -> None:
        self.errors.append(f"{name}={value!r}: {expected}")

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return None if value is None else Path(value).expanduser().absolute()

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name)
        if value is None:
            return default
        scheme = urlsplit(value).scheme.lower()
        if scheme not in schemes:
            shown = ", ".join(f"{s}:" for s in schemes if s) + (" or a plain path" if "" in schemes else "")
            self._fail(name, _hide_password(value), f"expected a URL starting with {shown}")
            return default
        return value

    def optional_url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        return self.url(name, "", schemes) or None

    def size(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            size = parse_bytes(value)
        except ValueError as error:
            self._fail(name, value, str(error))
            return default
        if size < 1:
            self._fail(name, value, "must be at least 1 byte")
            return default
        return size

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self._fail(name, value, "expected a whole number")
            return default
        if number < minimum:
            self._fail(name, value, f"must be >= {minimum}")
            return default
        return number

    def count(self, name: str) -> int | None:
        """A whole number >= 1, or None when unset."""
        if self.text(name) is None:
            return None
        errors = len(self.errors)
        number = self.integer(name, 1, minimum=1)
        return None if len(self.errors) > errors else number

    def number(self, name: str, default: float, *, minimum: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self._fail(name, value, "expected a number of seconds")
            return default
        if not number >= minimum or number == float("inf"):
            self._fail(name, value, f"must be a finite number >= {minimum:g}")
            return default
        return number

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value.upper() not in choices:
            self._fail(name, value, f"expected one of {', '.join(choices)}")
            return default
        return value.upper()

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self._fail(name, value, "expected 1 or 0 (also true/false, yes/no, on/off)")
        return default

    def bind(self, name: str, default: str) -> str:
        value = self.text(name)
        if value is None:
            return default
        host, sep, port = value.rpartition(":")
        if value.startswith("unix:"):
            return value
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self._fail(name, value, "expected HOST:PORT (e.g. 0.0.0.0:8000) or unix:/path/to.sock")
            return default
        return value

    def addresses(self, name: str, default: str) -> str:
        """``*``, or comma-separated IP addresses and networks (``10.0.0.0/8``; host bits unset, as gunicorn wants)."""
        value = self.text(name)
        if value is None:
            return default
        items = [item.strip() for item in value.split(",") if item.strip()]
        if items == ["*"]:
            return "*"
        bad = []
        for item in items:
            try:
                ipaddress.ip_network(item)
            except ValueError:
                bad.append(item)
        if bad or not items:
            shown = ", ".join(repr(item) for item in bad) or "nothing"
            self._fail(name, value, f"expected '*' or IP addresses / networks separated by commas, not {shown}")
            return default
        return ",".join(items)

    def secret(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        if len(value) < _MIN_SECRET_CHARS:  # the value itself is never repeated in the message
            self.errors.append(f"{name}: must be at least {_MIN_SECRET_CHARS} characters (got {len(value)})")
            return None
        return value

    def session_key(self, name: str, file_name: str) -> tuple[Path | None, str | None]:
        """``(key file, key)``: the key from variable ``name`` or read from the file ``file_name`` names (a mounted
        Kubernetes or compose secret; surrounding whitespace dropped). Setting both is an error: two sources of one
        key could disagree between replicas and sign users out without a word."""
        path_text = self.text(file_name)
        if path_text is None:
            return None, self.secret(name)
        path = Path(path_text).expanduser().absolute()
        if self.text(name) is not None:
            self.errors.append(f"{name} and {file_name} are both set: set only one of them")
            return path, None
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            self._fail(file_name, path_text, f"cannot read the session key from it ({reason})")
            return path, None
        if len(key) < _MIN_SECRET_CHARS:  # the key itself is never repeated in the message
            self._fail(
                file_name, path_text, f"holds {len(key)} characters; a session key needs at least {_MIN_SECRET_CHARS}"
            )
            return path, None
        return path, key

    def pipeline(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        if not _PIPELINE_RE.match(value):
            self._fail(name, value, "expected module.path:function (tests only)")
            return None
        return value
