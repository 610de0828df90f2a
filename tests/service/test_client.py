"""``condense serve`` for real (gunicorn on loopback and a job worker, with the test-double pipeline), driven by the
CLI client: submit --wait with a progress bar, downloads, the quality gate, status and cancel."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from compression.metrics.intervals import decide_drop
from service.cli import main
from service.cli.client import ApiError, Client, quality_gate
from service.pipeline.report import Gate
from storage import open_metadata_store
from tests.service.conftest import service_env
from tests.waiting import wait_until

pytestmark = pytest.mark.servers  # condense serve

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = service_env(
        root,
        CONDENSE_PIPELINE="tests.service.fake_pipeline:run_compression",
        CONDENSE_BIND=f"127.0.0.1:{port}",
        CONDENSE_WEB_WORKERS="1",
        CONDENSE_WORKERS="1",
    )
    log = (root / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def healthy() -> bool:
        try:
            with opener.open(f"{url}/api/v1/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(
            healthy,
            "condense serve to answer /health",
            30,
            0.2,
            give_up=lambda: None if process.poll() is None else "it exited",
            details=lambda: (root / "serve.log").read_text(),
        )
    except AssertionError:
        process.kill()
        raise
    with open_metadata_store(f"sqlite:///{root}/condense.db") as metadata:
        metadata.create_user("ci", max_running_jobs=5)
        token = metadata.create_token("ci", "tests")
    yield {"url": url, "token": token, "root": str(root)}
    print((root / "serve.log").read_text()[-20000:])  # shown when a test fails
    process.send_signal(signal.SIGINT)  # Ctrl-C: everything stops
    try:
        assert process.wait(timeout=40) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _positives_folder(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(dest)  # our own test archive
    return dest


def test_submit_wait_downloads_and_applies_the_quality_gate(server, service_inputs, tmp_path, capsys) -> None:
    positives = _positives_folder(service_inputs["positives"], tmp_path / "positives")  # a folder: zipped on upload
    base = [
        "submit", "--server", server["url"], "--token", server["token"], "--teacher", str(service_inputs["teacher"]),
        "--positives", str(positives), "--student", "ghost", "--input-shape", "1,28,28", "--epochs", "2",
    ]  # fmt: skip
    assert main([*base, "--wait", "--out", str(tmp_path / "out"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["job"]["status"] == "succeeded" and result["gate"]["passed"] is None
    assert sorted(Path(p).name for p in result["downloaded"]) == ["report.html", "report.json", "student.onnx"]
    assert (tmp_path / "out" / "student.onnx").read_bytes().startswith(b"not really onnx")
    assert "train" in captured.err and "succeeded in" in captured.err  # the progress bar's lines
    assert result["job"]["inputs"]["positives"]["images"] == 12
    # The gate: teacher 92 %, student 90 %: a 1-point limit fails (exit 3), a 5-point one passes.
    assert main([*base, "--wait", "--out", str(tmp_path / "gate"), "--max-accuracy-drop", "1", "--quiet"]) == 3
    assert "quality gate       FAILED" in capsys.readouterr().out
    assert main([*base, "--wait", "--out", str(tmp_path / "gate"), "--max-accuracy-drop", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "quality gate       passed" in out
    # every accuracy line carries its interval and image count
    assert "student accuracy   90.00 % (95 % interval" in out and "1,000 images" in out
    # With a test set the figures are on it; the test double's test set is 20 images: too few to decide (exit 4).
    code = main([*base, "--test", str(positives), "--wait", "--out", str(tmp_path / "t"), "--max-accuracy-drop", "5"])
    out = capsys.readouterr().out
    assert code == 4 and "UNDECIDED" in out and "too few images to decide" in out
    assert "20 images; rough: fewer than 200 images" in out
    # A limit outside 0-100 points: the server's 422 naming the field, one line, exit 2.
    assert main([*base, "--max-accuracy-drop", "150", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 422" in err and "options.max_accuracy_drop" in err and len(err.splitlines()) == 1


def test_status_download_cancel_and_errors(server, service_inputs, tmp_path, capsys, monkeypatch) -> None:
    client = Client(server["url"], server["token"])
    job = client.submit(service_inputs["teacher"], service_inputs["positives"], {"input_shape": [1, 28, 28]})
    final = client.wait(job["id"], timeout_s=30)
    assert final["status"] == "succeeded"
    common = ["--server", server["url"], "--token", server["token"]]
    assert main(["status", job["id"], *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job["id"]
    assert main(["download", job["id"], *common, "--out", str(tmp_path / "dl"), "--name", "report.json"]) == 0
    assert json.loads((tmp_path / "dl" / "report.json").read_text())["student"] == "auto"  # the default student
    capsys.readouterr()
    # Cancelling a finished job: the server's 409, as one line, exit status 2.
    assert main(["cancel", job["id"], *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 409" in err and len(err.splitlines()) == 1
    with pytest.raises(ApiError) as caught:
        client.submit(service_inputs["pickled"], service_inputs["positives"], {"input_shape": [1, 28, 28]})
    assert caught.value.status == 415 and caught.value.fields[0]["field"] == "teacher"
    assert main(["status", *common[:2], "--token", "cdn_wrong"]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    monkeypatch.delenv("CONDENSE_TOKEN", raising=False)
    assert main(["status", "--server", server["url"]]) == 2
    assert "CONDENSE_TOKEN" in capsys.readouterr().err


def test_quality_gate_rules() -> None:
    # The verdict is the pipeline's (computed once, service/pipeline/report.py); the client only reads it.
    assert quality_gate({"metrics": {"teacher_accuracy": 0.9, "student_accuracy": 0.85}}).passed is None

    def verdict(limit: float, drop: float, high: float) -> dict:
        decision = decide_drop(limit, drop, high, 500, "test set")
        gate = Gate(decision.outcome, limit, drop, high, 500, "test set", decision.reason)
        return {"metrics": {"gate": gate.to_dict()}}

    assert quality_gate(verdict(5.0, 3.0, 5.0)).passed is True
    failed = quality_gate(verdict(4.0, 5.0, 6.0))
    assert failed.passed is False and failed.outcome == "failed" and "over the allowed 4" in failed.reason
    undecided = quality_gate(verdict(4.0, 3.0, 6.0))
    assert undecided.outcome == "undecided" and undecided.passed is False and "too few images" in undecided.reason
    assert quality_gate({"metrics": {"gate": {"outcome": "failed", "reason": "pipeline says no"}}}).reason == (
        "pipeline says no"
    )
