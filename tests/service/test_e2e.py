"""End to end: real gunicorn on loopback, real job workers, the real compression pipeline, over HTTP with the CLI.

Inputs come from ``condense example`` (a small TorchScript CNN trained on real Fashion-MNIST classes 0-4, and a zip
of real PNG positives); the pool is a small demo pool (:func:`service.cli.demo_pool.ensure_demo_pool`, 400 packaged
real images, embedder at 32 px to be quick) put into the server's blob store before it starts. A job is submitted
with ``condense submit --wait`` (four distillation epochs), its ``student.onnx`` is downloaded and run in ONNX Runtime
on the held-out positives, and its accuracy must be the one ``report.json`` states.

Two deployments, the same test:

- ``local``: ``condense serve`` with nothing but a data folder -- SQLite metadata, local blobs, the SQLite Huey
  queue, one worker; the first admin and its token are made by ``serve`` (read from ``<data dir>/first-token``);
  Ctrl-C stops it cleanly.
- ``scale-out``: PostgreSQL for metadata, Redis as the broker, moto's S3 server for blobs (all on loopback, from
  ``tests/servers.py``), gunicorn, and TWO ``condense worker`` processes with scratch folders of their own (as on two
  machines). Two jobs are submitted at once: both succeed, each on a different worker, and both workers stay alive.
  Missing servers skip the test -- or fail it with ``CONDENSE_REQUIRE_SERVERS=1`` (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
import pytest

from pu_mining.pool import PoolStore
from pu_mining.positives import load_positives, split_holdout
from service.cli import main
from service.cli.client import Client
from service.cli.demo_pool import DEMO_POOL, demo_pool_config, ensure_demo_pool
from service.pipeline.onnx_metadata import read_onnx_metadata
from storage import LocalBlobStore, open_blob_store, open_metadata_store
from tests.fashion_mnist import task_images
from tests.servers import free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.servers]

REPO = Path(__file__).resolve().parents[2]
POOL_SIZE = 400
START_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 240.0
EPOCHS = 20


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``condense example`` made small: a teacher trained on 4,000 images, 20 positives per class, and a demo pool
    of 400 images in a local blob store (copied into each deployment's store)."""
    folder = tmp_path_factory.mktemp("e2e-inputs")
    assert main(["example", str(folder / "ex"), "--images", "4000", "--per-class", "20", "--quiet"]) == 0
    blobs = LocalBlobStore(folder / "pool-blobs")
    store = PoolStore(blobs, cache_dir=folder / "pool-cache")
    assert ensure_demo_pool(store, size=POOL_SIZE, config=demo_pool_config(embedder_resolution=32))
    assert not ensure_demo_pool(store)  # it exists: nothing to do
    return {"teacher": folder / "ex" / "teacher.pt", "positives": folder / "ex" / "positives.zip", "pool": blobs.root}


def _copy_pool(source_root: Path, blob_url: str) -> None:
    """Put the prebuilt pool's blobs into the deployment's blob store (as ``condense pool demo`` would have)."""
    source = LocalBlobStore(source_root)
    with open_blob_store(blob_url) as target:
        for info in source.list("pools/"):
            target.put_file(info.key, source.local_path(info.key))


@dataclass
class Deployment:
    """A running service: its URL, an API token, its metadata URL and the processes (with their logs)."""

    url: str
    token: str
    database_url: str
    root: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-6000:]}" for name in self.processes)


def _child_env(settings: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a service process: this one's without CONDENSE_* settings, plus ``settings``."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("CONDENSE_")}
    return {**base, **settings, **extra, "PYTHONPATH": str(REPO)}


def _start(deployment: Deployment, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    with (deployment.root / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deployment.processes[name] = process
    return process


def _wait_until(deployment: Deployment, what: str, check, timeout: float = START_TIMEOUT_S) -> None:
    def dead() -> str | None:
        exited = [name for name, process in deployment.processes.items() if process.poll() is not None]
        return f"not ready (exited: {', '.join(exited)})" if exited else None

    wait_until(check, what, timeout, 0.2, give_up=dead, details=deployment.logs)


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/api/v1/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(process: subprocess.Popen, sig: int, timeout: float = 40.0) -> int:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def _settings(root: Path, port: int) -> dict[str, str]:
    """Settings shared by both deployments: a data folder, loopback, leases long enough for real work on busy CPUs."""
    return {
        "CONDENSE_DATA_DIR": str(root / "data"),
        "CONDENSE_BIND": f"127.0.0.1:{port}",
        "CONDENSE_WEB_WORKERS": "1",
        "CONDENSE_WEB_THREADS": "4",
        "CONDENSE_LEASE_S": "30",
        "CONDENSE_POLL_S": "0.5",
        "CONDENSE_REAPER_INTERVAL_S": "5",
        "CONDENSE_SSE_KEEPALIVE_S": "1",
        "CONDENSE_LOG_LEVEL": "INFO",
    }


@contextlib.contextmanager
def _local(root: Path, inputs: dict[str, Path]) -> Iterator[Deployment]:
    port = free_port()
    settings = {**_settings(root, port), "CONDENSE_WORKERS": "1"}  # the demo pool on (the default): found, skipped
    data = root / "data"
    _copy_pool(inputs["pool"], str(data / "blobs"))
    deployment = Deployment(f"http://127.0.0.1:{port}", "", f"sqlite:///{data}/condense.db", root)
    serve = _start(deployment, "serve", [sys.executable, "-m", "service.cli", "serve"], _child_env(settings))
    try:
        _wait_until(deployment, "condense serve", lambda: _healthy(deployment.url))
        token_file = data / "first-token"
        deployment.token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert deployment.token in deployment.log("serve")  # printed once, on the console
        assert "building the demo pool" not in deployment.log("serve")  # it existed
        yield deployment
    finally:
        status = _stop(serve, signal.SIGINT)  # Ctrl-C
        print(deployment.logs()[-4000:])
    assert status == 0, deployment.logs()


@contextlib.contextmanager
def _scale_out(
    root: Path, inputs: dict[str, Path], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    database_url = request.getfixturevalue("postgres_url")
    broker_url = request.getfixturevalue("redis_url")
    s3 = request.getfixturevalue("s3_env")  # credentials in os.environ, passed on to the children
    bucket = request.getfixturevalue("s3_bucket")
    port = free_port()
    settings = {
        **_settings(root, port),
        "CONDENSE_DATABASE_URL": database_url,
        "CONDENSE_BROKER_URL": broker_url,
        "CONDENSE_BLOB_URL": f"s3://{bucket}/condense?endpoint_url={s3.endpoint_url}",
        "CONDENSE_CHECKPOINT_SYNC_S": "5",
    }
    _copy_pool(inputs["pool"], settings["CONDENSE_BLOB_URL"])
    # The user and token, made with the CLI as an operator would (settings from the environment).
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    capsys = request.getfixturevalue("capsys")
    assert main(["user", "add", "ci", "--max-running", "4"]) == 0
    assert main(["token", "create", "ci", "--label", "e2e"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    deployment = Deployment(f"http://127.0.0.1:{port}", token, database_url, root)
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
    try:
        _start(deployment, "gunicorn", gunicorn, _child_env(settings))
        for name in ("worker-a", "worker-b"):  # two machines: scratch folders of their own, one CPU thread each
            env = _child_env(settings, CONDENSE_WORK_DIR=str(root / name), OMP_NUM_THREADS="1")
            _start(deployment, name, [sys.executable, "-m", "service.cli", "worker"], env)
        _wait_until(deployment, "gunicorn", lambda: _healthy(deployment.url))
        for name in ("worker-a", "worker-b"):
            _wait_until(deployment, name, lambda name=name: "waiting for jobs" in deployment.log(name))
        yield deployment
    finally:
        for name, process in deployment.processes.items():
            _stop(process, signal.SIGTERM if name == "gunicorn" else signal.SIGINT)
        print(deployment.logs()[-4000:])


def _check_student(out: Path, positives: Path) -> dict:
    """Run the downloaded ONNX student on the held-out positives; its accuracy must be the report's."""
    report = json.loads((out / "report.json").read_text())
    options = report["job"]["options"]
    held_out = split_holdout(load_positives(positives, (1, 28, 28)), options["holdout_fraction"], options["seed"])[1]
    assert report["evaluation"]["held_out"]["images"] == len(held_out) > 0
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: held_out.images.numpy()}
    predicted = session.run(None, feed)[0].argmax(1)
    accuracy = float((predicted == held_out.labels.numpy()).mean())
    # The report measured the PyTorch student before export; the export was verified to agree with it.
    assert accuracy == pytest.approx(report["student"]["accuracy"], abs=1e-6), (accuracy, report["summary"])
    # The default student is sized by its latency measured on the worker (auto: slim or ghost).
    sizing = report["student"]["sizing"]
    assert sizing["family"] in ("slim", "ghost") and "auto chose" in sizing["reason"], sizing
    assert report["student"]["macs"] < report["teacher"]["macs"]
    assert report["manifest"]["pool"]["name"] == DEMO_POOL and report["mining"]["pool_items"] > 0
    # Real test images: four epochs on a few hundred images is no benchmark, but it must have learnt something.
    test_images, test_labels = task_images("test", 1000)
    test_feed = {session.get_inputs()[0].name: test_images.numpy()}
    test_accuracy = float((session.run(None, test_feed)[0].argmax(1) == test_labels.numpy()).mean())
    assert test_accuracy > 0.25, f"no better than chance (0.2): {test_accuracy:.2%}"
    print(f"student: held-out accuracy {accuracy:.2%} (report {report['student']['accuracy']:.2%}), "
          f"{test_accuracy:.2%} on 1,000 Fashion-MNIST test images; stages {report['stages_s']}")  # fmt: skip
    return report


def _submit(deployment: Deployment, inputs: dict[str, Path], *extra: str) -> list[str]:
    return [
        "submit", "--server", deployment.url, "--token", deployment.token, "--teacher", str(inputs["teacher"]),
        "--positives", str(inputs["positives"]), "--input-shape", "1,28,28", "--epochs", str(EPOCHS), *extra,
    ]  # fmt: skip


def _worker_pid(database_url: str, job_id: str) -> int:
    with open_metadata_store(database_url) as metadata:
        job = metadata.get_job(job_id)
    assert job is not None and job.worker_id
    return int(job.worker_id.split(":")[1])  # host:pid:random


@pytest.mark.parametrize("mode", ["local", "scale-out"])
def test_a_real_job_end_to_end(mode, inputs, tmp_path, request, monkeypatch, capsys) -> None:
    started = time.monotonic()
    context = _local(tmp_path, inputs) if mode == "local" else _scale_out(tmp_path, inputs, request, monkeypatch)
    with context as deployment:
        ready = time.monotonic()
        other = None
        if mode == "scale-out":  # a second job first, so that both workers have one
            assert main([*_submit(deployment, inputs), "--json"]) == 0
            other = json.loads(capsys.readouterr().out)["id"]
        out = tmp_path / "result"
        code = main([*_submit(deployment, inputs, "--wait", "--out", str(out), "--json", "--timeout", "240")])
        captured = capsys.readouterr()
        assert code == 0, f"{captured.err}\n{deployment.logs()}"
        result = json.loads(captured.out)
        job = result["job"]
        assert job["status"] == "succeeded" and sorted(Path(p).name for p in result["downloaded"]) == [
            "report.html", "report.json", "student.onnx",
        ]  # fmt: skip
        report = _check_student(out, inputs["positives"])
        assert job["metrics"]["student_accuracy"] == report["summary"]["student_accuracy"]
        # The file describes itself: classes in output order, input, pixel range, version and job.
        meta = read_onnx_metadata(out / "student.onnx")
        assert json.loads(meta["condense.class_names"]) == report["evaluation"]["class_names"]
        assert json.loads(meta["condense.input_shape"]) == [1, 28, 28] and meta["condense.job_id"] == job["id"]
        assert json.loads(meta["condense.pixel_range"]) == [0, 1] and meta["condense.version"]
        if mode == "scale-out":
            client = Client(deployment.url, deployment.token)
            second = client.wait(other, timeout_s=JOB_TIMEOUT_S)
            assert second["status"] == "succeeded", (second, deployment.logs())
            assert main(["download", other, "--server", deployment.url, "--token", deployment.token,
                         "--out", str(tmp_path / "other")]) == 0  # fmt: skip
            _check_student(tmp_path / "other", inputs["positives"])
            pids = {_worker_pid(deployment.database_url, job_id) for job_id in (job["id"], other)}
            workers = {deployment.processes[name].pid for name in ("worker-a", "worker-b")}
            assert pids == workers, "the two jobs should have run on the two workers, one each"
            assert all(deployment.processes[name].poll() is None for name in ("worker-a", "worker-b"))
        finished = time.monotonic()
    print(f"e2e {mode}: start {ready - started:.1f} s, jobs {finished - ready:.1f} s, "
          f"stop {time.monotonic() - finished:.1f} s")  # fmt: skip
