"""The ``condense`` CLI: one-line errors with a non-zero exit, and a working profile command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.cli import main
from tests.fashion_mnist import task_images


def test_students_lists_the_registry(capsys) -> None:
    assert main(["students", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert {"ghost_resnet56", "binary_resnet20", "adder_resnet20", "vgg16", "ghostnet"} <= names
    assert main(["students", "--family", "adder"]) == 0
    assert all(line.startswith("adder_") for line in capsys.readouterr().out.splitlines())


def test_profile_writes_a_verified_onnx_file(tmp_path, capsys) -> None:
    target = tmp_path / "student.onnx"
    argv = ["profile", "adder", "--num-classes", "5", "--input-shape", "1,28,28", "--width", "0.25"]
    assert main([*argv, "--onnx", str(target), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout holds only the JSON (exporter chatter is kept out)
    assert summary["multiplications"] < summary["additions"]  # adder layers multiply nothing
    assert summary["verification"]["passed"] and summary["verification"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "resnet99"], "unknown student 'resnet99'"),
        (["profile", "ghost", "--width", "-2"], "width must be a positive number"),
        (["profile", "ghost", "--width", "1", "--budget-ratio", "0.5"], "either width or budget"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------- condense distill


def _as_npz(path: Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    np.savez(path, x=(images[:, 0] * 255).round().to(torch.uint8).numpy(), y=labels.numpy())
    return path


@pytest.fixture(scope="module")
def distill_files(trained_teacher_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The suite's trained TorchScript teacher (tests/teachers.py), and train/val .npz files (Fashion-MNIST 0-4)."""
    folder = tmp_path_factory.mktemp("distill")
    images, labels = task_images("train", 400)
    train_labels = labels.clone()
    train_labels[100:] = -1  # most of a transfer set is unlabelled
    val_images, val_labels = task_images("test", 200)
    return {
        "teacher": trained_teacher_path,
        "train": _as_npz(folder / "train.npz", images, train_labels),
        "val": _as_npz(folder / "val.npz", val_images, val_labels),
    }


def test_distill_trains_exports_and_reports(distill_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "student.onnx"
    argv = [
        "distill", "--teacher", str(distill_files["teacher"]), "--input-shape", "1,28,28",
        "--train", str(distill_files["train"]), "--val", str(distill_files["val"]), "--student", "ghost",
        "--budget-ratio", "0.25", "--epochs", "2", "--batch-size", "32", "--out", str(out), "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    progress_stages = [line.split()[0] for line in captured.err.splitlines() if line.strip()]
    assert {"teacher", "validate", "train", "done"} <= set(progress_stages)
    assert summary["macs"] <= 0.25 * summary["teacher_macs"] and summary["stopped_reason"] == "completed"
    assert summary["verification"]["passed"] and summary["evaluated_on"] == "val"
    # The file computes what the report says: its accuracy on the validation images is the reported one.
    val = np.load(distill_files["val"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: val["x"][:, None].astype(np.float32) / 255})[0]
    assert float((logits.argmax(1) == val["y"]).mean()) == pytest.approx(summary["student_accuracy"], abs=0.006)
    assert summary["student_accuracy"] > 0.4  # two short epochs on 400 images: well above chance (0.2)


def test_distill_bad_inputs_are_one_line_errors(distill_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    base = ["distill", "--teacher", str(distill_files["teacher"]), "--input-shape", "1,28,28"]
    evil = np.empty(1, dtype=object)
    np.savez(tmp_path / "evil.npz", x=evil)
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 1, "learning_rate": 0.1}))
    cases = [
        ([*base, "--train", str(tmp_path / "evil.npz")], "unpickling"),
        ([*base, "--train", str(distill_files["train"]), "--config", str(tmp_path / "config.json")], "learning_rate"),
        ([*base, "--train", str(tmp_path / "missing.npz")], "no such file"),
        ([*base, "--train", str(distill_files["train"]), "--epochs", "0"], "epochs must be"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------------------------------------------- condense user add


def test_user_add_if_missing_leaves_an_existing_user_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    from storage import open_metadata_store
    from tests.service.conftest import make_settings, service_env

    for name, value in service_env(tmp_path / "data").items():
        monkeypatch.setenv(name, value)
    assert main(["user", "add", "dora", "--max-running", "3"]) == 0
    assert "user dora (user, at most 3" in capsys.readouterr().out
    assert main(["user", "add", "dora", "--admin", "--max-running", "7"]) == 2  # without the flag: refused
    assert "already exists" in capsys.readouterr().err
    for _ in range(2):  # a set-up script run twice
        assert main(["user", "add", "dora", "--admin", "--max-running", "7", "--if-missing"]) == 0
        assert capsys.readouterr().out.startswith("user dora exists; nothing to do (user, at most 3")
    assert main(["user", "add", "erin", "--admin", "--if-missing"]) == 0  # a missing user is created as asked
    assert "user erin (admin" in capsys.readouterr().out
    assert main(["user", "add", "bad name!", "--if-missing"]) == 2  # bad input is still an error
    with open_metadata_store(make_settings(tmp_path / "data").database_url) as metadata:
        dora = metadata.get_user("dora")
        assert dora is not None and (dora.role, dora.max_running_jobs) == ("user", 3)
        assert [user.name for user in metadata.list_users()] == ["dora", "erin"]


# --------------------------------------------------------------------------------------- operating-system errors


def test_an_unreadable_or_misplaced_path_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["submit", "--server", "http://127.0.0.1:9", "--token", "t", "--teacher", "t.pt", "--options", f"@{tmp_path}"],
         f"condense submit: failed: {tmp_path}: Is a directory"),
        (["example", str(a_file / "sub")], f"condense example: failed: {a_file / 'sub'}: Not a directory"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err == message


@pytest.mark.servers  # runs the CLI in a new Python process
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_behind_stdout_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """``condense ... > file`` on a full disk (``/dev/full`` fails every write with ENOSPC): one line, no traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "service.cli", "students", "--json"],
            stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "condense students: failed: No space left on device"
