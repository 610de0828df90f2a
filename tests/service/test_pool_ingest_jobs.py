"""Adding images to a pool as a queued job (:mod:`service.jobs.pool_ingest`): the API and the pools page queue it
(admins only, every bad request refused with its field), a real worker embeds real digits into the pool, the job
page and the pools page show the result, and a stop before the commit leaves the pool as it was."""

from __future__ import annotations

import html as html_lib
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pu_mining.pool import PoolNotFoundError, PoolStore
from pu_mining.sources import mnist_digits
from service.jobs.pool_ingest import run_pool_ingest
from service.jobs.worker import Worker
from service.options import JobCancelled
from tests.service.conftest import ApiFixture
from tests.service.test_web import _csrf, _sign_in

_IMAGES = 24


@pytest.fixture(scope="module")
def digits_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A tar.gz of real handwritten digits (PNG files in one folder)."""
    digits, _ = mnist_digits()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for index in range(_IMAGES):
            png = io.BytesIO()
            Image.fromarray(digits[index]).save(png, format="PNG")
            info = tarfile.TarInfo(f"digits/{index:03d}.png")
            info.size = png.tell()
            png.seek(0)
            archive.addfile(info, png)
    return buffer.getvalue()


@pytest.fixture
def admin(api: ApiFixture) -> dict[str, str]:
    metadata = api.jobs.metadata
    metadata.create_user("root", "admin", 2)
    return {"Authorization": f"Bearer {metadata.create_token('root')}"}


def _upload(api: ApiFixture, headers: dict[str, str], content: bytes, filename: str = "digits.tar.gz") -> str:
    response = api.client.post(f"/api/v1/uploads?filename={filename}", data=content, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["upload"]["id"]


def _ingest(api: ApiFixture, headers: dict[str, str], name: str, **body: Any) -> Any:
    return api.client.post(f"/api/v1/pools/{name}/ingest", json=body, headers=headers)


def _run(api: ApiFixture, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Run the job in a worker of this process; the job as the API shows it afterwards."""
    jobs = api.jobs
    Worker(api.settings, jobs.metadata, jobs.blobs, jobs.queue, pipeline=_no_compression).run_job(job_id)
    return api.client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()


def _no_compression(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise AssertionError("a pool-ingest job must not run the compression pipeline")


def _fields(response: Any) -> dict[str, str]:
    return {item["field"]: item["reason"] for item in response.get_json()["error"].get("fields", [])}


def test_an_admin_adds_real_images_to_a_new_pool_through_the_api(
    api: ApiFixture, admin: dict[str, str], digits_archive: bytes
) -> None:
    response = _ingest(api, admin, "digits", upload_id=_upload(api, admin, digits_archive))
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert job["kind"] == "pool_ingest" and job["pool"] == "digits" and job["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    done = _run(api, job["id"], admin)
    assert done["status"] == "succeeded", done["error"]
    result = done["metrics"]["pool_ingest"]
    assert (result["added"], result["duplicates"], result["skipped_count"], result["version"]) == (_IMAGES, 0, 0, 1)
    assert list(result["sources"]) == ["digits.tar.gz"]  # the user's file name, not the worker's path
    pools = {pool["name"]: pool for pool in api.client.get("/api/v1/pools", headers=admin).get_json()["pools"]}
    assert pools["digits"]["count"] == _IMAGES and pools["digits"]["version"] == 1
    stored = PoolStore(api.jobs.blobs).open("digits")
    assert stored.images(np.arange(3)).shape == (3, 32, 32)  # the default stored size, one channel

    # The same images again (a new upload): all exact duplicates, a new version with nothing added.
    again = _ingest(api, admin, "digits", upload_id=_upload(api, admin, digits_archive))
    result = _run(api, again.get_json()["id"], admin)["metrics"]["pool_ingest"]
    assert (result["added"], result["duplicates"]) == (0, _IMAGES)


def test_ingest_requests_are_refused_with_their_field(
    api: ApiFixture, admin: dict[str, str], digits_archive: bytes
) -> None:
    upload = _upload(api, admin, digits_archive)
    user_upload = _upload(api, api.alice, digits_archive)
    assert _ingest(api, api.alice, "digits", upload_id=user_upload).status_code == 403  # not an admin
    bad_name = _ingest(api, admin, "Digits!", upload_id=upload)
    assert bad_name.status_code == 422 and "lowercase" in _fields(bad_name)["name"]
    assert _ingest(api, admin, "digits", upload_id=upload, channels=2).status_code == 422
    assert "between" in _fields(_ingest(api, admin, "digits", upload_id=upload, image_size=4))["image_size"]
    assert _fields(_ingest(api, admin, "digits", upload_id=upload, colour=1)) == {"colour": "unknown field"}
    assert "upload_id" in _fields(_ingest(api, admin, "digits", upload_id="0" * 32))
    not_images = _ingest(api, admin, "digits", upload_id=_upload(api, admin, b"just text\n" * 50, "notes.txt"))
    assert not_images.status_code == 422 and "notes.txt" in _fields(not_images)["images"]
    assert api.client.post("/api/v1/pools/digits/ingest", data="x", headers=admin).status_code == 415

    first = _ingest(api, admin, "digits", upload_id=upload)
    assert first.status_code == 201
    second = _ingest(api, admin, "digits", upload_id=_upload(api, admin, digits_archive))
    assert second.status_code == 409 and first.get_json()["id"][:8] in _fields(second)["name"]
    assert _ingest(api, admin, "other", upload_id=upload).status_code == 409  # the upload belongs to a job now
    assert _run(api, first.get_json()["id"], admin)["status"] == "succeeded"
    changed = _ingest(api, admin, "digits", upload_id=_upload(api, admin, digits_archive), image_size=16)
    assert changed.status_code == 422 and "cannot change" in _fields(changed)["image_size"]


def test_a_stop_before_the_commit_leaves_no_pool(api: ApiFixture, admin: dict[str, str], tmp_path: Path) -> None:
    digits, _ = mnist_digits()
    archive = tmp_path / "digits.npz"
    np.savez(archive, x=digits[:300])
    response = _ingest(api, admin, "stopped", upload_id=_upload(api, admin, archive.read_bytes(), "digits.npz"))
    job = api.jobs.metadata.get_job(response.get_json()["id"])
    assert job is not None
    with pytest.raises(JobCancelled):
        run_pool_ingest(
            job,
            archive,
            api.jobs.blobs,
            cache_dir=tmp_path / "cache",
            max_files=1000,
            on_progress=lambda event: None,
            should_stop=lambda: True,
        )
    with pytest.raises(PoolNotFoundError):
        PoolStore(api.jobs.blobs).manifest("stopped")


def _text(fragment: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_the_pools_page_queues_an_ingest_and_the_job_page_shows_it(
    api: ApiFixture, admin: dict[str, str], digits_archive: bytes
) -> None:
    user = _sign_in(api, api.alice)
    user_page = user.get("/pools").get_data(as_text=True)
    assert 'id="ingest-form"' not in user_page  # the form is for admins
    client = _sign_in(api, admin)
    page = client.get("/pools").get_data(as_text=True)
    assert 'id="ingest-form"' in page
    csrf = _csrf(page)

    def post(**fields: Any) -> Any:
        return client.post("/pools", data={"csrf_token": csrf, **fields}, content_type="multipart/form-data")

    refused = post(name="Bad Name", images=(io.BytesIO(digits_archive), "digits.tar.gz"))
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert text.count("lowercase letters") == 1 and 'id="ingest-name-error"' in text  # once, next to its field
    kept = re.search(r'name="images_upload" value="([0-9a-f]{32})"', text)
    assert kept and "Kept: digits.tar.gz" in _text(text)  # the archive need not be chosen again
    assert post(name="digits").status_code == 400  # neither a file nor a kept upload
    queued = post(name="digits", images_upload=kept.group(1))
    assert queued.status_code == 303
    job_id = queued.headers["Location"].rsplit("/", 1)[-1]
    job_page = _text(client.get(f"/jobs/{job_id}").get_data(as_text=True))
    assert "Pool digits" in job_page and "Re-run" not in job_page and "Clone with changes" not in job_page
    assert client.post(f"/jobs/{job_id}/rerun", data={"csrf_token": csrf}).status_code == 409
    assert client.get(f"/jobs/new?from={job_id}").status_code == 409

    assert _run(api, job_id, admin)["status"] == "succeeded"
    job_page = _text(client.get(f"/jobs/{job_id}").get_data(as_text=True))
    assert f"Pool digits, version 1 Added {_IMAGES} images" in job_page
    pools_page = client.get("/pools").get_data(as_text=True)
    assert 'id="pool-digits"' in pools_page and f'id="ingest-{job_id}"' in pools_page
    jobs_row = re.search(rf'<tr id="job-{job_id}">(.*?)</tr>', client.get("/jobs").get_data(as_text=True), re.S)
    assert jobs_row and "pool digits" in _text(jobs_row.group(1)) and "Clone" not in jobs_row.group(1)
    assert user.post("/pools", data={"csrf_token": _csrf(user_page), "name": "x"}).status_code == 403
