"""Job workers for real: a SQLite Huey queue, worker subprocesses (``python -m service.cli worker``), the test-double
pipeline (``tests/service/fake_pipeline.py`` through ``CONDENSE_PIPELINE``), and faults: SIGKILL mid-job, cancel,
a pipeline error, a graceful stop, giving up after too many lost workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.context import service_context
from service.jobs.queue import open_queue
from service.jobs.worker import Worker
from service.settings import Settings
from storage import Job, MetadataStore, open_blob_store, open_metadata_store
from tests.clock import FakeClock
from tests.service.conftest import service_env
from tests.waiting import wait_until

pytestmark = pytest.mark.servers  # job worker processes, and Redis

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "tests.service.fake_pipeline:run_compression"


class Service:
    """The stores and queue of one data folder, as the web app sees them, and worker subprocesses on it."""

    def __init__(self, root: Path, *, clock: FakeClock | None = None, **extra: str) -> None:
        self.root = root
        self.env = service_env(root, CONDENSE_PIPELINE=PIPELINE, **extra)
        self.settings = Settings.from_env(self.env)
        self.metadata: MetadataStore = open_metadata_store(self.settings.database_url, clock=clock)
        self.blobs = open_blob_store(self.settings.blob_url)
        self.queue = open_queue(self.settings.broker_url)
        self.metadata.create_user("alice", max_running_jobs=10)
        self.processes: list[subprocess.Popen] = []

    def start_worker(self, name: str, **extra: str) -> subprocess.Popen:
        env = {**os.environ, **self.env, **extra, "PYTHONPATH": str(REPO)}
        log = (self.root / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def submit(self, control: dict[str, Any]) -> str:
        """A job whose teacher file tells the test pipeline what to do (the API's checks are tested elsewhere)."""
        inputs = {}
        for role, content in (("teacher", json.dumps(control).encode()), ("positives", b"positives")):
            upload_id = uuid.uuid4().hex
            key = f"uploads/alice/{upload_id}/data"
            self.blobs.put_bytes(key, content)
            inputs[role] = {"upload_id": upload_id, "key": key, "filename": f"{role}.bin", "size": len(content)}
        job = self.metadata.create_job("alice", {"version": 1, "options": {"student": "adder"}, "inputs": inputs})
        self.queue.enqueue(job.id)
        return job.id

    def job(self, job_id: str) -> Job:
        job = self.metadata.get_job(job_id)
        assert job is not None
        return job

    def wait(self, job_id: str, predicate: Callable[[Job], bool], timeout: float = 20.0) -> Job:
        def logs() -> str:
            return f"{self.job(job_id)}\n" + "\n".join(
                p.read_text(errors="replace")[-3000:] for p in self.root.glob("*.log")
            )

        return wait_until(
            lambda: job if predicate(job := self.job(job_id)) else None,
            f"job {job_id}",
            timeout,
            interval=0.1,
            details=logs,
        )

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self.queue.close()
        self.metadata.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One data folder with one worker subprocess, shared by the tests that need a plain running worker."""
    service = Service(tmp_path_factory.mktemp("worker-service"), CONDENSE_NUM_THREADS="3")
    service.start_worker("worker")
    yield service
    service.close()


def _events(service: Service, job_id: str) -> list[tuple[str, dict]]:
    return [(event.kind, event.data) for event in service.metadata.events_since(job_id)]


def test_job_runs_to_succeeded_and_its_artifacts_download(service: Service) -> None:
    job_id = service.submit({"mode": "ok", "steps": 3})
    job = service.wait(job_id, lambda j: j.is_final)
    assert job.status == "succeeded", job.error
    assert job.progress == 1.0 and job.attempts == 1
    assert job.metrics["student_accuracy"]["value"] == 0.9 and job.metrics["nan_is_dropped"] is None
    assert job.metrics["num_threads"] == 3  # CONDENSE_NUM_THREADS, passed to the pipeline
    statuses = [data["status"] for kind, data in _events(service, job_id) if kind == "status"]
    assert statuses == ["running", "succeeded"]
    assert any(kind == "progress" and data["stage"] == "train" for kind, data in _events(service, job_id))
    artifacts = {a.name: a for a in service.metadata.list_artifacts(job_id)}
    assert set(artifacts) == {"student.onnx", "report.json", "report.html"}
    # Downloaded through the API, as a user would.
    app = create_app(service.settings)
    token = service_context(app).jobs.metadata.create_token("alice")
    response = app.test_client().get(
        f"/api/v1/jobs/{job_id}/artifacts/student.onnx", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.get_data() == b"not really onnx " + bytes(range(256)) * 4
    assert response.headers["X-Condense-SHA256"] == artifacts["student.onnx"].sha256
    service_context(app).close()
    # A finished job leaves no scratch files or checkpoint blobs behind.
    assert not (service.settings.work_dir / job_id).exists()
    assert not list(service.blobs.list(f"jobs/{job_id}/checkpoints"))


def test_cancel_stops_a_running_job_within_seconds(service: Service) -> None:
    job_id = service.submit({"mode": "loop", "step_s": 0.05})
    service.wait(job_id, lambda j: j.status == "running" and (j.progress or 0) > 0)
    service.metadata.request_cancel(job_id)
    requested = time.monotonic()
    job = service.wait(job_id, lambda j: j.is_final, timeout=10)
    assert job.status == "cancelled" and time.monotonic() - requested < 3.0
    assert job.error == "cancelled by the user"
    assert not (service.settings.work_dir / job_id).exists()


def test_a_pipeline_value_error_fails_the_job_with_its_message(service: Service) -> None:
    job_id = service.submit({"mode": "fail"})
    job = service.wait(job_id, lambda j: j.is_final)
    assert job.status == "failed"
    assert job.error == "positives.bin: class 'cat' has no images (test)"  # the server's path replaced
    crash = service.submit({"mode": "crash"})
    job = service.wait(crash, lambda j: j.is_final)
    assert job.status == "failed" and job.error.startswith("internal error (RuntimeError)")


def test_sigkill_mid_job_is_requeued_and_resumed_by_another_worker(tmp_path: Path) -> None:
    """Worker A is killed mid-job; the reaper re-queues the job and worker B -- with its own scratch folder, as on
    another machine -- resumes it from the checkpoints A mirrored to blob storage."""
    service = Service(tmp_path)
    try:
        first = service.start_worker("worker-a", CONDENSE_WORK_DIR=str(tmp_path / "machine-a"))
        job_id = service.submit({"mode": "ok", "steps": 40, "step_s": 0.1})
        manifest = f"jobs/{job_id}/checkpoints.json"
        service.wait(job_id, lambda j: (j.progress or 0) >= 0.15 and service.blobs.exists(manifest))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert service.job(job_id).status == "running"  # until its lease runs out
        service.start_worker("worker-b", CONDENSE_WORK_DIR=str(tmp_path / "machine-b"))
        job = service.wait(job_id, lambda j: j.is_final, timeout=40)
        assert job.status == "succeeded", job.error
        assert job.attempts == 2
        assert job.metrics["resumed_from"] >= 4  # not from scratch
        requeued = [d for k, d in _events(service, job_id) if k == "status" and d["status"] == "queued"]
        assert requeued and "stopped answering" in requeued[0]["message"]
    finally:
        service.close()


def test_a_stopped_worker_puts_its_job_back_without_losing_an_attempt(tmp_path: Path) -> None:
    service = Service(tmp_path)
    try:
        worker = service.start_worker("worker")
        job_id = service.submit({"mode": "loop", "step_s": 0.05})
        service.wait(job_id, lambda j: j.status == "running" and (j.progress or 0) > 0)
        worker.send_signal(signal.SIGINT)  # Ctrl-C / a deploy: stop now, resume later
        assert worker.wait(timeout=15) == 0
        job = service.job(job_id)
        assert job.status == "queued" and job.metrics["requeued_on_shutdown"] == 1
        assert service.queue.pending() >= 1
    finally:
        service.close()


def _check_heartbeat(service: Service, max_age_s: float) -> subprocess.CompletedProcess:
    """``condense worker --check-heartbeat MAX_AGE_S`` as a probe runs it: a new process with the worker's settings."""
    env = {**os.environ, **service.env, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "service.cli", "worker", "--check-heartbeat", str(max_age_s)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_the_heartbeat_file_follows_the_work_loop_and_the_probe_reads_it(tmp_path: Path) -> None:
    """Touched while the worker waits and while a job runs; a job step that never returns stops the touches (while
    the monitor thread still renews the job's lease), and the probe then fails."""
    beat = tmp_path / "probe" / "worker-alive"
    service = Service(tmp_path, CONDENSE_WORKER_HEARTBEAT_FILE=str(beat), CONDENSE_WORKER_HEARTBEAT_S="0.2")

    def touched_again() -> None:
        before = beat.stat().st_mtime_ns
        wait_until(lambda: beat.stat().st_mtime_ns > before, "a touch of the heartbeat file", timeout=10)

    def untouched_for(seconds: float) -> bool:
        before = beat.stat().st_mtime_ns
        time.sleep(seconds)
        return beat.stat().st_mtime_ns == before

    try:
        missing = _check_heartbeat(service, 30)
        assert missing.returncode == 1 and "no heartbeat file" in missing.stderr
        service.start_worker("worker")
        wait_until(beat.exists, "the heartbeat file", timeout=30)
        touched_again()  # waiting for jobs
        alive = _check_heartbeat(service, 30)
        assert alive.returncode == 0, alive.stderr
        job_id = service.submit({"mode": "loop", "step_s": 0.05})
        service.wait(job_id, lambda j: j.status == "running" and (j.progress or 0) > 0)
        touched_again()  # during the job: the loop's thread is in the pipeline, which checks should_stop
        assert service.job(job_id).status == "running"
        service.metadata.request_cancel(job_id)
        assert service.wait(job_id, lambda j: j.is_final).status == "cancelled"

        hung = service.submit({"mode": "hang", "hang_s": 120})
        service.wait(hung, lambda j: j.status == "running")
        wait_until(lambda: untouched_for(1.0), "the touches to stop", timeout=20)
        lease = service.job(hung).lease_expires_at
        assert untouched_for(3.0)
        assert (service.job(hung).lease_expires_at or 0) > (lease or 0)  # the monitor thread lives on
        stuck = _check_heartbeat(service, 2.5)
        assert stuck.returncode == 1 and "stuck" in stuck.stderr, stuck.stderr
        assert len(stuck.stderr.strip().splitlines()) == 1
    finally:
        service.close()


def test_reaper_gives_up_after_max_attempts_and_honours_cancels(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    service = Service(tmp_path, clock=clock, CONDENSE_MAX_ATTEMPTS="2")
    try:
        worker = Worker(service.settings, service.metadata, service.blobs, service.queue, pipeline=lambda *a, **k: {})
        lost, cancelled, alive = (service.submit({"mode": "ok"}) for _ in range(3))
        service.queue.flush()
        for attempt in range(2):  # two workers took it and vanished: their leases run out
            assert service.metadata.claim_job(lost, f"vanished-{attempt}", 1)
            clock.advance(2)
        assert service.metadata.claim_job(cancelled, "vanished", 1)
        service.metadata.request_cancel(cancelled)
        assert service.metadata.claim_job(alive, "alive", 60)
        clock.advance(2)
        assert worker.reap() == 2
        job = service.job(lost)
        assert job.status == "failed" and "gave up after 2 attempts" in job.error and "vanished-1" in job.error
        assert service.job(cancelled).status == "cancelled"
        assert service.job(alive).status == "running"  # its lease is fine
        assert service.queue.pending() == 0
    finally:
        service.close()


def test_duplicate_messages_are_dropped_and_a_student_is_required(tmp_path: Path) -> None:
    service = Service(tmp_path)
    try:
        ran: list[str] = []

        def pipeline(teacher: Path, positives: Path, options: Any, out_dir: Path, **kwargs: Any) -> dict:
            ran.append("ran")
            if teacher.read_text() != "{}":
                (out_dir / "student.onnx").write_bytes(b"onnx")
            return {}

        worker = Worker(service.settings, service.metadata, service.blobs, service.queue, pipeline=pipeline)
        job_id = service.submit({"mode": "ok"})
        worker.run_job(job_id)
        worker.run_job(job_id)  # the same id again (a re-sent message): the claim fails, nothing runs
        assert ran == ["ran"] and service.job(job_id).status == "succeeded"
        worker.run_job("f" * 32)  # no such job: dropped, no error
        nothing = service.submit({})  # the pipeline "succeeds" without writing the student
        worker.run_job(nothing)
        job = service.job(nothing)
        assert job.status == "failed" and "produced no student.onnx" in job.error
    finally:
        service.close()


def test_redis_broker_runs_a_job(tmp_path: Path) -> None:
    """The scale-out queue: the same worker on a real redis-server (Debian package) on loopback."""
    from tests.storage.conftest import free_port, unavailable

    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    service = None
    try:
        broker = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        service = Service(tmp_path, CONDENSE_BROKER_URL=broker)
        service.start_worker("worker")
        job_id = service.submit({"mode": "ok", "steps": 2})
        job = service.wait(job_id, lambda j: j.is_final)
        assert job.status == "succeeded", job.error
        # A duplicate message (re-sent while the job waited longer than a lease) is consumed and dropped.
        wait_until(lambda: service.queue.pending() == 0, "the queue to drain", 10)
    finally:
        if service is not None:
            service.close()
        redis.kill()
        redis.wait(timeout=10)
