"""``condense compress`` end to end on real images: mine a real pool, distil, export, report, resume, gate."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from pu_mining.image_files import ImageRecord
from pu_mining.pool import PoolConfig, PoolStore, RecordSource
from pu_mining.selection import default_min_selection
from pu_mining.sources import animal_mnist, mnist_digits
from service.cli import main
from service.pipeline.report import read_report
from storage import open_blob_store
from tests.fashion_mnist import task_images
from tests.teachers import TRAIN_IMAGES, FashionTeacherCNN

pytestmark = pytest.mark.slow

CLASSES = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat"]


@pytest.fixture(scope="module")
def job(trained_teacher_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The suite's trained TorchScript teacher (tests/teachers.py), a zip of class folders of PNG positives, and a
    pool in the data dir."""
    root = tmp_path_factory.mktemp("compress")
    images, labels = task_images("train", TRAIN_IMAGES)

    def archive(path: Path, images: torch.Tensor, labels: torch.Tensor, per_class: int) -> Path:
        with zipfile.ZipFile(path, "w") as zipped:
            for k, name in enumerate(CLASSES):
                for i, index in enumerate(torch.nonzero(labels == k).flatten()[:per_class].tolist()):
                    pixels = images[index, 0].mul(255).round().to(torch.uint8).numpy()
                    png = root / f"{path.stem}-{name}-{i}.png"
                    Image.fromarray(pixels).save(png)
                    zipped.write(png, f"{name}/{i}.png")
        return path

    positives = archive(root / "positives.zip", images, labels, 10)
    # a labelled test set the teacher never saw (train images past its TRAIN_IMAGES), 2 per class: tiny
    unseen, unseen_labels = task_images("train", TRAIN_IMAGES + 200)
    test = archive(root / "test.zip", unseen[TRAIN_IMAGES:], unseen_labels[TRAIN_IMAGES:], 2)

    data = root / "data"
    test_images, _ = task_images("test", 300)
    task = test_images.squeeze(1).mul(255).round().to(torch.uint8).numpy()
    digits, _ = mnist_digits()
    animals, _ = animal_mnist()

    def records(name: str, array: np.ndarray) -> RecordSource:
        return RecordSource(name, (ImageRecord(name, str(i), image) for i, image in enumerate(array)))

    store = PoolStore(open_blob_store(str(data / "blobs")), cache_dir=data / "cache")
    store.ingest(
        "demo",
        [records("task", task), records("digits", digits[:200]), records("animals", animals[:200])],
        config=PoolConfig(image_size=28, channels=1, embedder_resolution=32),
    )
    return {"teacher": trained_teacher_path, "positives": positives, "test": test, "data": data, "root": root}


@pytest.fixture
def env(job: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDENSE_DATA_DIR", str(job["data"]))
    monkeypatch.setenv("CONDENSE_BLOB_URL", str(job["data"] / "blobs"))
    monkeypatch.delenv("CONDENSE_DATABASE_URL", raising=False)


def _args(job: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "compress", "--teacher", str(job["teacher"]), "--positives", str(job["positives"]), "--pool", "demo",
        "--student", "ghost", "--epochs", "1", "--input-shape", "1,28,28", "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def test_compress_writes_a_verified_student_and_a_report(job, env, capsys) -> None:
    out = job["root"] / "out"
    code = main([*_args(job, out, "--max-accuracy-drop", "100"), "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == summary and summary["gate"]["passed"]
    typed = read_report(out / "report.json")  # the typed model reads what the pipeline wrote
    assert typed.gate is not None and typed.gate.outcome == "passed"
    # the held-out positives are the headline without a test set; every figure carries its count and interval
    held_out = report["evaluation"]["held_out"]
    assert report["evaluation"]["headline"] == "held_out_positives" and held_out["images"] == 10  # 20 % of 10 a class
    student = summary["student_accuracy"]
    assert student["n"] == 10 and student["rough"] and student["low"] <= student["value"] <= student["high"]
    assert summary["teacher_accuracy"]["value"] >= 0.5
    # agreement on pool items mining selected but held back from training
    pool = report["evaluation"]["pool"]
    assert pool["images"] == summary["held_back"] > 0 and 0 <= pool["agreement"]["value"] <= 1
    held_back = set(report["manifest"]["held_back_ids"])
    assert len(held_back) == pool["images"] and not held_back & set(report["manifest"]["mined_ids"])
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]
    # sizes: at most a quarter of the teacher's MACs; mining found pool images and recorded them
    assert report["student"]["macs"] <= 0.25 * report["teacher"]["macs"] * 1.05
    assert report["mining"]["selected"] > 0 and summary["mined"] == len(report["manifest"]["mined_ids"])
    mining = report["mining"]  # the default selection takes at least the floor for its pool
    assert mining["min_selection"] == default_min_selection(mining["pool_items"])
    removed = mining["duplicates_of_positives"] + mining["duplicates_within_selection"]
    assert mining["selected"] + mining["evaluation_from_selection"] + removed >= mining["min_selection"]
    assert report["distillation"]["transfer_set"]["positives"] == 40
    assert set(report["stages_s"]) >= {"load", "mining", "distill", "evaluate", "export", "report"}
    manifest = report["manifest"]
    assert manifest["pool"]["name"] == "demo" and len(manifest["teacher_sha256"]) == 64
    assert manifest["packages"]["torch"] == torch.__version__.split("+")[0]
    assert report["teacher"]["latency"]["1"]["median_ms"] > 0 and report["student"]["latency"]["1"]["median_ms"] > 0
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and "http://" not in html and "https://" not in html

    # run again with the same arguments: the mining result and the training checkpoint are reused
    assert main([*_args(job, out), "--json"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["manifest"]["mined_ids"] == manifest["mined_ids"]
    assert again["distillation"]["resumed_from_step"] is not None


def test_quality_gate_on_a_tiny_test_set_is_undecided_and_bad_input(job, env, capsys, tmp_path: Path) -> None:
    out = tmp_path / "gate"
    code = main(_args(job, out, "--test", str(job["test"]), "--max-accuracy-drop", "0"))
    report = json.loads((out / "report.json").read_text())
    gate = report["gate"]
    # the test set (10 images) is the headline and decides the gate; a drop's interval on 10 images is wide
    assert report["evaluation"]["headline"] == "test" and gate["images"] == 10 and gate["basis"].startswith("test set")
    assert gate["accuracy_drop_high"] > max(gate["accuracy_drop"], 0) + 5
    assert gate["outcome"] in ("failed", "undecided") and code == {"failed": 3, "undecided": 4}[gate["outcome"]]
    out_text = capsys.readouterr().out
    assert "on the test set" in out_text and "10 images; rough: fewer than 200 images" in out_text
    # a limit at the measured drop: within it, but the interval reaches far past it: too few images to decide
    limit = f"{max(gate['accuracy_drop'], 0.0):.6f}"
    code = main(_args(job, out, "--test", str(job["test"]), "--max-accuracy-drop", limit))
    again = json.loads((out / "report.json").read_text())["gate"]
    assert again["outcome"] == "undecided" and code == 4, again
    assert "UNDECIDED (too few images to decide)" in capsys.readouterr().out
    # a limit outside 0-100 points: one error line, exit 2
    assert main(_args(job, tmp_path / "bad", "--max-accuracy-drop", "101")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_accuracy_drop" in err and "0-100" in err
    pickled = tmp_path / "model.pt"
    torch.save(FashionTeacherCNN(), pickled)
    code = main(["compress", "--teacher", str(pickled), "--positives", str(job["positives"]), "--out",
                 str(tmp_path / "x"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    # one error line, followed by the export instructions for the accepted formats
    assert code == 2 and err.startswith("condense compress: error:") and "pickle" in err.splitlines()[0].lower()
    assert main([*_args(job, tmp_path / "y")[:6], "nope", *_args(job, tmp_path / "y")[7:]]) == 2
    assert "no pool named 'nope'" in capsys.readouterr().err
