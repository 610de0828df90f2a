"""How far the report's own estimate of the student's accuracy is from the truth on the benchmark test set.

Runs whole compression jobs (:func:`service.pipeline.run_compression`, the default selection, ghost students) on
the benchmark task (../shared/BENCHMARK.md): the 300 positives as the user's upload and, with ``--regime on-topic``
or ``wild``, the benchmark pool of that regime (``python -m bench.bench_pool_ingest --regime ...`` first);
``--regime small`` ingests a small pool here (task images the positives do not hold, MNIST digits, Animal-MNIST), for
a quick check. Each seed runs twice: without a test set, and with test images 0-999 uploaded as the user's test
set. Each student's true accuracy is measured with its exported ONNX file on test images 1,000-4,999 (never given
to the job) and recorded next to the report's headline estimate (:func:`estimate_record`): the absolute difference
in points and whether the estimate's 95 % interval covered the truth; likewise the gate's upper bound on the drop
against the true drop.

    python -m bench.bench_report_estimate --regime wild [--epochs 3] [--seeds 0 1 2]
                                          [--out docs/results/report_estimate_wild.json]

The teacher is bench/artifacts/teacher.pt (``python -m bench.train_teacher``); with ``--regime small`` and no such
file, a small CNN trained here for two epochs (said so in the output).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from bench.task import load_task
from bench.train_teacher import TEACHERS
from service.cli.example import build_teacher

ROOT = Path(__file__).resolve().parents[1]
TEACHER_PATH = TEACHERS["resnet"].path


def estimate_record(estimate: dict[str, Any] | None, truth: float) -> dict[str, Any]:
    """A report figure (``value``, ``low``, ``high``, ``n``) next to the true value: the error and the coverage."""
    if estimate is None or estimate.get("value") is None:
        return {"estimate": None, "truth": truth, "abs_error_points": None, "covered": None}
    return {
        "estimate": estimate["value"],
        "low": estimate["low"],
        "high": estimate["high"],
        "images": estimate["n"],
        "truth": truth,
        "abs_error_points": abs(estimate["value"] - truth) * 100,
        "covered": estimate["low"] <= truth <= estimate["high"],
    }


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean absolute difference (points) and how often the interval covered the truth, over ``records``."""
    usable = [r for r in records if r["abs_error_points"] is not None]
    if not usable:
        return {"runs": 0}
    return {
        "runs": len(usable),
        "mean_abs_error_points": float(np.mean([r["abs_error_points"] for r in usable])),
        "max_abs_error_points": float(np.max([r["abs_error_points"] for r in usable])),
        "covered": int(sum(r["covered"] for r in usable)),
    }


def _teacher(task: Any, folder: Path) -> tuple[Path, str]:
    if TEACHER_PATH.exists():
        return TEACHER_PATH, "bench/artifacts/teacher.pt"
    torch.manual_seed(0)
    net = build_teacher()  # the plain CNN of `condense example`
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, labels = task.train.images[:10_000], task.train.labels[:10_000]
    for _ in range(2):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 100):
            batch = order[start : start + 100]
            loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    path = folder / "teacher.pt"
    torch.jit.save(torch.jit.trace(net.eval(), torch.zeros(2, 1, 28, 28)), str(path))  # no control flow: exact
    return path, "a small CNN trained here (2 epochs on 10,000 task training images): no benchmark teacher found"


def _npz(path: Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    pixels = images[:, 0].mul(255).round().to(torch.uint8).numpy()
    np.savez(path, x=pixels, y=labels.numpy())
    return path


def _pool(task: Any, folder: Path) -> Any:
    from pu_mining.image_files import ImageRecord
    from pu_mining.pool import PoolConfig, PoolStore, RecordSource
    from pu_mining.sources import animal_mnist, mnist_digits
    from storage import open_blob_store

    unused = np.setdiff1d(np.arange(len(task.train)), task.positive_indices)[10_000:14_000]  # not the teacher's
    task_pixels = task.train.images[unused, 0].mul(255).round().to(torch.uint8).numpy()
    digits, _ = mnist_digits()
    animals, _ = animal_mnist()

    def records(name: str, array: np.ndarray) -> RecordSource:
        return RecordSource(name, (ImageRecord(name, str(i), image) for i, image in enumerate(array)))

    blobs = open_blob_store(str(folder / "blobs"))
    PoolStore(blobs, cache_dir=folder / "cache").ingest(
        "estimate",
        [records("task", task_pixels), records("digits", digits[:1000]), records("animals", animals[:1000])],
        config=PoolConfig(image_size=28, channels=1, embedder_resolution=32),
    )
    return blobs


def _benchmark_pool(regime: str) -> tuple[Any, str]:
    from bench.bench_pool_ingest import DEFAULT_ROOT, pool_name
    from storage import open_blob_store

    root = ROOT / DEFAULT_ROOT
    name = pool_name(regime)
    if not (root / "pools" / name / "manifest.json").exists():
        raise SystemExit(f"no {regime} pool under {root}: run python -m bench.bench_pool_ingest --regime {regime}")
    return open_blob_store(str(root)), name


def _onnx_accuracy(path: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted = np.concatenate(
        [session.run(None, {name: images[i : i + 500].numpy()})[0].argmax(1) for i in range(0, len(images), 500)]
    )
    return float((predicted == labels.numpy()).mean())


def run(epochs: int, seeds: list[int], out: Path, regime: str = "small") -> dict[str, Any]:
    from compression import load_teacher
    from compression.distill import predict_logits
    from service.options import JobOptions
    from service.pipeline import run_compression

    task = load_task()
    results: dict[str, Any] = {"command": "", "regime": regime, "runs": []}
    truth_images, truth_labels = task.test.images[1000:], task.test.labels[1000:]  # never given to a job
    with tempfile.TemporaryDirectory(prefix="condense-estimate-") as scratch:
        folder = Path(scratch)
        if regime != "small" and not TEACHER_PATH.exists():
            raise SystemExit("no bench/artifacts/teacher.pt: run python -m bench.train_teacher")
        teacher_path, teacher_note = _teacher(task, folder)
        teacher = load_teacher(teacher_path, input_shape=(1, 28, 28))
        teacher_truth = float((predict_logits(teacher, truth_images).argmax(1) == truth_labels).float().mean())
        blobs, pool = (_pool(task, folder), "estimate") if regime == "small" else _benchmark_pool(regime)
        positives = _npz(folder / "positives.npz", task.positives.images, task.positives.labels)
        test_set = _npz(folder / "test.npz", task.test.images[:1000], task.test.labels[:1000])
        results["teacher"] = {"source": teacher_note, "test_accuracy": teacher_truth}
        for seed in seeds:
            for given in (False, True):
                options = JobOptions.from_dict(
                    {"student": "ghost", "pool": pool, "epochs": epochs, "seed": seed, "input_shape": [1, 28, 28],
                     "max_accuracy_drop": 5.0}
                )  # fmt: skip
                job = folder / f"job-{seed}-{'test' if given else 'none'}"
                started = time.perf_counter()
                summary = run_compression(
                    teacher_path, positives, options, job, blob_store=blobs, pool_cache_dir=folder / "cache",
                    test_path=test_set if given else None,
                )  # fmt: skip
                truth = _onnx_accuracy(job / "student.onnx", truth_images, truth_labels)
                gate = summary["gate"]
                true_drop = (teacher_truth - truth) * 100
                record = {
                    "seed": seed,
                    "test_set_given": given,
                    "headline": summary["evaluated_on"],
                    "student": estimate_record(summary["student_accuracy"], truth),
                    "agreement": summary["agreement"],
                    "true_accuracy": truth,
                    "mined": summary["mined"],
                    "held_back": summary["held_back"],
                    "gate": {
                        "outcome": gate["outcome"],
                        "basis": gate["basis"],
                        "drop_estimate_points": gate["accuracy_drop"],
                        "drop_high_points": gate["accuracy_drop_high"],
                        "true_drop_points": true_drop,
                        "high_covers_true_drop": gate["accuracy_drop_high"] is not None
                        and true_drop <= gate["accuracy_drop_high"],
                    },
                    "wall_s": round(time.perf_counter() - started, 1),
                }
                print(json.dumps(record), flush=True)
                results["runs"].append(record)
    for given in (False, True):
        results["test_given" if given else "no_test"] = summarise(
            [r["student"] for r in results["runs"] if r["test_set_given"] is given]
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=("small", "on-topic", "wild"), default="wild")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=None, help="default: docs/results/report_estimate_<regime>.json")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(ROOT / "docs" / "results" / f"report_estimate_{args.regime.replace('-', '_')}.json")
    torch.set_num_threads(2)
    results = run(args.epochs, args.seeds, Path(args.out), args.regime)
    results["command"] = " ".join(["python -m bench.bench_report_estimate", *argv])
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
