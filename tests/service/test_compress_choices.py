"""``condense compress`` with the student options on a small real job: selection, no labels, int8, latency sizing.

The teacher, positives and pool are the ones of :mod:`tests.service.test_compress` (a small CNN trained on real
Fashion-MNIST classes 0-4, ten PNG positives per class, a pool of real task images among MNIST digits and
Animal-MNIST); one distillation epoch each, so every test checks wiring and records, not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.cli import main
from tests.fashion_mnist import task_images
from tests.service.test_compress import env, job  # noqa: F401  (fixtures: the shared small job)

pytestmark = pytest.mark.slow


def _compress(inputs: dict[str, Path], out: Path, *extra: str, positives: bool = True) -> list[str]:
    args = ["compress", "--teacher", str(inputs["teacher"]), "--pool", "demo", "--epochs", "1"]
    if positives:
        args += ["--positives", str(inputs["positives"])]
    return [*args, "--input-shape", "1,28,28", "--out", str(out), "--quiet", "--json", *extra]


def _run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_selection_and_int8_are_used_and_reported(job, env, capsys) -> None:  # noqa: F811
    out = job["root"] / "random-int8"
    assert main(_compress(job, out, "--selection", "random", "--quantize", "int8", "--quantize-max-loss", "99")) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    mining = report["mining"]
    assert report["job"]["options"]["selection"] == "random" and mining["selection"] == "random"
    assert sum(mining["class_histogram"].values()) == mining["selected"] == len(report["manifest"]["mined_ids"])
    assert mining["evaluation"] > 0  # held back from training for evaluation
    assert not set(report["manifest"]["mined_ids"]) & set(np.load(out / "work" / "mining.npz")["evaluation_ids"])
    # int8: kept (a loss limit of 100 points), verified against the float file, and an ONNX file ONNX Runtime runs
    int8 = report["student"]["int8"]
    assert int8["kept"] == "int8" and int8["file"] == "student.int8.onnx" and (out / "student.int8.onnx").is_file()
    assert int8["num_images"] == 10 and int8["verified_on"] == "held-out positives"
    low, high = int8["agreement_interval"]
    assert low <= int8["top1_agreement"] <= high
    images, _ = task_images("test", 16)
    float_top1 = _run_onnx(out / "student.onnx", images.numpy()).argmax(1)
    int8_top1 = _run_onnx(out / "student.int8.onnx", images.numpy()).argmax(1)
    assert (float_top1 == int8_top1).mean() >= 0.5
    # teacher, student and int8 student timed side by side at batch 1 and 32, with the machine
    side = report["student"]["latency_side_by_side"]
    assert side["machine"] and set(side["rows"]) == {"teacher", "student", "student int8"}
    assert all(set(rows) == {"1", "32"} and rows["1"]["min_ms"] > 0 for rows in side["rows"].values())
    # every speed-up shown to a user is the side-by-side one; the separate profiles are kept beside it
    for name in ("teacher", "student"):
        latency = report[name]["latency"]
        assert latency["1"]["side_by_side"] and latency["1"]["median_ms"] == side["rows"][name]["1"]["median_ms"]
        assert report[name]["latency_separate"]["1"]["repeats"] > 0
    assert report["student"]["sizing"]["budget"] == "latency"  # the default student: auto
    html = (out / "report.html").read_text()
    assert "random" in html and "student.int8.onnx" in html and side["machine"] in html


def test_no_labels_mode_selects_and_distils_as_dfnd(job, env, capsys) -> None:  # noqa: F811
    out = job["root"] / "no-labels"
    names = "tshirt,trouser,pullover,dress,coat"
    flags = ("--class-names", names, "--quantize", "int8", "--quantize-max-loss", "0")
    assert main(_compress(job, out, *flags, positives=False)) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["mining"]["selection"] == "dfnd" and report["mining"]["labels_used"] is False
    assert report["distillation"]["config"]["noise_adaptation_weight"] == 1.0
    assert report["distillation"]["transfer_set"]["positives"] == 0
    assert set(report["mining"]["class_histogram"]) <= set(names.split(","))
    evaluation = report["evaluation"]
    assert evaluation["headline"] is None and evaluation["held_out"] is None  # no labelled images at all
    assert evaluation["pool"]["images"] == report["mining"]["evaluation"] > 0  # agreement on held-back items
    assert _run_onnx(out / "student.onnx", task_images("test", 4)[0].numpy()).shape == (4, 5)
    # int8 verified on the held-back pool items (no labels: the loss is the disagreement rate), limit 0 points
    int8 = report["student"]["int8"]
    assert int8["verified_on"].startswith("pool items held back") and int8["float_accuracy"] is None
    assert int8["num_images"] == report["mining"]["evaluation"]
    assert int8["loss"] == pytest.approx(1 - int8["top1_agreement"])
    if int8["loss"] > 0:  # over the limit: the float file is the one to ship, and the report says so
        assert int8["kept"] == "float" and int8["file"] is None and not (out / "student.int8.onnx").exists()
        assert "float file is kept" in int8["summary"] and "float file kept" in (out / "report.html").read_text()
    else:
        assert int8["kept"] == "int8" and (out / "student.int8.onnx").is_file()


def test_latency_sized_slim_student_reports_its_measurements(job, env, capsys) -> None:  # noqa: F811
    out = job["root"] / "slim-latency"
    assert main(_compress(job, out, "--student", "slim", "--latency-ratio", "0.9", "--latency-batch", "1")) == 0
    report = json.loads((out / "report.json").read_text())
    sizing = report["student"]["sizing"]
    assert sizing["budget"] == "latency" and sizing["family"] == "slim" and sizing["measured"]
    assert sizing["latency_budget"]["ratio"] == 0.9 and sizing["latency_budget"]["batch_sizes"] == [1]
    assert "within" in sizing["reason"]
    html = (out / "report.html").read_text()
    assert "Latency budget" in html


def test_auto_says_which_family_it_chose_and_why(job, env, capsys) -> None:  # noqa: F811
    out = job["root"] / "auto"
    assert main(_compress(job, out, "--student", "auto", "--latency-ratio", "1", "--latency-batch", "1")) == 0
    report = json.loads((out / "report.json").read_text())
    sizing = report["student"]["sizing"]
    assert sizing["chosen_by"] == "auto" and sizing["family"] in ("slim", "ghost")
    assert sizing["reason"].startswith(f"auto chose {sizing['family']}") and "ghost:" in sizing["reason"]
    assert "auto chose" in (out / "report.html").read_text()


def test_qnn_student_is_sized_by_bit_ops_and_exported_as_qdq(job, env, capsys) -> None:  # noqa: F811
    out = job["root"] / "qnn4"
    assert main(_compress(job, out, "--student", "qnn4")) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    sizing, student = report["student"]["sizing"], report["student"]
    assert sizing["budget"] == "bitops" and sizing["family"] == "qnn4" and "bit-ops" in sizing["reason"]
    teacher_bit_ops = report["teacher"]["macs"] * 32 * 32
    assert 0 < student["bit_ops"] <= teacher_bit_ops * 0.25 / 16
    ops = {node.op_type for node in onnx.load(str(out / "student.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert _run_onnx(out / "student.onnx", task_images("test", 4)[0].numpy()).shape == (4, 5)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--latency-ratio", "2"], "latency_ratio"),
        (["--student", "binary", "--latency-ms", "3"], "student"),
        (["--search"], "search"),
        (["--quantize-max-loss", "-1", "--quantize", "int8"], "quantize_max_loss"),
    ],
)
def test_bad_option_values_are_one_line_errors(job, env, capsys, flags, words) -> None:  # noqa: F811
    assert main(_compress(job, job["root"] / "bad", *flags)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("condense compress: error:") and words in err
