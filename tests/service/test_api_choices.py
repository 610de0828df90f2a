"""The student options through the HTTP API and the web form: 422s naming the field, the form's inputs reaching the
job, a job without positives (the no-labels mode), and a real small job with a selection run by a real worker."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from service.context import service_context
from service.jobs.worker import Worker
from tests.service.conftest import ApiFixture, build_api, make_settings
from tests.service.test_compress import job  # noqa: F401  (fixtures: the shared small job)

SHAPE = {"input_shape": [1, 28, 28]}


def _post(api: ApiFixture, inputs: dict[str, Path], options: dict, *, positives: bool = True) -> Any:
    data: dict[str, Any] = {
        "teacher": (io.BytesIO(inputs["teacher"].read_bytes()), "teacher.pt"),
        "options": json.dumps(options),
    }
    if positives:
        data["positives"] = (io.BytesIO(inputs["positives"].read_bytes()), "positives.zip")
    return api.client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data")


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"selection": "best"}, "options.selection", "default, pu, pu-half, random, dfnd"),
        ({"latency_ratio": 2}, "options.latency_ratio", "(0, 1]"),
        ({"latency_ms": 0}, "options.latency_ms", "> 0"),
        ({"student": "adder", "latency_ratio": 0.5}, "options.student", "latency budget"),
        ({"latency_batch": 8}, "options.latency_batch", "needs latency_ratio"),
        ({"quantize": "int4"}, "options.quantize", "int8"),
        ({"student": "qnn4", "quantize": "int8"}, "options.quantize", "low-bit"),
        ({"search": True}, "options.search", "binary"),
        ({"search": "yes", "student": "binary"}, "options.search", "true or false"),
        ({"student": "tiny"}, "options.student", "slim"),
    ],
)
def test_bad_student_options_are_422_naming_the_field(api: ApiFixture, service_inputs, options, field, words) -> None:
    response = _post(api, service_inputs, {**SHAPE, **options})
    assert response.status_code == 422, response.get_json()
    fields = response.get_json()["error"]["fields"]
    assert [item["field"] for item in fields] == [field] and words in fields[0]["reason"]
    assert api.jobs.metadata.list_jobs("alice") == []


def test_a_job_without_positives_is_queued_for_the_no_labels_mode(api: ApiFixture, service_inputs) -> None:
    response = _post(api, service_inputs, {**SHAPE, "class_names": ["a", "b", "c"]}, positives=False)
    assert response.status_code == 201, response.get_json()
    queued = api.jobs.metadata.get_job(response.get_json()["id"])
    assert set(queued.spec["inputs"]) == {"teacher"} and queued.spec["options"]["class_names"] == ["a", "b", "c"]


def test_a_pu_selection_without_positives_is_422(api: ApiFixture, service_inputs) -> None:
    response = _post(api, service_inputs, {**SHAPE, "selection": "pu"}, positives=False)
    assert response.status_code == 422
    [field] = response.get_json()["error"]["fields"]
    assert field["field"] == "options.selection" and "needs positives" in field["reason"]


def _signed_in_client(api: ApiFixture) -> tuple[Any, str]:
    client = api.app.test_client()
    page = client.get("/sign-in").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    token = api.alice["Authorization"].removeprefix("Bearer ")
    assert client.post("/sign-in", data={"csrf_token": csrf, "token": token}).status_code == 303
    form = client.get("/jobs/new").get_data(as_text=True)
    assert 'id="student-options"' in form and 'name="selection"' in form and 'name="quantize"' in form
    return client, re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)


def _form(inputs: dict[str, Path], csrf: str, **fields: str) -> dict[str, Any]:
    return {
        "csrf_token": csrf,
        "student": "ghost",
        "budget_ratio": "0.25",
        "input_shape": "1, 28, 28",
        "teacher": (io.BytesIO(inputs["teacher"].read_bytes()), "teacher.pt"),
        "positives": (io.BytesIO(inputs["positives"].read_bytes()), "positives.zip"),
        **fields,
    }


def test_the_form_sends_the_student_options(api: ApiFixture, service_inputs) -> None:
    client, csrf = _signed_in_client(api)
    fields = {"selection": "pu-half", "quantize": "int8", "quantize_max_loss": "1", "student": "auto"}
    response = client.post(
        "/jobs/new", data=_form(service_inputs, csrf, latency_ratio="0.5", latency_batch="32", **fields),
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    options = api.jobs.metadata.list_jobs("alice")[0].spec["options"]
    assert options["selection"] == "pu-half" and options["quantize"] == "int8" and options["student"] == "auto"
    assert options["latency_ratio"] == 0.5 and options["latency_batch"] == 32 and options["quantize_max_loss"] == 1
    searched = client.post(
        "/jobs/new", data=_form(service_inputs, csrf, student="binary", search="on"), content_type="multipart/form-data"
    )
    assert searched.status_code == 303
    assert any(queued.spec["options"]["search"] for queued in api.jobs.metadata.list_jobs("alice"))


def test_the_form_shows_a_refused_student_option_next_to_it(api: ApiFixture, service_inputs) -> None:
    client, csrf = _signed_in_client(api)
    response = client.post(
        "/jobs/new", data=_form(service_inputs, csrf, search="on"), content_type="multipart/form-data"
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and 'id="search-error"' in page and "binary" in page
    assert '<details open id="student-options">' in page


@pytest.mark.slow
def test_a_real_job_with_a_selection_through_the_http_api(job, tmp_path) -> None:  # noqa: F811
    settings = make_settings(job["data"])  # the folder whose blob store holds the small real pool
    api = build_api(settings)
    try:
        options = {**SHAPE, "epochs": 1, "selection": "pu", "quantize": "int8", "quantize_max_loss": 99}
        response = _post(api, job, options)
        assert response.status_code == 201, response.get_json()
        job_id = response.get_json()["id"]
        jobs = api.jobs
        Worker(settings, jobs.metadata, jobs.blobs, jobs.queue).run_job(job_id)
        view = api.client.get(f"/api/v1/jobs/{job_id}", headers=api.alice).get_json()
        assert view["status"] == "succeeded", view
        names = {item["name"] for item in view["artifacts"]}
        assert {"student.onnx", "student.int8.onnx", "report.json", "report.html"} <= names
        report = api.client.get(f"/api/v1/jobs/{job_id}/artifacts/report.json", headers=api.alice).get_json()
        if report is None:  # served as a download
            raw = api.client.get(f"/api/v1/jobs/{job_id}/artifacts/report.json", headers=api.alice).get_data()
            report = json.loads(raw)
        assert report["job"]["options"]["selection"] == "pu" and report["mining"]["selection"] == "pu"
        assert sum(report["mining"]["class_histogram"].values()) == report["mining"]["selected"]
        int8 = api.client.get(f"/api/v1/jobs/{job_id}/artifacts/student.int8.onnx", headers=api.alice).get_data()
        session = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:] == [1, 28, 28]
    finally:
        service_context(api.app).close()
