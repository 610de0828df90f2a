"""The pages in a real headless Chromium at a desktop (1280x800) and a phone (390x844) viewport: no page scrolls
sideways on the phone, a refused field's reason is shown once and the chosen files survive, the job page follows a
job to its end without a reload (Started / Finished, no stale flash, curves and mining summary, a user's cancel not
shown as an error), delete / re-run / clone, API tokens, the pools list and the report's way back.

The worker is simulated as in ``test_web.py`` (the job moved through the metadata store); the pool is a real one
ingested from Fashion-MNIST images.
"""

# ruff: noqa: F811  (the live_app and browser fixtures are imported from test_web.py)
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from tests.service.test_web import (  # noqa: F401  (fixtures)
    HOSTILE_REPORT_HTML,
    LiveApp,
    _api_job,
    _by_id,
    _fill_form,
    _live,
    _store_artifact,
    _wait,
    browser,
    live_app,
)

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}

REPORT = {  # service/pipeline/report.py's layout: a student slower than its teacher, with history and mining
    "teacher": {"accuracy": 0.92, "parameters": 270_000, "macs": 41_000_000, "latency": {"1": {"median_ms": 1.0}}},
    "student": {
        "accuracy": 0.905,
        "parameters": 70_000,
        "macs": 10_000_000,
        "latency": {"1": {"median_ms": 1.2}},
        "sizing": {"family": "ghost", "chosen_by": "auto", "budget": "latency"},
    },
    "gate": {"passed": True, "reason": "accuracy drop 1.50 points"},
    "distillation": {
        "history": [
            {"epoch": 1, "train_loss": 1.2, "val_accuracy": 0.7, "val_agreement": 0.72},
            {"epoch": 2, "train_loss": 0.8, "val_accuracy": 0.85, "val_agreement": 0.88},
            {"epoch": 3, "train_loss": 0.6, "val_accuracy": 0.905, "val_agreement": 0.93},
        ],
        "best_epoch": 3,
    },
    "mining": {"pool": "demo", "pool_version": 2, "pool_items": 3500, "candidates": 900, "selected": 640},
}


def _viewport(driver: Any, name: str) -> None:
    width, height = VIEWPORTS[name]
    driver.set_window_size(width, height)
    _wait(driver, lambda d: abs(d.execute_script("return window.innerWidth") - width) <= 20)


def _text_of(driver: Any, element_id: str) -> str:
    """The element's text read in one script call (no stale element while a page is being replaced)."""
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';", element_id
    )


def _overflow(driver: Any) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return driver.execute_script(
        "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
    )


def _finish(api: Any, job_id: str, status: str = "succeeded", *, report: dict | None = None) -> None:
    metadata = api.jobs.metadata
    if metadata.get_job(job_id).status == "queued":
        assert metadata.claim_job(job_id, "test-worker", 60)
        metadata.append_event(job_id, "status", {"status": "running", "attempt": 1})
    if status == "succeeded":
        _store_artifact(api, job_id, "student.onnx", b"onnx bytes " + bytes(range(256)) * 8)
        _store_artifact(api, job_id, "report.json", json.dumps(report or REPORT).encode())
        _store_artifact(api, job_id, "report.html", HOSTILE_REPORT_HTML.encode())
        metadata.update_job(job_id, stage="done", progress=1.0, metrics={"student_accuracy": 0.905, "student": "ghost"})
        metadata.append_event(job_id, "progress", {"stage": "done", "progress": 1.0, "eta_s": 0.0})
    assert metadata.finish_job(job_id, "test-worker", status)
    metadata.append_event(job_id, "status", {"status": status})


def _ingest_pool(api: Any, tmp_path: Any) -> None:
    from pu_mining.pool import PoolConfig, PoolStore
    from pu_mining.sources import fashion_mnist

    images, _ = fashion_mnist("test")
    np.savez(tmp_path / "fashion.npz", x=images[:30])
    config = PoolConfig(image_size=28, channels=1, embedder=PoolConfig().embedder, embedder_resolution=32)
    # Named as the default pool: jobs submitted with default options are checked against the pools that exist.
    PoolStore(api.jobs.blobs).ingest("demo", [tmp_path / "fashion.npz"], config=config)


def test_no_page_scrolls_sideways_on_a_phone(live_app: LiveApp, browser: Any, service_inputs, tmp_path) -> None:
    driver, api = browser, live_app.api
    _ingest_pool(api, tmp_path)
    done = _api_job(api, api.alice, service_inputs)
    _finish(api, done)
    failed = _api_job(api, api.alice, service_inputs)
    assert api.jobs.metadata.claim_job(failed, "test-worker", 60)
    long_reason = "the teacher's output has 1000 classes but the positives have 10: " + "x" * 120
    assert api.jobs.metadata.finish_job(failed, "test-worker", "failed", error=long_reason)
    running = _api_job(api, api.alice, service_inputs)
    assert api.jobs.metadata.claim_job(running, "test-worker", 60)
    api.jobs.metadata.update_job(running, stage="distill", progress=0.4, eta_s=75.0)
    pages = [
        "/jobs",
        "/jobs/new",
        f"/jobs/{done}",
        f"/jobs/{failed}",
        f"/jobs/{running}",
        f"/jobs/new?from={done}",
        f"/jobs/{done}/report",
        "/pools",
        "/tokens",
        "/jobs/0123456789abcdef0123456789abcdef",  # the 404 page
        "/sign-in",
    ]
    try:
        for name in VIEWPORTS:
            _viewport(driver, name)
            for page in pages:
                driver.get(live_app.url + page)
                assert _overflow(driver) <= 0, f"{page} at {name} is {_overflow(driver)} px too wide"
            driver.get(live_app.url + "/jobs/new")
            _fill_form(driver, service_inputs, input_shape="3, 320, 320, 7", budget_ratio="0")  # two refusals
            _by_id(driver, "submit-job").click()
            _wait(driver, lambda d: d.find_elements("id", "error-summary"))
            assert _overflow(driver) <= 0, f"the refused form at {name} scrolls sideways"
        # The pools page lists the ingested pool, the jobs list the finished job's figures.
        driver.get(live_app.url + "/pools")
        row = _by_id(driver, "pool-demo").text
        assert "30" in row and "1" in row
        driver.get(live_app.url + "/jobs")
        row = _by_id(driver, f"job-{done}").text
        assert "90.5 %" in row and "KiB" in row and "1.2x slower" in row and "auto → ghost" in row
    finally:
        _viewport(driver, "desktop")
        finish = api.jobs.metadata.finish_job(running, "test-worker", "cancelled")
        assert finish


def test_a_refused_field_is_shown_once_and_the_files_are_kept(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, api = browser, live_app.api
    before = len(api.jobs.metadata.list_jobs())
    driver.get(live_app.url + "/jobs/new")
    _fill_form(driver, service_inputs, input_shape="1, 28", budget_ratio="0.5")
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: d.find_elements("id", "input_shape-error"))
    body = driver.find_element("tag name", "body").text
    reason = _by_id(driver, "input_shape-error").text
    assert reason and body.count(reason) == 1, body  # once, next to its field
    assert "options." not in body and "[" not in reason  # the form's own words
    assert "Input shape" in _by_id(driver, "error-summary").text
    assert _by_id(driver, "teacher-kept").text.startswith(f"Kept: {service_inputs['teacher'].name}")
    assert _by_id(driver, "positives-kept").text.startswith("Kept:")
    # Correct the field only: the files sent before are used.
    field = _by_id(driver, "input_shape")
    field.clear()
    field.send_keys("1, 28, 28")
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: re.search(r"/jobs/[0-9a-f]{32}$", d.current_url))
    job = api.jobs.metadata.get_job(driver.current_url.rsplit("/", 1)[-1])
    assert job.spec["inputs"]["teacher"]["filename"] == service_inputs["teacher"].name
    assert job.spec["inputs"]["positives"]["filename"] == service_inputs["positives"].name
    assert len(api.jobs.metadata.list_jobs()) == before + 1
    api.jobs.cancel(api.jobs.metadata.get_user("alice"), job.id)


def test_the_job_page_follows_a_job_to_its_end(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, api = browser, live_app.api
    metadata = api.jobs.metadata
    driver.get(live_app.url + "/jobs/new")
    _fill_form(driver, service_inputs)
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: re.search(r"/jobs/[0-9a-f]{32}$", d.current_url))
    job_id = driver.current_url.rsplit("/", 1)[-1]
    assert "Job submitted" in driver.find_element("css selector", ".flashes").text
    assert not _by_id(driver, "job-started").is_displayed()
    _wait(driver, lambda d: _live(d) == "open")
    driver.execute_script("window.condenseMarker = 'the same page';")
    assert metadata.claim_job(job_id, "test-worker", 60)
    metadata.append_event(job_id, "status", {"status": "running", "attempt": 1})
    _wait(driver, lambda d: _by_id(d, "job-status").text == "running")
    _wait(driver, lambda d: _by_id(d, "job-started").is_displayed() and "UTC" in _by_id(d, "job-started").text)
    assert driver.find_elements("css selector", ".flashes") == []  # the "queued" flash is gone
    metadata.append_event(job_id, "progress", {"stage": "export", "progress": 0.9, "message": "exporting"})
    _wait(driver, lambda d: _by_id(d, "job-stage").text == "export")
    _finish(api, job_id)
    _wait(driver, lambda d: _live(d) == "ended")
    _wait(driver, lambda d: _by_id(d, "job-finished").is_displayed())
    assert driver.execute_script("return window.condenseMarker") == "the same page"
    assert len(driver.find_elements("css selector", "#job-training svg.chart")) == 2
    assert "640" in _by_id(driver, "job-mining").text
    slower = driver.find_element("css selector", "#job-report .tone-bad").text
    assert "1.2x slower" in slower
    # The full report opens with a way back.
    _by_id(driver, "open-report").click()
    _wait(driver, lambda d: d.find_elements("id", "back-to-job"))
    assert _by_id(driver, "probe").text == "static"  # its script did not run
    _by_id(driver, "back-to-job").click()
    _wait(driver, lambda d: d.current_url == f"{live_app.url}/jobs/{job_id}")

    # A user's own cancel is a plain note, not an error.
    other = _api_job(api, api.alice, service_inputs)
    assert metadata.claim_job(other, "test-worker", 60)
    driver.get(f"{live_app.url}/jobs/{other}")
    _by_id(driver, "cancel-job").click()
    _wait(driver, lambda d: "Cancel requested" in d.find_element("css selector", ".flashes").text)
    _wait(driver, lambda d: _live(d) == "open")
    assert metadata.finish_job(other, "test-worker", "cancelled", error="cancelled by the user")
    metadata.append_event(other, "status", {"status": "cancelled", "error": "cancelled by the user"})
    _wait(driver, lambda d: _live(d) == "ended")
    assert driver.find_elements("css selector", ".job-error") == []
    assert _by_id(driver, "error-heading").text == "Cancelled"
    _wait(driver, lambda d: _by_id(d, "job-finished").is_displayed())


def test_delete_rerun_and_clone_with_changes(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, api = browser, live_app.api
    metadata = api.jobs.metadata
    original = _api_job(api, api.alice, service_inputs)
    _finish(api, original)
    driver.get(f"{live_app.url}/jobs/{original}")
    _by_id(driver, "rerun-job").click()
    _wait(driver, lambda d: re.search(r"/jobs/[0-9a-f]{32}$", d.current_url) and original not in d.current_url)
    rerun = metadata.get_job(driver.current_url.rsplit("/", 1)[-1])
    assert rerun.status == "queued" and rerun.spec["options"] == metadata.get_job(original).spec["options"]
    assert (
        rerun.spec["inputs"]["teacher"]["upload_id"]
        != metadata.get_job(original).spec["inputs"]["teacher"]["upload_id"]
    )

    driver.get(f"{live_app.url}/jobs/{original}")
    _by_id(driver, "clone-job").click()
    _wait(driver, lambda d: d.find_elements("id", "clone-notice"))
    assert _by_id(driver, "input_shape").get_attribute("value") == "1, 28, 28"
    budget = _by_id(driver, "budget_ratio")
    budget.clear()
    budget.send_keys("0.5")
    _by_id(driver, "submit-job").click()
    _wait(driver, lambda d: re.search(r"/jobs/[0-9a-f]{32}$", d.current_url) and original not in d.current_url)
    clone = metadata.get_job(driver.current_url.rsplit("/", 1)[-1])
    assert clone.spec["options"]["budget_ratio"] == 0.5 and clone.id != rerun.id
    assert (
        clone.spec["inputs"]["positives"]["sha256"] == metadata.get_job(original).spec["inputs"]["positives"]["sha256"]
    )

    # Delete the original: the re-run and the clone keep their own copies of the files.
    driver.get(f"{live_app.url}/jobs/{original}")
    _by_id(driver, "delete-job").click()
    _wait(driver, lambda d: d.current_url == f"{live_app.url}/jobs")
    assert metadata.get_job(original) is None and driver.find_elements("id", f"job-{original}") == []
    assert f"{original[:8]} deleted" in driver.find_element("css selector", ".flashes").text
    for job in (rerun, clone):
        assert api.jobs.blobs.exists(job.spec["inputs"]["teacher"]["key"])
        api.jobs.cancel(metadata.get_user("alice"), job.id)


def test_tokens_create_list_and_revoke(live_app: LiveApp, browser: Any) -> None:
    driver, metadata = browser, live_app.api.jobs.metadata
    driver.get(live_app.url + "/tokens")
    _by_id(driver, "label").send_keys("CI pipeline")
    _by_id(driver, "create-token").click()
    _wait(driver, lambda d: d.find_elements("id", "new-token"))
    token = _by_id(driver, "new-token").text
    assert token.startswith("cdn_") and metadata.authenticate(token).name == "alice"
    created = [t for t in metadata.list_tokens("alice") if t.label == "CI pipeline"]
    assert len(created) == 1
    row = _by_id(driver, f"token-{created[0].id}")
    assert "CI pipeline" in row.text and "active" in row.text
    _by_id(driver, f"revoke-{created[0].id}").click()
    _wait(driver, lambda d: "revoked" in _text_of(d, f"token-{created[0].id}"))  # after the page reloaded
    assert metadata.authenticate(token) is None
    driver.get(live_app.url + "/tokens")
    assert token not in driver.page_source  # shown once only
    assert metadata.authenticate(live_app.api.alice["Authorization"].removeprefix("Bearer ")) is not None


def _sign_in_as(driver: Any, live_app: LiveApp, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(live_app.url + "/sign-in")
    _by_id(driver, "token").send_keys(token)
    driver.find_element("css selector", "#sign-in-form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url == live_app.url + "/jobs")


def test_an_admin_adds_images_to_a_pool_and_follows_the_job_live(live_app: LiveApp, browser: Any, tmp_path) -> None:
    import tarfile

    from PIL import Image

    from pu_mining.sources import mnist_digits
    from service.jobs.worker import Worker

    driver, api = browser, live_app.api
    digits, _ = mnist_digits()
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in range(16):
        Image.fromarray(digits[index]).save(folder / f"{index}.png")
    archive = tmp_path / "handwritten-digits.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="digits")
    api.jobs.metadata.create_user("root", "admin", 4)
    _sign_in_as(driver, live_app, api.jobs.metadata.create_token("root"))
    try:
        _viewport(driver, "phone")
        driver.get(live_app.url + "/pools")
        assert _overflow(driver) <= 0, "the pools page with its ingest form scrolls sideways on a phone"
        _by_id(driver, "ingest-name").send_keys("Digits")  # refused: uppercase
        _by_id(driver, "ingest-images").send_keys(str(archive))
        _by_id(driver, "ingest-submit").click()
        _wait(driver, lambda d: d.find_elements("id", "ingest-name-error"))
        body = driver.find_element("tag name", "body").text
        assert body.count("lowercase letters") == 1 and _overflow(driver) <= 0
        assert _by_id(driver, "ingest-images-kept").text.startswith(f"Kept: {archive.name}")
        name = _by_id(driver, "ingest-name")
        name.clear()
        name.send_keys("digits")
        _by_id(driver, "ingest-submit").click()
        _wait(driver, lambda d: re.search(r"/jobs/[0-9a-f]{32}$", d.current_url))
        job_id = driver.current_url.rsplit("/", 1)[-1]
        assert _live(driver) in ("connecting", "open") and _overflow(driver) <= 0
        assert "digits" in _by_id(driver, "job-pool").text and not driver.find_elements("id", "rerun-job")
        jobs = api.jobs
        Worker(api.settings, jobs.metadata, jobs.blobs, jobs.queue).run_job(job_id)
        _wait(driver, lambda d: d.find_elements("id", "ingest-result"))  # no reload: the live page fetched it
        assert "Pool digits, version 1" in _by_id(driver, "ingest-result").text
        assert _by_id(driver, "ingest-added").text == "16 images" and _overflow(driver) <= 0
        driver.get(live_app.url + "/pools")
        assert "16" in _by_id(driver, "pool-digits").text and "succeeded" in _by_id(driver, f"ingest-{job_id}").text
        assert _overflow(driver) <= 0
    finally:
        _viewport(driver, "desktop")
        _sign_in_as(driver, live_app, api.alice["Authorization"].removeprefix("Bearer "))


def test_a_queued_jobs_page_follows_its_queue_position(live_app: LiveApp, browser: Any, service_inputs) -> None:
    driver, api = browser, live_app.api
    ahead = _api_job(api, api.alice, service_inputs)
    mine = _api_job(api, api.alice, service_inputs)
    position = api.jobs.view(api.jobs.metadata.get_job(mine))["queue_position"]
    assert position >= 1
    driver.get(live_app.url + f"/jobs/{mine}")
    assert _by_id(driver, "job-queue").text == f"{position} job{'s' if position != 1 else ''} ahead"
    api.jobs.cancel(api.jobs.metadata.get_user("alice"), ahead)  # no event of this job says so
    fewer = position - 1
    _wait(driver, lambda d: _text_of(d, "job-queue").strip() == f"{fewer} job{'s' if fewer != 1 else ''} ahead")
    _finish(api, mine)  # it starts: the position goes away without a reload
    _wait(driver, lambda d: not _by_id(d, "job-queue").is_displayed())
