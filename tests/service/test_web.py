"""The web pages: through Flask's test client (sign-in, CSRF, isolation, form errors, submission, results), then in a
real headless Chromium driven by Selenium against the app served on loopback (submit through the form, live updates
from server-sent events, cancel, a refused field, a report.html that cannot run scripts).

The browser tests need Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them they
are skipped with the reason, unless ``CONDENSE_REQUIRE_SERVERS=1`` (CI), which makes that a failure. The worker is
simulated: the tests move the job through the metadata store (claim, progress, events, artefacts, finish) the way
``service.jobs.worker`` does.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import io
import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from service.app import create_app
from service.context import service_context
from service.settings import SettingsError
from service.web.forms import options_from_form
from service.web.results import ComparisonRow, comparison_rows
from tests.service.conftest import ApiFixture, build_api, make_settings
from tests.service.report_factory import make_report

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
WAIT_S = 15.0


# ----------------------------------------------------------------------------------------------------- helpers


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def _sign_in(api: ApiFixture, headers: dict[str, str]) -> Any:
    """A fresh test client signed in with the token in ``headers``."""
    client = api.app.test_client()
    page = client.get("/sign-in").get_data(as_text=True)
    response = client.post("/sign-in", data={"csrf_token": _csrf(page), "token": _token(headers)})
    assert response.status_code == 303 and response.headers["Location"] == "/jobs"
    return client


def _page_csrf(client: Any) -> str:
    return _csrf(client.get("/jobs").get_data(as_text=True))


def _text(fragment: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _field_error(page: str, name: str) -> str:
    """The text of the error shown next to input ``name`` ('' if none)."""
    match = re.search(rf'id="{name}-error">(.*?)</(?:ul|p)>', page, re.S)
    return _text(match.group(1)) if match else ""


def _form(inputs: dict[str, Path], csrf: str, *, teacher: bytes | None = None, **fields: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "csrf_token": csrf,
        "student": "ghost",
        "pool": "demo",
        "budget_ratio": "0.25",
        "seed": "0",
        "input_shape": "1, 28, 28",
        "teacher": (io.BytesIO(teacher if teacher is not None else inputs["teacher"].read_bytes()), "teacher.pt"),
        "positives": (io.BytesIO(inputs["positives"].read_bytes()), "positives.zip"),
    }
    data.update(fields)
    return data


def _post_form(client: Any, data: dict[str, Any]) -> Any:
    return client.post("/jobs/new", data=data, content_type="multipart/form-data")


def _api_job(api: ApiFixture, headers: dict[str, str], inputs: dict[str, Path]) -> str:
    """A job submitted through the JSON API (Bearer token), queued."""
    data = {
        "teacher": (io.BytesIO(inputs["teacher"].read_bytes()), "teacher.pt"),
        "positives": (io.BytesIO(inputs["positives"].read_bytes()), "positives.zip"),
        "options": json.dumps({"input_shape": [1, 28, 28]}),
    }
    response = api.client.post("/api/v1/jobs", headers=headers, data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


REPORT = make_report().to_dict()  # a real report (test set 95 % vs 93 % on 2,000 images), profiles replaced:
REPORT["teacher"] = {"accuracy": 0.95, "parameters": 270_000, "macs": 41_000_000, "latency": {"1": {"median_ms": 1.8}}}
REPORT["student"] = {"accuracy": 0.93, "parameters": 70_000, "macs": 10_000_000, "latency": {}}  # latency missing
HOSTILE_REPORT_HTML = (
    "<!doctype html><html><head><title>report</title></head><body><p id='probe'>static</p>"
    "<script>document.getElementById('probe').textContent = 'script ran'; document.title = 'script ran';</script>"
    "</body></html>"
)


def _store_artifact(api: ApiFixture, job_id: str, name: str, content: bytes) -> None:
    key = f"jobs/{job_id}/artifacts/{name}"
    api.jobs.blobs.put_bytes(key, content)
    api.jobs.metadata.add_artifact(job_id, name, key, len(content), hashlib.sha256(content).hexdigest())


def _succeed(api: ApiFixture, job_id: str, *, claimed: bool = False) -> None:
    """What a worker does at the end of a successful job: artefacts, metrics, finish, event."""
    metadata = api.jobs.metadata
    if not claimed:
        assert metadata.claim_job(job_id, "test-worker", 60)
    _store_artifact(api, job_id, "student.onnx", b"onnx bytes " + bytes(range(256)))
    _store_artifact(api, job_id, "report.json", json.dumps(REPORT).encode())
    _store_artifact(api, job_id, "report.html", HOSTILE_REPORT_HTML.encode())
    metadata.update_job(job_id, stage="done", progress=1.0, metrics={"teacher_accuracy": 0.92})
    metadata.append_event(job_id, "progress", {"stage": "done", "progress": 1.0, "eta_s": 0.0})
    assert metadata.finish_job(job_id, "test-worker", "succeeded")
    metadata.append_event(job_id, "status", {"status": "succeeded"})


# ------------------------------------------------------------------------------------- sign-in and sessions


def test_signed_out_visitors_are_sent_to_sign_in(api: ApiFixture) -> None:
    client = api.app.test_client()
    for path in ("/", "/jobs", "/jobs/new", f"/jobs/{'a' * 32}", f"/jobs/{'a' * 32}/results"):
        response = client.get(path)
        assert response.status_code in (302, 303) and response.headers["Location"].startswith("/sign-in"), path
    assert client.get("/jobs").headers["Location"] == "/sign-in?next=/jobs"
    assert client.get("/api/v1/jobs").status_code == 401  # no cookie, no header
    page = client.get("/sign-in")
    assert page.status_code == 200 and 'for="token"' in page.get_data(as_text=True)


def test_sign_in_refuses_bad_tokens_and_forms_without_csrf(api: ApiFixture) -> None:
    client = api.app.test_client()
    page = client.get("/sign-in?next=/jobs/new")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith("condense_session=")
    csrf = _csrf(page.get_data(as_text=True))
    bad = client.post("/sign-in", data={"csrf_token": csrf, "token": "cdn_not-a-real-token"})
    assert bad.status_code == 401
    assert "not valid" in _field_error(bad.get_data(as_text=True), "token")
    assert client.get("/jobs").status_code == 303  # still signed out
    empty = client.post("/sign-in", data={"csrf_token": csrf, "token": "  "})
    assert empty.status_code == 401 and "Paste an API token" in empty.get_data(as_text=True)
    # A good token without the CSRF field (or with another session's) is refused before it is looked at.
    assert client.post("/sign-in", data={"token": _token(api.alice)}).status_code == 400
    assert client.post("/sign-in", data={"token": _token(api.alice), "csrf_token": "forged"}).status_code == 400
    assert client.get("/jobs").status_code == 303
    # The right one signs in and goes back to the page asked for, but never to another site.
    ok = client.post("/sign-in", data={"csrf_token": csrf, "token": _token(api.alice), "next": "/jobs/new"})
    assert ok.status_code == 303 and ok.headers["Location"] == "/jobs/new"
    assert client.get("/jobs").status_code == 200
    assert _csrf(client.get("/jobs").get_data(as_text=True)) != csrf  # a fresh session after signing in
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        other = api.app.test_client()
        token = _csrf(other.get("/sign-in").get_data(as_text=True))
        response = other.post("/sign-in", data={"csrf_token": token, "token": _token(api.alice), "next": target})
        assert response.headers["Location"] == "/jobs", target


def test_the_session_cookie_is_secure_only_when_configured(api: ApiFixture, tmp_path: Path) -> None:
    assert "Secure" not in api.app.test_client().get("/sign-in").headers["Set-Cookie"]  # plain-HTTP default
    secure = build_api(make_settings(tmp_path / "https", CONDENSE_SECURE_COOKIES="1"))
    try:
        cookie = secure.app.test_client().get("/sign-in").headers["Set-Cookie"]
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        service_context(secure.app).close()
    with pytest.raises(SettingsError, match="CONDENSE_SECURE_COOKIES"):
        make_settings(tmp_path / "bad", CONDENSE_SECURE_COOKIES="sometimes")


def test_sign_out_needs_csrf_and_ends_the_session(api: ApiFixture) -> None:
    client = _sign_in(api, api.alice)
    assert client.post("/sign-out").status_code == 400
    assert client.get("/jobs").status_code == 200
    response = client.post("/sign-out", data={"csrf_token": _page_csrf(client)})
    assert response.status_code == 303 and response.headers["Location"] == "/sign-in"
    assert client.get("/jobs").status_code == 303
    assert client.get("/api/v1/jobs").status_code == 401


def test_a_revoked_token_signs_the_browser_out(api: ApiFixture) -> None:
    token = api.jobs.metadata.create_token("alice", "browser")
    client = _sign_in(api, {"Authorization": f"Bearer {token}"})
    assert client.get("/jobs").status_code == 200 and client.get("/api/v1/jobs").status_code == 200
    api.jobs.metadata.revoke_token(token)
    response = client.get("/jobs")
    assert response.status_code == 303 and response.headers["Location"].startswith("/sign-in")
    assert "no longer valid" in client.get("/sign-in").get_data(as_text=True)
    assert client.get("/api/v1/jobs").status_code == 401


def test_the_session_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    first, second = create_app(settings), create_app(make_settings(tmp_path / "data"))
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.as_dict()["session_key"] is None
    given = make_settings(tmp_path / "other", CONDENSE_SECRET_KEY="k" * 40)
    assert create_app(given).secret_key == "k" * 40 and given.as_dict()["session_key"] == "***"
    assert "k" * 40 not in repr(given)
    assert not (tmp_path / "other" / "secret_key").exists()
    with pytest.raises(SettingsError, match="CONDENSE_SECRET_KEY"):
        make_settings(tmp_path / "short", CONDENSE_SECRET_KEY="too-short")
    path.write_text("x\n")
    with pytest.raises(SettingsError, match="secret_key"):
        create_app(make_settings(tmp_path / "data"))
    for app in (first, second):
        service_context(app).close()


def test_pages_send_security_headers_and_serve_their_own_assets(api: ApiFixture) -> None:
    client = _sign_in(api, api.alice)
    response = client.get("/jobs/new")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere
    for asset in ("condense.css", "condense.js"):
        assert f"/assets/{asset}" in page
        served = client.get(f"/assets/{asset}")
        assert served.status_code == 200 and len(served.get_data()) > 500
        served.close()
    # Every input has a label.
    inputs = re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', page)
    assert inputs and all(f'for="{name}"' in page for name in inputs)


# --------------------------------------------------------------------------------------------- the job form


def test_form_errors_are_shown_next_to_their_fields_and_nothing_is_queued(api: ApiFixture, service_inputs) -> None:
    client = _sign_in(api, api.alice)
    csrf = _page_csrf(client)
    pickled = _post_form(client, _form(service_inputs, csrf, teacher=service_inputs["pickled"].read_bytes()))
    assert pickled.status_code == 415
    page = pickled.get_data(as_text=True)
    assert "pickle" in _field_error(page, "teacher") and "torch.jit.save" in _field_error(page, "teacher")
    assert 'aria-invalid="true" ' in page or 'aria-invalid="true">' in page
    assert '<a href="#teacher">Teacher model</a>' in page  # the summary links to the field
    assert page.count("torch.jit.save") == 2  # the reason once next to the field (plus the field's hint)
    assert 'name="positives_upload"' in page and 'name="teacher_upload"' not in page  # the refused file is not kept

    bad_options = _post_form(
        client, _form(service_inputs, csrf, budget_ratio="3", seed="-1", epochs="zero", max_accuracy_drop="150")
    )
    assert bad_options.status_code == 422
    page = bad_options.get_data(as_text=True)
    assert "0-100 percentage points" in _field_error(page, "max_accuracy_drop")
    assert "must be in (0, 1]" in _field_error(page, "budget_ratio")
    assert "between 0 and" in _field_error(page, "seed")
    assert "integer" in _field_error(page, "epochs")
    assert 'value="3"' in page  # what the user typed stays in the form
    assert '<details open id="more-options">' in page  # the refused advanced field is visible
    assert 'name="teacher_upload"' in page and 'name="positives_upload"' in page  # both files kept
    assert "options." not in _text(page) and page.count("must be in (0, 1]") == 1

    no_shape = _post_form(client, _form(service_inputs, csrf, input_shape=""))
    assert no_shape.status_code == 422 and "TorchScript" in _field_error(no_shape.get_data(as_text=True), "input_shape")
    bad_shape = _post_form(client, _form(service_inputs, csrf, input_shape="1 by 28"))
    assert "three integers" in _field_error(bad_shape.get_data(as_text=True), "input_shape")

    no_files = _post_form(client, {"csrf_token": csrf, "budget_ratio": "0.5", "input_shape": "1,28,28"})
    assert no_files.status_code == 400
    page = no_files.get_data(as_text=True)
    assert _field_error(page, "teacher") == "choose a file"  # positives are optional (the no-labels mode)

    assert api.jobs.metadata.list_jobs() == [] and api.jobs.queue.pending() == 0
    # The files sent with refused forms wait as uploads (kept for the next try; purged after the upload TTL).
    assert not any(key.key.endswith("job.json") for key in api.jobs.blobs.list("uploads/"))


def test_forms_without_the_csrf_token_are_refused(api: ApiFixture, service_inputs) -> None:
    client = _sign_in(api, api.alice)
    data = _form(service_inputs, "")
    del data["csrf_token"]
    response = _post_form(client, data)
    assert response.status_code == 400 and "did not come from this site" in response.get_data(as_text=True)
    assert _post_form(client, _form(service_inputs, "forged")).status_code == 400
    assert api.jobs.metadata.list_jobs() == [] and api.jobs.queue.pending() == 0
    job_id = _api_job(api, api.alice, service_inputs)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 400
    assert api.jobs.metadata.get_job(job_id).status == "queued"


def test_a_valid_form_queues_a_job(api: ApiFixture, service_inputs) -> None:
    client = _sign_in(api, api.alice)
    fields = {"student": "binary", "budget_ratio": "0.5", "seed": "7", "max_accuracy_drop": "0.05", "epochs": "3"}
    response = _post_form(client, _form(service_inputs, _page_csrf(client), **fields, mean="0.5", std="0.25"))
    assert response.status_code == 303, _text(response.get_data(as_text=True))[:2000]
    job_id = response.headers["Location"].removeprefix("/jobs/")
    assert HEX_ID.match(job_id)
    job = api.jobs.metadata.get_job(job_id)
    assert job.owner == "alice" and job.status == "queued" and api.jobs.queue.pending() == 1
    options = job.spec["options"]
    assert options["student"] == "binary" and options["budget_ratio"] == 0.5 and options["seed"] == 7
    assert options["input_shape"] == [1, 28, 28] and options["epochs"] == 3 and options["max_accuracy_drop"] == 0.05
    assert options["mean"] == [0.5] and options["std"] == [0.25]
    assert job.spec["inputs"]["teacher"]["filename"] == "teacher.pt"

    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="job-status" class="status status-queued">queued<' in page
    assert f'data-events-url="/api/v1/jobs/{job_id}/events?after=' in page
    assert 'id="cancel-form"' in page and "Job submitted" in page
    listing = client.get("/jobs").get_data(as_text=True)
    assert f'id="job-{job_id}"' in listing and "teacher.pt" in listing


def test_users_see_only_their_own_jobs(api: ApiFixture, service_inputs) -> None:
    job_id = _api_job(api, api.alice, service_inputs)
    alice, bob = _sign_in(api, api.alice), _sign_in(api, api.bob)
    assert alice.get(f"/jobs/{job_id}").status_code == 200
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/results", "/jobs/not-an-id"):
        response = bob.get(path)
        assert response.status_code == 404 and "Not found" in response.get_data(as_text=True), path
    assert bob.post(f"/jobs/{job_id}/cancel", data={"csrf_token": _page_csrf(bob)}).status_code == 404
    assert f"job-{job_id}" not in bob.get("/jobs").get_data(as_text=True)
    assert f"job-{job_id}" in alice.get("/jobs").get_data(as_text=True)
    # The API takes the session cookie for reads, with the same isolation; writes still need the header.
    assert bob.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert bob.get(f"/api/v1/jobs/{job_id}/events").status_code == 404
    assert alice.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"
    assert alice.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 401
    assert alice.delete(f"/api/v1/jobs/{job_id}").status_code == 401
    assert api.jobs.metadata.get_job(job_id).status == "queued"


def test_cancel_from_the_page(api: ApiFixture, service_inputs) -> None:
    client = _sign_in(api, api.alice)
    queued = _api_job(api, api.alice, service_inputs)
    response = client.post(f"/jobs/{queued}/cancel", data={"csrf_token": _page_csrf(client)})
    assert response.status_code == 303 and response.headers["Location"] == f"/jobs/{queued}"
    page = client.get(f"/jobs/{queued}").get_data(as_text=True)
    assert "Job cancelled." in page and "status-cancelled" in page and 'id="cancel-form"' not in page
    assert "data-events-url" not in page  # a final job needs no live stream
    again = client.post(f"/jobs/{queued}/cancel", data={"csrf_token": _page_csrf(client)})
    assert again.status_code == 303 and "already cancelled" in client.get(f"/jobs/{queued}").get_data(as_text=True)
    running = _api_job(api, api.alice, service_inputs)
    assert api.jobs.metadata.claim_job(running, "test-worker", 60)
    client.post(f"/jobs/{running}/cancel", data={"csrf_token": _page_csrf(client)})
    job = api.jobs.metadata.get_job(running)
    assert job.status == "running" and job.cancel_requested
    assert "Cancel requested" in client.get(f"/jobs/{running}").get_data(as_text=True)


def test_job_page_shows_results_errors_and_the_report_table(api: ApiFixture, service_inputs) -> None:
    client = _sign_in(api, api.alice)
    job_id = _api_job(api, api.alice, service_inputs)
    _succeed(api, job_id)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    for name in ("student.onnx", "report.json", "report.html"):
        assert f'href="/api/v1/jobs/{job_id}/artifacts/{name}"' in page
    table = _text(re.search(r'<table id="job-report">(.*?)</table>', page, re.S).group(1))
    assert "Accuracy" not in table  # accuracies are in the figures table, with counts and intervals
    assert "Parameters 270,000 70,000 3.9x smaller" in table and "MACs 41,000,000 10,000,000 4.1x fewer" in table
    assert "Latency (batch 1, median) 1.8 ms —" in table
    figures = _text(re.search(r'<table id="job-figures">(.*?)</table>', page, re.S).group(1))
    assert "Student accuracy test set 93.00 % 91.80 % to 94.04 % 2,000 enough images" in figures
    assert "Teacher accuracy held-out positives 95.00 %" in figures and "rough: fewer than 200 images" in figures
    assert "Agreement with the teacher held-back pool images 96.00 %" in figures and "1,200" in figures
    gate = "Quality gate: passed (test set, 2,000 images, 95 % paired interval: accuracy drop 2.00 points"
    assert gate in _text(page)
    assert client.get(f"/jobs/{job_id}/results").get_data(as_text=True).count("data-artifact=") == 3
    # The artefacts download with the session cookie; report.html may not run scripts as this site.
    report = client.get(f"/api/v1/jobs/{job_id}/artifacts/report.html")
    assert report.status_code == 200 and report.headers["Content-Security-Policy"] == "sandbox"
    report.close()
    listing = client.get("/jobs").get_data(as_text=True)
    assert f'href="/api/v1/jobs/{job_id}/artifacts/student.onnx"' in listing

    failed = _api_job(api, api.alice, service_inputs)
    assert api.jobs.metadata.claim_job(failed, "test-worker", 60)
    api.jobs.metadata.finish_job(failed, "test-worker", "failed", error="positives.zip: class 'cat' has no <images>")
    page = client.get(f"/jobs/{failed}").get_data(as_text=True)
    assert "Why it failed" in page and "class &#39;cat&#39; has no &lt;images&gt;" in page
    assert 'id="job-report"' not in page and 'id="job-artifacts"' not in page


def test_comparison_rows_take_what_the_report_has() -> None:
    flat = {
        "teacher_accuracy": 0.9,
        "student_accuracy": 0.85,
        "parameters": 1000,
        "teacher_parameters": 4000,
        "macs": 5,
        "latency": {"32": {"median_ms": 9.0}, "1": {"median_ms": 0.5}},
        "teacher_latency_ms": 2.0,
    }
    rows = comparison_rows(flat)
    assert rows == [
        ComparisonRow("Accuracy", "90.00 %", "85.00 %", "-5.00 points"),
        ComparisonRow("Parameters", "4,000", "1,000", "4.0x smaller", "good"),
        ComparisonRow("MACs", "—", "5", ""),
        ComparisonRow("Latency (batch 1, median)", "2 ms", "0.5 ms", "4.0x faster", "good"),
    ]
    nested = {"before": {"profile": {"macs": 100}}, "after": {"macs": 25, "accuracy": True}}
    assert comparison_rows(nested, {"student_accuracy": 0.5}) == [
        ComparisonRow("Accuracy", "—", "50.00 %", ""),  # a boolean is no accuracy: the metrics' value is used
        ComparisonRow("MACs", "100", "25", "4.0x fewer", "good"),
    ]
    profiled = {  # as service/pipeline/report.py writes it: profiles with per-batch latency, and a summary
        "teacher": {"parameters": None, "macs": 400, "latency": {"1": {"median_ms": 2.0}, "32": {"median_ms": 9.0}}},
        "student": {"parameters": 10, "macs": 100, "latency": {"32": {"median_ms": 3.0}}, "accuracy": None},
        "summary": {"student_accuracy": 0.7},
    }
    assert comparison_rows(profiled, {"student_accuracy": 0.75}) == [
        ComparisonRow("Accuracy", "—", "75.00 %", ""),
        ComparisonRow("Parameters", "—", "10", ""),
        ComparisonRow("MACs", "400", "100", "4.0x fewer", "good"),
        # batch 1 when measured, else the first
        ComparisonRow("Latency (batch 1, median)", "2 ms", "3 ms", "1.5x slower", "bad"),
    ]
    assert comparison_rows({"teacher": {"accuracy": float("nan")}, "notes": "x"}) == []
    assert comparison_rows(None) == []
    with pytest.raises(TypeError):
        comparison_rows(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_options_from_form_converts_and_passes_the_rest_on() -> None:
    form = {
        "student": " adder ",
        "budget_ratio": "0.5",
        "seed": "3.0",
        "epochs": "",
        "input_shape": "[3x32x32]",
        "mean": "0.4, 0.5 ,0.6",
        "std": "0.2",
        "time_budget_min": "soon",
        "ignored": "x",
    }
    assert options_from_form(form) == {
        "student": "adder",
        "budget_ratio": 0.5,
        "seed": 3.0,
        "input_shape": [3, 32, 32],
        "mean": [0.4, 0.5, 0.6],
        "std": [0.2],
        "time_budget_min": "soon",  # JobOptions reports it: "must be a finite number"
    }
    assert options_from_form({"input_shape": "1, 28, twenty"}) == {"input_shape": "1, 28, twenty"}
    with pytest.raises(TypeError):
        options_from_form([("student", "ghost")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        options_from_form({"seed": 3})


# -------------------------------------------------------------------------------- in a real headless Chromium


def _unavailable(reason: str) -> None:
    """Skip (or, with CONDENSE_REQUIRE_SERVERS=1, fail): the same rule as tests/storage/conftest.py."""
    if os.environ.get("CONDENSE_REQUIRE_SERVERS", "") == "1":
        pytest.fail(f"{reason} (CONDENSE_REQUIRE_SERVERS=1 requires the browser tests)", pytrace=False)
    pytest.skip(reason)


@dataclass
class LiveApp:
    url: str
    api: ApiFixture


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """The app on a free loopback port (werkzeug's threaded server: an open event stream holds one thread)."""
    root = tmp_path_factory.mktemp("web-live")
    settings = make_settings(root / "data", CONDENSE_SSE_MAX_S="60", CONDENSE_SSE_KEEPALIVE_S="0.2")
    api = build_api(settings, max_running=10)
    server = make_server("127.0.0.1", 0, api.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web-test-server", daemon=True)
    thread.start()
    try:
        yield LiveApp(f"http://127.0.0.1:{server.port}", api)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        service_context(api.app).close()


@pytest.fixture(scope="module")
def browser(live_app: LiveApp) -> Iterator[Any]:
    """Headless Chromium through Debian's chromedriver (never Selenium Manager), signed in as alice."""
    chromedriver = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromedriver is None or chromium is None:
        _unavailable("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install 'selenium>=4')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-proxy-server",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        driver.get(live_app.url + "/jobs")
        _wait(driver, lambda d: "/sign-in" in d.current_url)
        driver.find_element("id", "token").send_keys(_token(live_app.api.alice))
        driver.find_element("css selector", "#sign-in-form button[type=submit]").click()
        _wait(driver, lambda d: d.current_url == live_app.url + "/jobs")
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def _fill_form(driver: Any, inputs: dict[str, Path], *, teacher: Path | None = None, **fields: str) -> None:
    from selenium.webdriver.support.ui import Select

    _by_id(driver, "teacher").send_keys(str(teacher or inputs["teacher"]))
    _by_id(driver, "positives").send_keys(str(inputs["positives"]))
    values = {"input_shape": "1, 28, 28", **fields}
    for name, value in values.items():
        element = _by_id(driver, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)


def _live(driver: Any) -> str:
    return _by_id(driver, "job").get_attribute("data-live") or ""


@pytest.mark.browser
def test_browser_submits_a_job_and_follows_it_live(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, metadata = browser, live_app.api.jobs.metadata
    driver.get(live_app.url + "/jobs/new")
    _fill_form(driver, service_inputs, student="binary", budget_ratio="0.5")
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: re.search(r"/jobs/[0-9a-f]{32}$", d.current_url))
    job_id = driver.current_url.rsplit("/", 1)[-1]
    job = metadata.get_job(job_id)
    assert job.owner == "alice" and job.status == "queued" and job.spec["options"]["student"] == "binary"
    assert _by_id(driver, "job-status").text == "queued"
    _wait(driver, lambda d: _live(d) == "open")
    driver.execute_script("window.condenseMarker = 'the same page';")

    # The worker takes the job and reports progress: the page follows without a reload.
    assert metadata.claim_job(job_id, "test-worker", 60)
    metadata.append_event(job_id, "status", {"status": "running", "attempt": 1})
    metadata.update_job(job_id, stage="train", progress=0.4, eta_s=75.0)
    metadata.append_event(
        job_id, "progress", {"stage": "train", "progress": 0.4, "eta_s": 75.0, "message": "epoch 2/5"}
    )
    _wait(driver, lambda d: _by_id(d, "job-stage").text == "train" and _by_id(d, "job-status").text == "running")
    _wait(driver, lambda d: _by_id(d, "job-progress-text").text == "40.0 %")
    assert float(_by_id(driver, "job-progress").get_attribute("value")) == pytest.approx(0.4)
    assert _by_id(driver, "job-eta").text == "1:15" and _by_id(driver, "job-detail").text == "epoch 2/5"
    assert driver.find_elements("css selector", "#job-artifacts a") == []
    metadata.append_event(job_id, "progress", {"stage": "validate", "progress": 0.8, "eta_s": 5.0})
    _wait(
        driver, lambda d: _by_id(d, "job-progress-text").text == "80.0 %" and _by_id(d, "job-stage").text == "validate"
    )

    # It succeeds: the download links and the report table appear, still on the same page.
    _succeed(live_app.api, job_id, claimed=True)
    _wait(driver, lambda d: _live(d) == "ended")
    assert driver.execute_script("return window.condenseMarker") == "the same page"
    assert _by_id(driver, "job-status").text == "succeeded" and _by_id(driver, "job-progress-text").text == "100.0 %"
    assert driver.find_elements("id", "cancel-form") == []
    links = {a.text: a.get_attribute("href") for a in driver.find_elements("css selector", "#job-artifacts a")}
    assert set(links) == {"student.onnx", "report.json", "report.html"}
    assert "95.00 %" in _by_id(driver, "job-figures").text and "93.00 %" in _by_id(driver, "job-figures").text

    # The links work with the session cookie alone.
    fetched = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.arrayBuffer().then(b => done([r.status, b.byteLength,"
        " r.headers.get('x-condense-sha256')])), e => done(String(e)));",
        links["student.onnx"],
    )
    onnx = live_app.api.jobs.metadata.list_artifacts(job_id)
    sha = next(a.sha256 for a in onnx if a.name == "student.onnx")
    assert fetched == [200, 11 + 256, sha]
    # report.html opens, but its script does not run (Content-Security-Policy: sandbox).
    driver.find_element("link text", "report.html").click()
    _wait(driver, lambda d: d.current_url == links["report.html"])
    assert _by_id(driver, "probe").text == "static" and driver.title != "script ran"


@pytest.mark.browser
def test_browser_cancel_button(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, api = browser, live_app.api
    queued = _api_job(api, api.alice, service_inputs)
    driver.get(f"{live_app.url}/jobs/{queued}")
    _by_id(driver, "cancel-job").click()
    _wait(driver, lambda d: "Job cancelled." in d.find_element("css selector", ".flashes").text)
    assert _by_id(driver, "job-status").text == "cancelled" and api.jobs.metadata.get_job(queued).status == "cancelled"

    running = _api_job(api, api.alice, service_inputs)
    assert api.jobs.metadata.claim_job(running, "test-worker", 60)
    api.jobs.metadata.update_job(running, stage="train", progress=0.1)
    driver.get(f"{live_app.url}/jobs/{running}")
    _by_id(driver, "cancel-job").click()
    _wait(driver, lambda d: "Cancel requested" in d.find_element("css selector", ".flashes").text)
    assert api.jobs.metadata.get_job(running).cancel_requested
    _wait(driver, lambda d: _live(d) == "open")
    # The worker notices and stops: the page shows it without a reload.
    assert api.jobs.metadata.finish_job(running, "test-worker", "cancelled", error="cancelled by the user")
    api.jobs.metadata.append_event(running, "status", {"status": "cancelled", "error": "cancelled by the user"})
    _wait(driver, lambda d: _live(d) == "ended")
    assert _by_id(driver, "job-status").text == "cancelled"
    assert _by_id(driver, "job-error").text == "cancelled by the user"
    assert driver.find_elements("id", "cancel-job") == []


@pytest.mark.browser
def test_browser_shows_a_refused_field_next_to_it(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, api = browser, live_app.api
    before = len(api.jobs.metadata.list_jobs())
    driver.get(live_app.url + "/jobs/new")
    _fill_form(driver, service_inputs, budget_ratio="0")  # the browser allows 0 (min="0"), the options check not
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: d.find_elements("id", "budget_ratio-error"))
    assert "must be in (0, 1]" in _by_id(driver, "budget_ratio-error").text
    field = _by_id(driver, "budget_ratio")
    assert field.get_attribute("aria-invalid") == "true" and field.get_attribute("value") == "0"
    assert "budget_ratio-error" in field.get_attribute("aria-describedby")
    assert "Budget ratio" in _by_id(driver, "error-summary").text

    _fill_form(driver, service_inputs, teacher=service_inputs["pickled"], budget_ratio="0.25")
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: d.find_elements("id", "teacher-error"))
    assert "pickle" in _by_id(driver, "teacher-error").text
    assert driver.find_elements("id", "budget_ratio-error") == []
    assert len(api.jobs.metadata.list_jobs()) == before
