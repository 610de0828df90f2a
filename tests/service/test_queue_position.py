"""A queued job says how many queued jobs (of every user) are ahead of it: in the API's job view, on the job page,
and in the CLI's queue line."""

from __future__ import annotations

import io

from service.cli.client import SseEvent
from service.cli.job_progress import JobProgressBar
from tests.service.conftest import ApiFixture
from tests.service.test_web import _api_job, _sign_in


def test_queue_position_in_the_view_and_the_page(api: ApiFixture, service_inputs) -> None:
    first = _api_job(api, api.alice, service_inputs)
    second = _api_job(api, api.bob, service_inputs)  # another user's job counts too
    third = _api_job(api, api.alice, service_inputs)
    views = {
        job_id: api.client.get(f"/api/v1/jobs/{job_id}", headers=api.alice).get_json() for job_id in (first, third)
    }
    assert views[first]["queue_position"] == 0 and views[third]["queue_position"] == 2
    assert api.client.get(f"/api/v1/jobs/{second}", headers=api.bob).get_json()["queue_position"] == 1
    assert api.jobs.metadata.claim_job(first, "test-worker", 60)
    assert api.client.get(f"/api/v1/jobs/{first}", headers=api.alice).get_json()["queue_position"] is None
    page = _sign_in(api, api.alice).get(f"/jobs/{third}").get_data(as_text=True)
    assert 'id="job-queue">1 job ahead<' in page


def test_the_cli_shows_the_jobs_ahead() -> None:
    stream = io.StringIO()
    bar = JobProgressBar(stream, tty=False, tick_s=None)
    bar.submitted({"id": "j1", "queue_position": 3})
    bar(SseEvent(1, "status", {"status": "queued"}))
    assert "waiting for a worker (3 ahead)" in bar.render()
