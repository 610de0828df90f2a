"""The JSON API through Flask's test client: auth, isolation between users, validation errors, events, cancel, delete,
artefacts, and the OpenAPI document covering every route."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import time
import zipfile
from pathlib import Path

import pytest

from service.api.openapi import _standard, openapi_document
from service.options import JobOptions
from tests.service.conftest import ApiFixture, build_api, make_settings

SHAPE = {"input_shape": [1, 28, 28]}


def _post_job(
    api: ApiFixture,
    headers: dict[str, str],
    inputs: dict[str, Path],
    options: dict | None = None,
    *,
    teacher: bytes | None = None,
    positives: bytes | None = None,
):
    data = {
        "teacher": (io.BytesIO(teacher if teacher is not None else inputs["teacher"].read_bytes()), "my-teacher.pt"),
        "positives": (io.BytesIO(positives if positives is not None else inputs["positives"].read_bytes()), "pos.zip"),
        "options": json.dumps(SHAPE if options is None else options),
    }
    return api.client.post("/api/v1/jobs", headers=headers, data=data, content_type="multipart/form-data")


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["status"] == status and body["error"]["message"]
    return body["error"]


# ------------------------------------------------------------------------------------------------------- auth


def test_health_and_openapi_need_no_token(api: ApiFixture) -> None:
    health = api.client.get("/api/v1/health")
    assert health.status_code == 200 and health.get_json()["checks"] == {"metadata": "ok", "blobs": "ok", "queue": "ok"}
    assert api.client.get("/api/v1/openapi.json").get_json()["openapi"].startswith("3.1")


def test_live_answers_while_the_stores_are_unreachable(tmp_path: Path) -> None:
    """``/live`` (liveness) touches no store; ``/health`` (readiness) reports the unreachable database."""
    from service.app import create_app
    from service.context import service_context

    with socket.socket() as probe:  # a port nothing listens on: PostgreSQL refuses at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(tmp_path / "data", CONDENSE_DATABASE_URL=f"postgresql://condense@127.0.0.1:{port}/x")
    app = create_app(settings)
    client = app.test_client()
    live = client.get("/api/v1/live")
    assert live.status_code == 200 and live.get_json() == {"status": "alive"}
    assert service_context(app)._jobs is None  # no store was opened for it
    assert client.get("/api/v1/health").status_code == 503
    assert client.get("/api/v1/live").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer cdn_not-a-real-token", "Basic dXNlcjpwdw=="])
def test_missing_or_bad_token_is_401(api: ApiFixture, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = api.client.get("/api/v1/jobs", headers=headers)
    _error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_401(api: ApiFixture) -> None:
    token = api.jobs.metadata.create_token("alice", "ci")
    assert api.client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    api.jobs.metadata.revoke_token(token)
    _error(api.client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}), 401)


def test_unknown_routes_and_methods_are_json(api: ApiFixture) -> None:
    _error(api.client.get("/api/v1/nothing-here", headers=api.alice), 404)
    _error(api.client.put("/api/v1/jobs", headers=api.alice), 405)


# ----------------------------------------------------------------------------------------------- submitting


def test_multipart_submission_is_checked_stored_and_queued(api: ApiFixture, service_inputs) -> None:
    response = _post_job(api, api.alice, service_inputs, {**SHAPE, "student": "binary", "epochs": 2})
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["owner"] == "alice" and job["artifacts"] == []
    assert job["options"]["student"] == "binary" and job["options"]["epochs"] == 2
    teacher, positives = job["inputs"]["teacher"], job["inputs"]["positives"]
    assert teacher["format"] == "torchscript" and teacher["filename"] == "my-teacher.pt"
    assert teacher["input_shape"] == [1, 28, 28]
    assert positives["format"] == "zip" and positives["images"] == 12
    assert positives["classes"] == {"pullover": 4, "trouser": 4, "tshirt": 4}
    assert api.jobs.queue.pending() == 1  # one message, carrying the job id
    assert api.jobs.blobs.exists(f"uploads/alice/{teacher['upload_id']}/data")
    events = api.jobs.metadata.events_since(job["id"])
    assert [(e.kind, e.data["status"]) for e in events] == [("status", "queued")]
    listed = api.client.get("/api/v1/jobs", headers=api.alice).get_json()["jobs"]
    assert [item["id"] for item in listed] == [job["id"]]
    assert api.client.get(f"/api/v1/jobs/{job['id']}", headers=api.alice).get_json()["status"] == "queued"


def test_submission_from_uploads(api: ApiFixture, service_inputs) -> None:
    ids = {}
    for role in ("teacher", "positives"):
        response = api.client.post(
            f"/api/v1/uploads?filename={role}.bin",
            headers={**api.alice, "Content-Type": "application/octet-stream"},
            data=service_inputs[role].read_bytes(),
        )
        assert response.status_code == 201
        upload = response.get_json()["upload"]
        assert upload["size"] == service_inputs[role].stat().st_size and len(upload["sha256"]) == 64
        ids[role] = upload["id"]
    body = {"teacher_upload": ids["teacher"], "positives_upload": ids["positives"], "options": SHAPE}
    response = api.client.post("/api/v1/jobs", headers=api.alice, json=body)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["inputs"]["teacher"]["upload_id"] == ids["teacher"]
    # An upload belongs to one job; another user cannot name it at all.
    error = _error(api.client.post("/api/v1/jobs", headers=api.alice, json=body), 409)
    assert error["fields"][0]["field"] == "teacher_upload"
    error = _error(api.client.post("/api/v1/jobs", headers=api.bob, json=body), 400)
    assert "not yours" in error["fields"][0]["reason"]
    _error(api.client.post("/api/v1/jobs", headers=api.alice, json={**body, "extra": 1}), 400)
    _error(api.client.post("/api/v1/jobs", headers=api.alice, data="x", content_type="text/plain"), 415)


def test_pickled_teacher_is_415_with_export_instructions(api: ApiFixture, service_inputs) -> None:
    error = _error(_post_job(api, api.alice, service_inputs, teacher=service_inputs["pickled"].read_bytes()), 415)
    [field] = error["fields"]
    assert field["field"] == "teacher" and "pickled" in field["reason"] and "torch.jit.save" in field["reason"]
    assert "/tmp" not in json.dumps(error) and "my-teacher.pt" in field["reason"]  # no server paths
    error = _error(_post_job(api, api.alice, service_inputs, teacher=b"\x80\x04\x95 raw pickle"), 415)
    assert "Python pickle" in error["fields"][0]["reason"]
    assert api.jobs.metadata.list_jobs() == [] and api.jobs.queue.pending() == 0


def test_unsafe_or_unusable_positives_are_refused(api: ApiFixture, service_inputs) -> None:
    png = zipfile.ZipFile(service_inputs["positives"]).read(zipfile.ZipFile(service_inputs["positives"]).namelist()[0])
    traversal = io.BytesIO()
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("cat/1.png", png)
        archive.writestr("../evil.png", png)
    error = _error(_post_job(api, api.alice, service_inputs, positives=traversal.getvalue()), 422)
    assert error["fields"][0]["field"] == "positives" and "'..'" in error["fields"][0]["reason"]
    not_archive = _error(_post_job(api, api.alice, service_inputs, positives=b"just some text\n"), 415)
    assert "unrecognised format" in not_archive["fields"][0]["reason"]
    loose = io.BytesIO()
    with zipfile.ZipFile(loose, "w") as archive:
        archive.writestr("1.png", png)
        archive.writestr("cat/2.png", png)
    error = _error(_post_job(api, api.alice, service_inputs, positives=loose.getvalue()), 422)
    assert "class folder" in error["fields"][0]["reason"]
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("cat/1.png", png[:40])
    error = _error(_post_job(api, api.alice, service_inputs, positives=broken.getvalue()), 422)
    assert "cannot decode" in error["fields"][0]["reason"]
    assert api.jobs.metadata.list_jobs() == []


def test_bad_options_are_422_listing_each_field(api: ApiFixture, service_inputs) -> None:
    options = {**SHAPE, "student": "tiny", "epochs": 0, "budget_ratio": 3, "colour": "blue"}
    error = _error(_post_job(api, api.alice, service_inputs, options), 422)
    assert {f["field"] for f in error["fields"]} == {
        "options.student", "options.epochs", "options.budget_ratio", "options.colour",
    }  # fmt: skip
    malformed = api.client.post(
        "/api/v1/jobs",
        headers=api.alice,
        data={"options": "{not json", "teacher": (io.BytesIO(b"x"), "t"), "positives": (io.BytesIO(b"x"), "p")},
        content_type="multipart/form-data",
    )
    assert _error(malformed, 400)["fields"][0]["field"] == "options"
    error = _error(_post_job(api, api.alice, service_inputs, {}), 422)  # TorchScript records no input shape
    assert error["fields"][0]["field"] == "options.input_shape"
    missing = api.client.post(
        "/api/v1/jobs", headers=api.alice, data={"options": "{}"}, content_type="multipart/form-data"
    )
    assert {f["field"] for f in _error(missing, 400)["fields"]} == {"teacher"}  # positives are optional


@pytest.mark.parametrize("drop", [150, -1])
def test_max_accuracy_drop_outside_0_to_100_points_is_422(api: ApiFixture, service_inputs, drop: float) -> None:
    error = _error(_post_job(api, api.alice, service_inputs, {**SHAPE, "max_accuracy_drop": drop}), 422)
    [field] = error["fields"]
    assert field["field"] == "options.max_accuracy_drop" and "0-100" in field["reason"]
    assert api.jobs.metadata.list_jobs("alice") == []  # nothing was queued


def test_oversized_uploads_are_413_json(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "small", CONDENSE_MAX_UPLOAD_BYTES="2K", CONDENSE_MAX_TEACHER_BYTES="1M"))
    error = _error(_post_job(api, api.alice, service_inputs), 413)
    assert error["fields"][0]["field"] == "positives"
    raw = api.client.post("/api/v1/uploads", headers=api.alice, data=b"x" * 4096, content_type="application/zip")
    assert _error(raw, 413)["fields"][0]["field"] == "body"
    assert not list(api.jobs.blobs.list("uploads/"))  # nothing half-written is kept
    # Over the whole request limit (MAX_CONTENT_LENGTH): werkzeug's own 413, as JSON.
    huge = api.client.post(
        "/api/v1/jobs",
        headers=api.alice,
        data={"teacher": (io.BytesIO(b"x" * (1024**2 + 8192)), "t.pt"), "positives": (io.BytesIO(b"p"), "p.zip")},
        content_type="multipart/form-data",
    )
    assert "limit" in _error(huge, 413)["message"]


def test_per_user_limit_is_429(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "limit"), max_running=1)
    assert _post_job(api, api.alice, service_inputs).status_code == 201
    assert "the most allowed (1)" in _error(_post_job(api, api.alice, service_inputs), 429)["message"]
    assert _post_job(api, api.bob, service_inputs).status_code == 201  # the limit is per user


# -------------------------------------------------------------------------------------------- a job's life


def _queued_job(api: ApiFixture, service_inputs) -> str:
    response = _post_job(api, api.alice, service_inputs)
    assert response.status_code == 201
    return response.get_json()["id"]


def _finish_with_artifact(api: ApiFixture, job_id: str, content: bytes = b"onnx bytes") -> None:
    """What a worker does: claim, report progress, store an artefact, finish."""
    metadata, blobs = api.jobs.metadata, api.jobs.blobs
    assert metadata.claim_job(job_id, "test-worker", 60)
    metadata.append_event(job_id, "progress", {"stage": "train", "progress": 0.5})
    metadata.update_job(job_id, stage="train", progress=0.5, eta_s=3.0)
    key = f"jobs/{job_id}/artifacts/student.onnx"
    blobs.put_bytes(key, content)
    metadata.add_artifact(job_id, "student.onnx", key, len(content), hashlib.sha256(content).hexdigest())
    metadata.update_job(job_id, metrics={"student_accuracy": 0.9})
    assert metadata.finish_job(job_id, "test-worker", "succeeded")
    metadata.append_event(job_id, "status", {"status": "succeeded"})


def _parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        fields_ = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields_:
            events.append({"id": fields_.get("id"), "event": fields_["event"], "data": json.loads(fields_["data"])})
    return events


def test_users_see_only_their_own_jobs_and_files(api: ApiFixture, service_inputs) -> None:
    job_id = _queued_job(api, service_inputs)
    _finish_with_artifact(api, job_id)
    base = f"/api/v1/jobs/{job_id}"
    assert api.client.get(f"{base}/artifacts/student.onnx", headers=api.alice).status_code == 200
    for method, path in [
        ("get", base),
        ("get", f"{base}/events"),
        ("get", f"{base}/artifacts/student.onnx"),
        ("post", f"{base}/cancel"),
        ("delete", base),
    ]:
        _error(getattr(api.client, method)(path, headers=api.bob), 404)
    assert api.client.get("/api/v1/jobs", headers=api.bob).get_json() == {"jobs": []}
    assert api.client.get(base, headers=api.alice).status_code == 200  # bob's attempts changed nothing


def test_events_stream_resumes_and_ends_when_the_job_is_final(api: ApiFixture, service_inputs) -> None:
    job_id = _queued_job(api, service_inputs)
    _finish_with_artifact(api, job_id)
    response = api.client.get(f"/api/v1/jobs/{job_id}/events", headers=api.alice)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = _parse_sse(response.get_data(as_text=True))
    kinds = [(e["event"], e["data"].get("status")) for e in events]
    assert kinds == [("status", "queued"), ("progress", None), ("status", "succeeded"), ("end", "succeeded")]
    assert events[-1]["data"]["artifacts"][0]["name"] == "student.onnx" and events[-1]["id"] is None
    resumed = api.client.get(f"/api/v1/jobs/{job_id}/events", headers={**api.alice, "Last-Event-ID": events[1]["id"]})
    assert [e["event"] for e in _parse_sse(resumed.get_data(as_text=True))] == ["status", "end"]
    _error(api.client.get(f"/api/v1/jobs/{job_id}/events?after=x", headers=api.alice), 400)


def test_events_stream_of_a_running_job_is_bounded_with_keepalives(tmp_path: Path, service_inputs) -> None:
    api = build_api(make_settings(tmp_path / "sse", CONDENSE_SSE_MAX_S="1", CONDENSE_SSE_KEEPALIVE_S="0.3"))
    job_id = _queued_job(api, service_inputs)
    text = api.client.get(f"/api/v1/jobs/{job_id}/events", headers=api.alice).get_data(as_text=True)
    assert text.startswith("retry: ") and ": keep-alive" in text
    assert [e["event"] for e in _parse_sse(text)] == ["status"]  # closed after 1 s without an end: reconnect


def test_cancel(api: ApiFixture, service_inputs) -> None:
    queued = _queued_job(api, service_inputs)
    response = api.client.post(f"/api/v1/jobs/{queued}/cancel", headers=api.alice)
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert (
        "already cancelled"
        in _error(api.client.post(f"/api/v1/jobs/{queued}/cancel", headers=api.alice), 409)["message"]
    )
    running = _queued_job(api, service_inputs)
    assert api.jobs.metadata.claim_job(running, "test-worker", 60)
    response = api.client.post(f"/api/v1/jobs/{running}/cancel", headers=api.alice)
    assert response.status_code == 202
    assert response.get_json()["status"] == "running" and response.get_json()["cancel_requested"] is True
    _error(api.client.delete(f"/api/v1/jobs/{running}", headers=api.alice), 409)  # cancel, then delete


def test_delete_removes_the_job_and_its_files(api: ApiFixture, service_inputs) -> None:
    job_id = _queued_job(api, service_inputs)
    job = api.client.get(f"/api/v1/jobs/{job_id}", headers=api.alice).get_json()
    _finish_with_artifact(api, job_id)
    blobs = api.jobs.blobs
    keys = [info.key for info in blobs.list("")]
    assert any(key.startswith(f"jobs/{job_id}/") for key in keys)
    assert api.client.delete(f"/api/v1/jobs/{job_id}", headers=api.alice).status_code == 204
    remaining = [info.key for info in blobs.list("")]
    assert not any(key.startswith(f"jobs/{job_id}/") for key in remaining)
    for role in ("teacher", "positives"):
        assert not any(job["inputs"][role]["upload_id"] in key for key in remaining)
    _error(api.client.get(f"/api/v1/jobs/{job_id}", headers=api.alice), 404)
    assert api.jobs.metadata.events_since(job_id) == []
    queued = _queued_job(api, service_inputs)  # a queued job is cancelled and deleted in one go
    assert api.client.delete(f"/api/v1/jobs/{queued}", headers=api.alice).status_code == 204


def test_artifact_download(api: ApiFixture, service_inputs) -> None:
    job_id = _queued_job(api, service_inputs)
    content = bytes(range(256)) * 100
    _finish_with_artifact(api, job_id, content)
    job = api.client.get(f"/api/v1/jobs/{job_id}", headers=api.alice).get_json()
    [artifact] = job["artifacts"]
    assert artifact["url"] == f"/api/v1/jobs/{job_id}/artifacts/student.onnx" and artifact["size"] == len(content)
    response = api.client.get(artifact["url"], headers=api.alice)
    assert response.status_code == 200 and response.get_data() == content
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Condense-SHA256"] == artifact["sha256"]
    assert "attachment" in response.headers["Content-Disposition"]
    _error(api.client.get(f"/api/v1/jobs/{job_id}/artifacts/report.html", headers=api.alice), 404)
    _error(api.client.get(f"/api/v1/jobs/{job_id}/artifacts/..", headers=api.alice), 404)
    assert job["metrics"] == {"student_accuracy": 0.9}


def test_pools_lists_what_the_pool_store_has(api: ApiFixture) -> None:
    response = api.client.get("/api/v1/pools", headers=api.alice)
    assert response.status_code == 200 and isinstance(response.get_json()["pools"], list)


# ------------------------------------------------------------------------------------------------- OpenAPI


def test_openapi_documents_every_route(api: ApiFixture) -> None:
    document = api.client.get("/api/v1/openapi.json").get_json()
    assert document == openapi_document()
    assert document["openapi"] == "3.1.0" and {"title", "version"} <= set(document["info"])
    paths = document["paths"]
    routes = [rule for rule in api.app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")]
    assert routes
    for rule in routes:
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        assert path in paths, f"{rule.rule} is not in openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = paths[path].get(method.lower())
            assert operation is not None, f"{method} {path} is not in openapi.json"
            assert operation["responses"] and operation["operationId"]
            templated = re.findall(r"{([^}]+)}", path)
            declared = {p["name"] for p in paths[path].get("parameters", []) + operation.get("parameters", [])}
            assert set(templated) <= declared, f"{path}: undeclared path parameters"
    # Every $ref resolves; the options and error schemas are generated from their models, with standard bounds.
    schemas = document["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)):
        assert ref in schemas
    assert schemas["JobOptions"] == _standard(JobOptions.model_json_schema())
    drop = schemas["JobOptions"]["properties"]["max_accuracy_drop"]["anyOf"][0]
    assert (drop["minimum"], drop["maximum"]) == (0, 100)
    for name in ("Job", "Error", "FieldError", "JobOptions", "Artifact", "Upload"):
        assert schemas[name]["type"] == "object"


def test_artifacts_on_s3_redirect_to_a_presigned_url(api: ApiFixture, service_inputs, monkeypatch) -> None:
    job_id = _queued_job(api, service_inputs)
    _finish_with_artifact(api, job_id)
    signed = []

    def presigned_url(key: str, expires_s: int = 3600) -> str:
        signed.append((key, expires_s))
        return f"https://s3.example.test/bucket/{key}?X-Amz-Signature=abc"

    monkeypatch.setattr(api.jobs.blobs, "presigned_url", presigned_url)
    response = api.client.get(f"/api/v1/jobs/{job_id}/artifacts/student.onnx", headers=api.alice)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://s3.example.test/bucket/jobs/")
    assert signed == [(f"jobs/{job_id}/artifacts/student.onnx", 300)]


def test_unused_uploads_expire_and_used_ones_stay(api: ApiFixture, service_inputs) -> None:
    from service.jobs.service import purge_stale_uploads

    unused = api.client.post("/api/v1/uploads", headers=api.alice, data=b"abc", content_type="application/zip")
    unused_id = unused.get_json()["upload"]["id"]
    job_id = _queued_job(api, service_inputs)
    blobs = api.jobs.blobs
    assert purge_stale_uploads(blobs, ttl_s=3600) == 0
    assert purge_stale_uploads(blobs, ttl_s=3600, now=time.time() + 7200) == 1
    remaining = {info.key.split("/")[2] for info in blobs.list("uploads/")}
    assert unused_id not in remaining and len(remaining) == 2  # the job's teacher and positives
    assert api.client.get(f"/api/v1/jobs/{job_id}", headers=api.alice).status_code == 200


def test_an_optional_test_set_is_checked_like_the_positives(api: ApiFixture, service_inputs) -> None:
    positives = service_inputs["positives"].read_bytes()
    data = {
        "teacher": (io.BytesIO(service_inputs["teacher"].read_bytes()), "teacher.pt"),
        "positives": (io.BytesIO(positives), "pos.zip"),
        "test": (io.BytesIO(positives), "test.zip"),
        "options": json.dumps(SHAPE),
    }
    response = api.client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    job = api.jobs.metadata.get_job(response.get_json()["id"])
    test = job.spec["inputs"]["test"]
    assert test["filename"] == "test.zip" and test["check"]["images"] == 12
    assert api.jobs.blobs.exists(test["key"])
    # other classes than the positives': 422 naming the field; nothing is queued
    png = zipfile.ZipFile(service_inputs["positives"]).read(zipfile.ZipFile(service_inputs["positives"]).namelist()[0])
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("cat/1.png", png)
        archive.writestr("dog/1.png", png)
    data = {
        **data,
        "teacher": (io.BytesIO(service_inputs["teacher"].read_bytes()), "teacher.pt"),
        "positives": (io.BytesIO(positives), "pos.zip"),
        "test": (io.BytesIO(other.getvalue()), "test.zip"),
    }
    response = api.client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data")
    error = _error(response, 422)
    assert error["fields"][0]["field"] == "test" and "cat, dog" in error["fields"][0]["reason"]
    assert api.jobs.queue.pending() == 1
