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
