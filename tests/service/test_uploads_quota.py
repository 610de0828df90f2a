"""Uploads: a per-user quota (413 quoting it), list and delete, and oversized requests refused before they fill
the disk (Content-Length checked first, bytes counted while streaming, multipart parts capped while spooled)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests.service.conftest import build_api, make_settings


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def _upload(api, headers, data: bytes, name: str = "f.zip"):
    return api.client.post(
        f"/api/v1/uploads?filename={name}", headers=headers, data=data, content_type="application/octet-stream"
    )


def test_the_upload_quota_is_per_user_and_quoted(tmp_path: Path) -> None:
    api = build_api(make_settings(tmp_path / "d", CONDENSE_UPLOAD_QUOTA_BYTES="10K"))
    assert _upload(api, api.alice, b"a" * 6000).status_code == 201
    error = _error(_upload(api, api.alice, b"b" * 6000), 413)
    assert "upload quota of 10,240 bytes" in error["message"] and error["fields"][0]["field"] == "body"
    assert _upload(api, api.bob, b"c" * 6000).status_code == 201  # bob has his own quota
    # A multipart body's length says little about its file: the bytes are counted while streaming.
    multipart = api.client.post(
        "/api/v1/uploads",
        headers=api.alice,
        data={"file": (io.BytesIO(b"d" * 6000), "d.zip")},
        content_type="multipart/form-data",
    )
    error = _error(multipart, 413)
    assert "upload quota" in error["message"] and error["fields"][0]["field"] == "file"
    listed = api.client.get("/api/v1/uploads", headers=api.alice).get_json()
    assert listed["quota_bytes"] == 10240 and listed["used_bytes"] == 6000 and len(listed["uploads"]) == 1
    assert not [info for info in api.jobs.blobs.list("uploads/alice/") if not info.key.endswith(("data", ".json"))]


def test_uploads_are_listed_and_deleted(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "d"))
    ids = {}
    for role in ("teacher", "positives"):
        ids[role] = _upload(api, api.alice, service_inputs[role].read_bytes(), role).get_json()["upload"]["id"]
    spare = _upload(api, api.alice, b"spare bytes").get_json()["upload"]["id"]
    body = {
        "teacher_upload": ids["teacher"],
        "positives_upload": ids["positives"],
        "options": {"input_shape": [1, 28, 28]},
    }
    job = api.client.post("/api/v1/jobs", headers=api.alice, json=body).get_json()
    listed = {item["id"]: item for item in api.client.get("/api/v1/uploads", headers=api.alice).get_json()["uploads"]}
    assert listed[ids["teacher"]]["job_id"] == job["id"] and listed[spare]["job_id"] is None
    assert api.client.get("/api/v1/uploads", headers=api.bob).get_json()["uploads"] == []
    assert _error(api.client.delete(f"/api/v1/uploads/{spare}", headers=api.bob), 404)
    assert (
        "delete the job"
        in _error(api.client.delete(f"/api/v1/uploads/{ids['teacher']}", headers=api.alice), 409)["message"]
    )
    assert api.client.delete(f"/api/v1/uploads/{spare}", headers=api.alice).status_code == 204
    assert api.client.delete(f"/api/v1/uploads/{spare}", headers=api.alice).status_code == 404
    assert spare not in {
        item["id"] for item in api.client.get("/api/v1/uploads", headers=api.alice).get_json()["uploads"]
    }


def test_an_oversized_request_is_refused_on_its_content_length(tmp_path: Path) -> None:
    api = build_api(make_settings(tmp_path / "d", CONDENSE_MAX_UPLOAD_BYTES="100K", CONDENSE_UPLOAD_QUOTA_BYTES="1M"))

    class NeverRead(io.BytesIO):
        """A body that must not be read: the answer comes from its Content-Length alone."""

        def read(self, *args) -> bytes:
            raise AssertionError("the body was read")

        readinto = readline = read1 = read

    for length, reason in ((500 * 1024, "over the 102,400-byte limit"),):
        response = api.client.post(
            "/api/v1/uploads",
            headers=api.alice,
            input_stream=NeverRead(),
            environ_overrides={"CONTENT_LENGTH": str(length)},
            content_type="application/octet-stream",
        )
        assert reason in _error(response, 413)["message"]
    big = build_api(make_settings(tmp_path / "q", CONDENSE_UPLOAD_QUOTA_BYTES="100K"))
    response = big.client.post(
        "/api/v1/jobs",
        headers=big.alice,
        input_stream=NeverRead(),
        environ_overrides={"CONTENT_LENGTH": str(10 * 1024 * 1024)},
        content_type="multipart/form-data; boundary=x",
    )
    assert "upload quota" in _error(response, 413)["message"]


def test_a_multipart_part_is_cut_off_while_it_is_spooled(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "d", CONDENSE_MAX_UPLOAD_BYTES="64K", CONDENSE_MAX_TEACHER_BYTES="64K"))
    spooled: list[int] = []
    original = api.app.request_class._get_file_stream

    def spy(self, *args, **kwargs):
        stream = original(self, *args, **kwargs)
        write = stream.write

        def counting(data: bytes) -> int:
            spooled.append(len(data))
            return write(data)

        stream.write = counting
        return stream

    api.app.request_class._get_file_stream = spy
    try:
        data = {
            "teacher": (io.BytesIO(b"x" * (1024 * 1024)), "big.pt"),
            "positives": (io.BytesIO(b"p"), "p.zip"),
            "options": json.dumps({"input_shape": [1, 28, 28]}),
        }
        response = api.client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data")
    finally:
        api.app.request_class._get_file_stream = original
    assert "big.pt: over the 65,536-byte limit" in _error(response, 413)["message"]
    assert sum(spooled) <= 64 * 1024 + 128 * 1024  # stopped near the limit, not after the whole megabyte
    assert not list((tmp_path / "d" / "tmp").glob("req-*"))
