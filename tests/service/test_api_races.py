"""Concurrent submissions through the API: one job per upload, and the per-user job limit, both atomic."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from tests.service.conftest import build_api, make_settings

SHAPE = {"input_shape": [1, 28, 28]}


def _concurrently(count: int, request) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = request(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_four_jobs_naming_the_same_uploads_one_succeeds(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "d"), max_running=10)
    ids = {}
    for role in ("teacher", "positives"):
        response = api.client.post(
            f"/api/v1/uploads?filename={service_inputs[role].name}",
            headers=api.alice,
            data=service_inputs[role].read_bytes(),
            content_type="application/octet-stream",
        )
        ids[role] = response.get_json()["upload"]["id"]
    body = {"teacher_upload": ids["teacher"], "positives_upload": ids["positives"], "options": SHAPE}

    def submit(_index: int):
        response = api.app.test_client().post("/api/v1/jobs", headers=api.alice, json=body)
        return response.status_code, response.get_json()

    results = _concurrently(4, submit)
    statuses = sorted(status for status, _ in results)
    assert statuses == [201, 409, 409, 409], results
    for status, body_ in results:
        if status == 409:
            assert "already belongs to another job" in body_["error"]["message"]
            assert body_["error"]["fields"][0]["field"] in ("teacher_upload", "positives_upload")
    assert len(api.jobs.metadata.list_jobs("alice")) == 1
    # The winner's inputs are intact.
    assert api.jobs.blobs.exists(f"uploads/alice/{ids['teacher']}/data")


def test_the_per_user_limit_holds_under_concurrent_submissions(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "d"), max_running=2)
    teacher, positives = service_inputs["teacher"].read_bytes(), service_inputs["positives"].read_bytes()

    def submit(_index: int) -> int:
        data = {
            "teacher": (io.BytesIO(teacher), "t.pt"),
            "positives": (io.BytesIO(positives), "p.zip"),
            "options": json.dumps(SHAPE),
        }
        client = api.app.test_client()
        return client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data").status_code

    assert sorted(_concurrently(4, submit)) == [201, 201, 429, 429]
    assert len(api.jobs.metadata.list_jobs("alice")) == 2
    stored = [info.key for info in api.jobs.blobs.list("uploads/") if info.key.endswith("/data")]
    assert len(stored) == 4  # the refused submissions left no uploads behind
