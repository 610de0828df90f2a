"""The web pages in a real headless Chromium driven by Selenium against the app served on loopback (submit through
the form, live updates from server-sent events, cancel, a refused field, a report.html that cannot run scripts), and
the helpers the other web tests share (sign-in, a job through the API, a simulated worker's success). The pages
through Flask's test client: ``test_web_client.py``.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them they
are skipped with the reason, unless ``CONDENSE_REQUIRE_SERVERS=1`` (CI), which makes that a failure. The worker is
simulated: the tests move the job through the metadata store (claim, progress, events, artefacts, finish) the way
``service.jobs.worker`` does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from service.context import service_context
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
