"""Hostile and malformed input to the API: every one is a 4xx naming the field, never a 500."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from tests.service.conftest import ApiFixture, build_api, make_settings

SHAPE = {"input_shape": [1, 28, 28]}
DEEP = "[" * 5000 + "]" * 5000
HUGE = "9" * 5000


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def _files(service_inputs, options: str) -> dict:
    return {
        "teacher": (io.BytesIO(service_inputs["teacher"].read_bytes()), "t.pt"),
        "positives": (io.BytesIO(service_inputs["positives"].read_bytes()), "p.zip"),
        "options": options,
    }


@pytest.mark.parametrize("options", [DEEP, '{"seed": ' + HUGE + "}", '{"seed": [' * 100 + "]" * 100 + "}"])
def test_hostile_options_in_multipart_are_400_naming_options(api: ApiFixture, service_inputs, options: str) -> None:
    response = api.client.post(
        "/api/v1/jobs", headers=api.alice, data=_files(service_inputs, options), content_type="multipart/form-data"
    )
    assert _error(response, 400)["fields"][0]["field"] == "options"


@pytest.mark.parametrize("body", ['{"options": ' + DEEP + "}", '{"options": {"seed": ' + HUGE + "}}"])
def test_hostile_json_bodies_are_400_naming_the_body(api: ApiFixture, body: str) -> None:
    response = api.client.post("/api/v1/jobs", headers=api.alice, data=body, content_type="application/json")
    assert _error(response, 400)["fields"][0]["field"] == "body"


@pytest.mark.parametrize("value", ["１２", "٣", HUGE, "99999999999999999999", "-1", "1e3"])
def test_numbers_in_query_and_headers_are_ascii_and_bounded(api: ApiFixture, value: str) -> None:
    error = _error(api.client.get(f"/api/v1/jobs?limit={value}", headers=api.alice), 400)
    assert error["fields"][0]["field"] == "limit"


def test_event_positions_are_checked(api: ApiFixture, service_inputs) -> None:
    response = api.client.post(
        "/api/v1/jobs",
        headers=api.alice,
        data=_files(service_inputs, json.dumps(SHAPE)),
        content_type="multipart/form-data",
    )
    job_id = response.get_json()["id"]
    url = f"/api/v1/jobs/{job_id}/events"
    for value in ("１２", HUGE, "1" * 19):
        assert _error(api.client.get(f"{url}?after={value}", headers=api.alice), 400)["fields"][0]["field"] == "after"
        headers = {**api.alice, "Last-Event-ID": value}
        assert _error(api.client.get(url, headers=headers), 400)["fields"][0]["field"] == "Last-Event-ID"


def test_job_ids_with_a_trailing_newline_are_404(api: ApiFixture) -> None:
    _error(api.client.get("/api/v1/jobs/" + "a" * 32 + "%0A", headers=api.alice), 404)


@pytest.mark.parametrize(("name", "value"), [("epochs", 10**30), ("epochs", 1001), ("time_budget_min", 1e30)])
def test_epochs_and_time_budget_are_bounded(api: ApiFixture, service_inputs, name: str, value: float) -> None:
    options = json.dumps({**SHAPE, name: value})
    response = api.client.post(
        "/api/v1/jobs", headers=api.alice, data=_files(service_inputs, options), content_type="multipart/form-data"
    )
    assert _error(response, 422)["fields"][0]["field"] == f"options.{name}"


def test_repeated_multipart_parts_are_refused(api: ApiFixture, service_inputs) -> None:
    data = _files(service_inputs, json.dumps(SHAPE))
    data["teacher"] = [data["teacher"], (io.BytesIO(b"other"), "t2.pt")]
    response = api.client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data")
    assert _error(response, 400)["fields"][0]["field"] == "teacher"
    twice = {"file": [(io.BytesIO(b"a"), "a.zip"), (io.BytesIO(b"b"), "b.zip")]}
    response = api.client.post("/api/v1/uploads", headers=api.alice, data=twice, content_type="multipart/form-data")
    assert _error(response, 400)["fields"][0]["field"] == "file"
    assert api.jobs.metadata.list_jobs("alice") == []


def test_an_oversized_options_field_quotes_the_field_limit(api: ApiFixture, service_inputs) -> None:
    options = json.dumps({**SHAPE, "pool": "x" * (2 * 1024 * 1024)})
    response = api.client.post(
        "/api/v1/jobs", headers=api.alice, data=_files(service_inputs, options), content_type="multipart/form-data"
    )
    error = _error(response, 413)
    assert "1,048,576-byte" in error["message"] and error["fields"][0]["field"] == "options"


def test_content_types_carry_one_charset(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "d"))
    response = api.client.post(
        "/api/v1/jobs",
        headers=api.alice,
        data=_files(service_inputs, json.dumps(SHAPE)),
        content_type="multipart/form-data",
    )
    job_id = response.get_json()["id"]
    metadata, blobs = api.jobs.metadata, api.jobs.blobs
    assert metadata.claim_job(job_id, "test-worker", 60)
    for name in ("report.html", "notes.txt"):
        key = f"jobs/{job_id}/artifacts/{name}"
        blobs.put_bytes(key, b"<p>hi</p>")
        metadata.add_artifact(job_id, name, key, 9, hashlib.sha256(b"<p>hi</p>").hexdigest())
    urls = [f"/api/v1/jobs/{job_id}/artifacts/report.html", f"/api/v1/jobs/{job_id}/artifacts/notes.txt"]
    for url in ("/api/v1/health", "/sign-in", *urls):
        content_type = api.client.get(url, headers=api.alice).headers["Content-Type"]
        assert content_type.count("charset") <= 1, content_type


def test_openapi_describes_each_event_kind(api: ApiFixture) -> None:
    document = api.client.get("/api/v1/openapi.json").get_json()
    stream = document["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert stream["itemSchema"]["properties"]["event"]["enum"] == ["status", "progress", "cancel_requested", "end"]
    assert set(stream["x-events"]) == {"status", "progress", "cancel_requested", "end"}
    schemas = document["components"]["schemas"]
    assert schemas["StatusEvent"]["properties"]["status"]["enum"][0] == "queued"
    assert {"429", "503"} <= set(document["paths"]["/jobs/{job_id}/events"]["get"]["responses"])
