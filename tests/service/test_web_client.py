"""The web pages through Flask's test client: sign-in, sessions and CSRF, security headers, the job form (errors
next to their fields, submission), users' isolation, cancel, and the job page's results and report table.

The same pages in a real headless Chromium: ``test_web.py``.
"""

from __future__ import annotations

import html as html_lib
import io
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.context import service_context
from service.settings import SettingsError
from service.web.forms import options_from_form
from service.web.results import ComparisonRow, comparison_rows
from tests.service.conftest import ApiFixture, build_api, make_settings
from tests.service.test_web import HEX_ID, _api_job, _csrf, _sign_in, _succeed, _token

# ----------------------------------------------------------------------------------------------------- helpers


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
