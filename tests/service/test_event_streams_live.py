"""Event streams on real gunicorn: per-user and per-process caps (429 / 503 with Retry-After), streams that end
after ``CONDENSE_SSE_MAX_S`` with a retry hint, and ``/health`` answered at once while every stream slot is taken."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage import open_metadata_store
from tests.service.live_gunicorn import LiveServer, start_gunicorn
from tests.waiting import wait_until

pytestmark = pytest.mark.servers


def _open_stream(server: LiveServer, token: str, job_id: str):
    connection = server.connection(timeout=20)
    connection.request("GET", f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"})
    return connection, connection.getresponse()


def test_streams_are_capped_and_never_starve_health(tmp_path: Path) -> None:
    server = start_gunicorn(
        tmp_path / "data",
        CONDENSE_WEB_WORKERS="1",
        CONDENSE_WEB_THREADS="2",
        CONDENSE_SSE_STREAMS="4",
        CONDENSE_SSE_STREAMS_PER_USER="2",
        CONDENSE_SSE_MAX_S="30",
        CONDENSE_SSE_KEEPALIVE_S="1",
    )
    held = []
    try:
        users = {}
        with open_metadata_store(f"sqlite:///{tmp_path}/data/condense.db") as metadata:
            for name in ("u0", "u1", "u2"):
                metadata.create_user(name)
                users[name] = (metadata.create_token(name), metadata.create_job(name, {}).id)
        for name in ("u0", "u0", "u1", "u1"):
            connection, response = _open_stream(server, *users[name])
            assert response.status == 200
            assert response.readline().startswith(b"retry: ")
            held.append(connection)
        connection, response = _open_stream(server, *users["u0"])
        assert response.status == 429 and response.getheader("Retry-After") == "5"
        assert b"the most allowed (2)" in response.read()
        connection.close()
        connection, response = _open_stream(server, *users["u2"])
        assert response.status == 503 and response.getheader("Retry-After")
        connection.close()
        for _ in range(5):
            started = time.monotonic()
            assert server.get("/api/v1/health", timeout=10)[0] == 200
            assert time.monotonic() - started < 3.0  # not queued behind the open streams
            token, job_id = users["u2"]
            assert server.get(f"/api/v1/jobs/{job_id}", {"Authorization": f"Bearer {token}"})[0] == 200
        held.pop().close()  # a client going away frees its slot, once a keep-alive write fails

        def reopened() -> bool:
            connection, response = _open_stream(server, *users["u2"])
            held.append(connection)
            return response.status == 200

        wait_until(reopened, "a closed stream's slot to be freed", 15, 0.5)
    finally:
        for connection in held:
            connection.close()
        server.stop()


def test_a_stream_ends_after_its_time_limit_with_a_retry_hint(tmp_path: Path) -> None:
    server = start_gunicorn(tmp_path / "data", CONDENSE_WEB_WORKERS="1", CONDENSE_SSE_MAX_S="2")
    try:
        with open_metadata_store(f"sqlite:///{tmp_path}/data/condense.db") as metadata:
            metadata.create_user("u")
            token, job_id = metadata.create_token("u"), metadata.create_job("u", {}).id
        started = time.monotonic()
        connection, response = _open_stream(server, token, job_id)
        body = response.read()
        connection.close()
        assert time.monotonic() - started < 10
        assert body.startswith(b"retry: ") and b"event: status" not in body.split(b"\n\n")[0]
    finally:
        server.stop()


def test_web_workers_import_the_upload_checks_at_start(tmp_path: Path) -> None:
    server = start_gunicorn(tmp_path / "data", CONDENSE_WEB_WORKERS="1")
    try:
        (worker,) = server.worker_pids()

        def torch_loaded() -> bool:
            return "libtorch" in Path(f"/proc/{worker}/maps").read_text()

        wait_until(torch_loaded, "the web worker to import torch before any request needs it", 60, 0.5)
    finally:
        server.stop()
