"""Shared fixtures: fixed seeds and a small thread count so timings in the suite stay predictable; the real servers
of ``tests/servers.py`` (moto S3, PostgreSQL, Redis), registered here once for every test folder."""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting starve the worker and server subprocesses the service tests start on a
# 2-core machine (measured: a training step 4.7 s instead of 0.27 s); the condense CLI sets the same default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from tests.servers import (  # noqa: F401 -- fixtures, registered for the whole suite
    postgres_server,
    postgres_url,
    redis_server,
    redis_url,
    s3_bucket,
    s3_env,
    s3_server,
)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


_SERVER_FIXTURES = frozenset(
    {"postgres_server", "postgres_url", "redis_server", "redis_url", "s3_server", "s3_bucket", "s3_env"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server ``servers`` (the markers are described in pyproject.toml)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = set(map(str, callspec.params.values())) if callspec is not None else set()
        if fixtures & _SERVER_FIXTURES or params & {"s3", "postgresql"}:
            item.add_marker(pytest.mark.servers)
