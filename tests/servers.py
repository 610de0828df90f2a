"""Real servers on loopback for the tests, started once per session: moto's S3, PostgreSQL and Redis.

Used by the storage contract tests (``tests/storage/``) and the end-to-end tests of the service
(``tests/service/test_e2e.py``); the fixtures are registered for the whole suite in ``tests/conftest.py``.

- ``s3_server``: a moto server (``python -m moto.server``) as a subprocess on a free loopback port, with fake
  credentials (``FAKE_AWS_ENV``); ``s3_env`` puts them in the environment; ``s3_bucket`` is a fresh bucket, removed
  afterwards. ``CONDENSE_TEST_S3_ENDPOINT=http://host:port`` uses that S3-compatible server instead (credentials from
  the environment).
- ``postgres_server``: a throw-away cluster made with ``initdb`` and started with ``pg_ctl`` in a temporary folder, on
  a free port on 127.0.0.1 with its unix socket inside that folder; ``fsync`` off. The binaries are looked up on
  ``PATH`` and in ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package). PostgreSQL refuses to run as root,
  so when the tests run as root the cluster is created and run as the ``postgres`` user (or ``nobody``).
  ``postgres_url`` is a URL whose tables live in a fresh schema (dropped afterwards) through ``search_path``.
  ``CONDENSE_TEST_POSTGRES_URL=postgresql://user:pw@host:port/db`` uses that server instead; its existing tables are
  not touched (tests work in their own schemas).
- ``redis_server``: ``redis-server`` (Debian package ``redis-server``) on a free loopback port, without persistence;
  ``redis_url`` is a URL of a database number of its own, flushed first. ``CONDENSE_TEST_REDIS_URL=redis://host:port``
  uses that server instead.

A server that cannot be had (no binaries, moto not installed) skips the test with the reason -- unless
``CONDENSE_REQUIRE_SERVERS=1``, which turns the skip into a failure (CI, ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "condense-test",
    "AWS_SECRET_ACCESS_KEY": "condense-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT_S = 30.0


def require_servers() -> bool:
    return os.environ.get("CONDENSE_REQUIRE_SERVERS", "") == "1"


def unavailable(reason: str) -> None:
    """Skip (or, with CONDENSE_REQUIRE_SERVERS=1, fail) a test whose backend cannot be run."""
    if require_servers():
        pytest.fail(f"{reason} (CONDENSE_REQUIRE_SERVERS=1 requires every backend)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def no_proxy_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores *_proxy environment variables (the servers are on loopback)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------------
# S3 (moto)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    env: dict[str, str]  # credentials to put in the environment (empty: use the caller's)


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    opener = no_proxy_opener()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"the moto server exited with code {proc.returncode}:\n{text}")
        try:
            with opener.open(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer from {url} within {START_TIMEOUT_S:.0f} s") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    external = os.environ.get("CONDENSE_TEST_S3_ENDPOINT")
    if external:
        yield S3Server(external.rstrip("/"), {})
        return
    try:
        import flask  # noqa: F401 -- moto's server needs it
        import moto.server  # noqa: F401
    except ImportError as exc:
        unavailable(f"moto[server] is not installed ({exc}); pip install 'moto[server]>=5'")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, **FAKE_AWS_ENV}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log)
        yield S3Server(f"http://127.0.0.1:{port}", dict(FAKE_AWS_ENV))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The S3 server, with its credentials in the environment and no stray AWS configuration."""
    if s3_server.env:
        for name, value in s3_server.env.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "CONDENSE_S3_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return s3_server


def s3_client(server: S3Server) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )


@pytest.fixture
def s3_bucket(s3_env: S3Server) -> Iterator[str]:
    """A fresh, empty bucket, emptied and removed afterwards."""
    client = s3_client(s3_env)
    bucket = f"condense-test-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        with contextlib.suppress(Exception):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_version(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin$", path)
    return tuple(int(p) for p in match.group(1).split(".") if p) if match else ()


def find_postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: from PATH, else Debian's /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_pg_version, reverse=True)]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _run_as() -> pwd.struct_passwd | None:
    """PostgreSQL will not run as root: the account to run it as (None when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists for PostgreSQL")


@dataclass(frozen=True)
class PostgresServer:
    url: str  # SQLAlchemy-style postgresql:// URL of a database the tests may create schemas in

    @property
    def conninfo(self) -> str:
        """The same URL for psycopg (which does not know '+psycopg')."""
        return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql://", self.url)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    external = os.environ.get("CONDENSE_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(external)
        return
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        unavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in /usr/lib/postgresql/*/bin; "
            "install the Debian package 'postgresql' or set CONDENSE_TEST_POSTGRES_URL"
        )
    user = _run_as()
    run_kwargs: dict[str, Any] = {}
    # /tmp: short enough for the unix socket path (107 bytes) and reachable by the 'postgres' account,
    # unlike a private TMPDIR.
    base = Path(tempfile.mkdtemp(prefix="condense-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
        run_kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, log, port = base / "data", base / "server.log", free_port()

    def run(*args: str) -> None:
        result = subprocess.run(
            [str(a) for a in args], cwd=base, capture_output=True, text=True, timeout=60, check=False, **run_kwargs
        )
        if result.returncode != 0:
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}\n{server_log}")

    started = False
    try:
        run(bin_dir / "initdb", "-D", data, "-U", "condense", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off"
        )
        run(bin_dir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", str(int(START_TIMEOUT_S)), "-o", options, "start")
        started = True
        import psycopg

        with psycopg.connect(f"postgresql://condense@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE condense_test")
        yield PostgresServer(f"postgresql://condense@127.0.0.1:{port}/condense_test")
    finally:
        if started:
            with contextlib.suppress(Exception):
                run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A store URL whose tables live in a fresh schema of their own (dropped afterwards)."""
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"condense_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(postgres_server.url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --------------------------------------------------------------------------------------------------
# Redis


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes] | None = None, what: str = "server") -> None:
    """Wait until ``host:port`` accepts TCP connections (RuntimeError after START_TIMEOUT_S or if ``proc`` exits)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                message = f"the {what} did not listen on {host}:{port} within {START_TIMEOUT_S:.0f} s"
                raise RuntimeError(message) from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    external = os.environ.get("CONDENSE_TEST_REDIS_URL")
    if external:
        from urllib.parse import urlsplit

        parts = urlsplit(external)
        yield RedisServer(parts.hostname or "127.0.0.1", parts.port or 6379)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (Debian package redis-server) and CONDENSE_TEST_REDIS_URL is unset")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", port, proc, "redis-server")
        yield RedisServer("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_redis_dbs = iter(range(1, 16))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL of a Redis database of this test's own (1-15 in turn; flushed first)."""
    import redis

    db = next(_redis_dbs, None)
    if db is None:  # more than 15 tests in one session: reuse, flushed
        db = 15
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=db)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url(db)
