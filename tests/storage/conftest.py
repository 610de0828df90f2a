"""Fixtures of the storage contract tests: every backend, each against a real server where it needs one.

- Blob stores: ``local`` (a temporary folder) and ``s3`` (a moto server; each test gets a fresh bucket).
- Metadata stores: ``sqlite`` (a temporary file) and ``postgresql`` (a throw-away cluster; each test gets its own
  schema).

The servers are started once per session by the fixtures of ``tests/servers.py`` (registered in
``tests/conftest.py``), which also says how to use external ones instead. A backend whose server cannot be had is
skipped with the reason -- unless ``CONDENSE_REQUIRE_SERVERS=1``, which turns the skip into a failure (CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import LocalBlobStore, MetadataStore, S3BlobStore, open_metadata_store
from tests.clock import FakeClock
from tests.servers import (  # noqa: F401 -- re-exported: other test modules import them from here
    FAKE_AWS_ENV,
    S3Server,
    free_port,
    no_proxy_opener,
    require_servers,
    unavailable,
)

BLOB_BACKENDS = ["local", "s3"]


@pytest.fixture(params=BLOB_BACKENDS)
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalBlobStore | S3BlobStore]:
    """Every blob backend. The S3 store works below a key prefix, so prefix handling is always exercised."""
    if request.param == "local":
        store: LocalBlobStore | S3BlobStore = LocalBlobStore(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_env")
        bucket: str = request.getfixturevalue("s3_bucket")
        store = S3BlobStore(bucket, prefix="condense/blobs", endpoint_url=server.endpoint_url)
    with store:
        yield store


METADATA_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=METADATA_BACKENDS)
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def meta(metadata_url: str, clock: FakeClock) -> Iterator[MetadataStore]:
    """A fresh metadata store on every backend, on a fake clock."""
    with open_metadata_store(metadata_url, clock=clock) as store:
        yield store
