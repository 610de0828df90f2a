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
from torch import nn

from pu_mining.image_files import ImageRecord
from pu_mining.pool import PoolConfig, PoolStore, RecordSource
from pu_mining.sources import animal_mnist, mnist_digits
from service.cli import main
from storage import open_blob_store
from tests.fashion_mnist import task_images

pytestmark = pytest.mark.slow

CLASSES = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat"]


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # ~11M MACs: large enough that a quarter of it fits the smallest Ghost student
        self.stage1 = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(64 * 7 * 7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.avg_pool2d(self.stage2(self.stage1(x)), 2).flatten(1))


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained TorchScript teacher, a zip of class folders of PNG positives, and a pool in the data dir."""
    root = tmp_path_factory.mktemp("compress")
    torch.manual_seed(0)
    images, labels = task_images("train", 1500)
    net = SmallCNN()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(4):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 50):
            batch = order[start : start + 50]
            loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    teacher = root / "teacher.pt"
    torch.jit.save(torch.jit.script(net.eval()), str(teacher))

    positives = root / "positives.zip"
    with zipfile.ZipFile(positives, "w") as archive:
        for k, name in enumerate(CLASSES):
            for i, index in enumerate(torch.nonzero(labels == k).flatten()[:10].tolist()):
                pixels = images[index, 0].mul(255).round().to(torch.uint8).numpy()
                path = root / f"{name}-{i}.png"
                Image.fromarray(pixels).save(path)
                archive.write(path, f"{name}/{i}.png")

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
    return {"teacher": teacher, "positives": positives, "data": data, "root": root}


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
    # the ONNX student runs in ONNX Runtime and gives the accuracy the report claims on the held-out positives
    assert report["evaluation"]["images"] == 10  # 20 % of 10 per class
    assert 0 <= summary["student_accuracy"] <= 1 and summary["teacher_accuracy"] >= 0.5
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]
    # sizes: at most a quarter of the teacher's MACs; mining found pool images and recorded them
    assert report["student"]["macs"] <= 0.25 * report["teacher"]["macs"] * 1.05
    assert report["mining"]["selected"] > 0 and summary["mined"] == len(report["manifest"]["mined_ids"])
    assert report["distillation"]["transfer_set"]["positives"] == 40
    assert set(report["stages_s"]) >= {"load", "mining", "distill", "export", "report"}
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


def test_quality_gate_and_bad_input(job, env, capsys, tmp_path: Path) -> None:
    out = tmp_path / "gate"
    code = main(_args(job, out, "--max-accuracy-drop", "0"))
    report = json.loads((out / "report.json").read_text())
    drop = report["gate"]["accuracy_drop"]
    assert code == (3 if drop > 0 else 0)
    capsys.readouterr()
    pickled = tmp_path / "model.pt"
    torch.save(SmallCNN(), pickled)
    code = main(["compress", "--teacher", str(pickled), "--positives", str(job["positives"]), "--out",
                 str(tmp_path / "x"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    # one error line, followed by the export instructions for the accepted formats
    assert code == 2 and err.startswith("condense compress: error:") and "pickle" in err.splitlines()[0].lower()
    assert main([*_args(job, tmp_path / "y")[:6], "nope", *_args(job, tmp_path / "y")[7:]]) == 2
    assert "no pool named 'nope'" in capsys.readouterr().err
