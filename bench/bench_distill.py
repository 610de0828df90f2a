"""Robust knowledge distillation on the benchmark task: every student family, full data and the 1 % positives,
and robust against plain KD on a transfer set made class-imbalanced on purpose.

Usage (repository root)::

    python -m bench.bench_distill --mode quick          # ~30 min on 2 quiet CPU cores (binary: 8 epochs)
    python -m bench.bench_distill --mode full           # longer schedules: for a GPU (uses CUDA when present)

Writes ``docs/results/distill_<mode>.json`` and the distillation section of ``docs/results.md`` (between the
``distill:<mode>`` markers), so the table in the docs is always the one the command printed.

The task (``../shared/BENCHMARK.md``): Fashion-MNIST classes 0-4 at 1x28x28, teacher trained on all 30,000
training images (``bench/artifacts/teacher.pt``, made by ``python -m bench.train_teacher`` if missing), 300 labelled
positives (the first 60 per class), the 5,000 test images for every accuracy. Students are each family's default
architecture sized to at most a quarter of the teacher's MACs (``Budget(teacher MACs, 0.25)``). Each run uses its
family's default :class:`~compression.distill.DistillConfig` with only the schedule length (and, for the 300
positives, a batch of 32) set here, and selects its best epoch by top-1 agreement with the teacher on training
images (no test image is used for any choice). The teacher's logits on the 30,000 images are computed once.

Imbalance experiment: the 30,000 images with classes 2 (Pullover) and 4 (Coat) cut to their first tenth (the
minority classes; 19,200 images); the ghost student trained with the same schedule as plain KD (mean KD loss,
uniform order) and as robust KD (the family default: teacher-estimated class weights applied by sampling plus the
worst case over the chi-square set), each with several ``DistillConfig`` seeds (sample order and flips; the
student's initial weights are the same), since a two-epoch run's per-class accuracy moves by a few points from
seed to seed. ``--imbalance-variants`` adds the ablations of :data:`IMBALANCE_VARIANTS`. Per-class test accuracy,
averaged over the seeds, shows what each does for the minority.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.task import INPUT_SHAPE, TASK_CLASSES, load_task
from bench.task import TASK_CLASS_NAMES as CLASS_NAMES
from bench.train_teacher import TEACHERS
from compression import Budget, count_ops, count_parameters, create_student, load_teacher
from compression.distill import TransferSet, default_config, distill, evaluate_predictions, predict_logits
from compression.metrics.graph_ops import teacher_macs

ROOT = Path(__file__).resolve().parents[1]
TEACHER_PATH = TEACHERS["resnet"].path
RESULTS_DIR = ROOT / "docs" / "results"
RESULTS_MD = ROOT / "docs" / "results.md"
FAMILIES = ("ghost", "binary", "adder")
MINORITY_CLASSES = (2, 4)
MINORITY_SHARE = 0.1


@dataclass(frozen=True)
class Schedule:
    """Epochs of each run of one mode."""

    full: dict[str, int]
    positives: int
    imbalanced: int
    imbalance_seeds: tuple[int, ...]


SCHEDULES = {
    "quick": Schedule(full={"ghost": 3, "binary": 8, "adder": 3}, positives=20, imbalanced=2, imbalance_seeds=(0, 1)),
    "full": Schedule(
        full={"ghost": 60, "binary": 60, "adder": 60}, positives=300, imbalanced=30, imbalance_seeds=(0, 1, 2)
    ),
}
IMBALANCE_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"class_balanced": False, "robust": False},
    "robust": {},  # the family default
    "weighted_loss": {"class_weighting": "loss", "robust": False},
    "robust_loss": {"class_weighting": "loss"},
    "weighted_sampling": {"class_weighting": "sampling", "robust": False},
    "robust_r0.1": {"robust_radius": 0.1},
    "robust_penalised": {"robust_radius": 0.1, "robust_sensitivity": 1.0},
    "robust_deferred": {"class_weight_delay": 0.5},
}
"""Ways of training on the imbalanced set: overrides of the ghost family's default config."""
DEFAULT_IMBALANCE_VARIANTS = ("plain", "robust")
TARGET_GAP = {"ghost": 1.0, "adder": 2.0, "binary": 3.0}  # points below the teacher: the quick-mode goals


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _teacher(name: str = "resnet") -> Any:
    """The benchmark teacher ``name`` (:data:`bench.train_teacher.TEACHERS`), trained first when its file is missing."""
    from bench.train_teacher import main as train_teacher_main

    path = TEACHERS[name].path
    if not path.exists():
        _log(f"{path} missing: training the teacher (python -m bench.train_teacher --arch {name})")
        train_teacher_main(["--arch", name])
    return load_teacher(path, input_shape=INPUT_SHAPE)


def _student_report(student: torch.nn.Module, teacher_logits_test: torch.Tensor, task: Any) -> dict[str, Any]:
    student_classes = predict_logits(student, task.test.images).argmax(1)
    evaluation = evaluate_predictions(
        student_classes, teacher_logits_test.argmax(1), task.test.labels, teacher_logits_test.shape[1]
    )
    ops = count_ops(student, INPUT_SHAPE).total
    return {
        "test_accuracy": evaluation.student_accuracy,
        "agreement": evaluation.agreement,
        "per_class_accuracy": evaluation.per_class_student_accuracy,
        "parameters": count_parameters(student),
        "macs": ops.macs,
        "multiplications": ops.multiplications,
        "additions": ops.additions,
        "binary_ops": ops.binary_ops,
    }


def _run(
    family: str,
    budget: Budget,
    transfer: TransferSet,
    epochs: int,
    teacher: Any,
    teacher_logits_test: torch.Tensor,
    task: Any,
    student_kwargs: dict[str, Any] | None = None,
    student_edit: Callable[[nn.Module], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Distil one ``family`` student (sized by ``budget``, or built from ``student_kwargs`` when given: an
    architecture's constructor arguments; ``student_edit`` then changes it in place) and report it on the test set;
    ``overrides`` change its config."""
    torch.manual_seed(0)
    if student_kwargs is not None:
        student = create_student(family, num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, **student_kwargs)
    else:
        student = create_student(family, num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, budget=budget)
    if student_edit is not None:
        student_edit(student)
    student.to(_device())
    config = default_config(family, epochs=epochs, checkpoint_every_s=None, progress_interval_s=30.0, **overrides)
    started = time.perf_counter()
    result = distill(teacher, student, transfer, None, config)
    wall = time.perf_counter() - started
    student.cpu()
    report = _student_report(student, teacher_logits_test, task)
    report.update(
        transfer_size=len(transfer),
        epochs=epochs,
        best_epoch=result.best_epoch,
        wall_s=round(wall, 1),
        float_stage_best_epoch=None if result.float_stage is None else result.float_stage.best_epoch,
        stopped_reason=result.stopped_reason,
        epochs_run=max((record.epoch for record in result.history), default=0),
        last_lr=result.history[-1].lr if result.history else None,
        config={key: value for key, value in config.to_dict().items() if key in _REPORTED_CONFIG},
    )
    return report


_REPORTED_CONFIG = (
    "optimizer",
    "lr",
    "schedule",
    "batch_size",
    "temperature",
    "robust",
    "class_balanced",
    "class_weighting",
    "class_weight_delay",
    "seed",
    "float_stage_epochs",
    "binary_weight_delay",
    "adder_eta",
)


def _minority_accuracy(run: dict[str, Any]) -> float:
    return sum(run["per_class_accuracy"][k] for k in MINORITY_CLASSES) / len(MINORITY_CLASSES)


def _imbalanced_indices(labels: torch.Tensor) -> torch.Tensor:
    keep = []
    for k in range(TASK_CLASSES):
        indices = (labels == k).nonzero().flatten()
        keep.append(indices[: int(len(indices) * MINORITY_SHARE)] if k in MINORITY_CLASSES else indices)
    return torch.cat(keep).sort().values


def run_benchmark(
    mode: str,
    families: tuple[str, ...],
    skip_imbalance: bool = False,
    imbalance_variants: tuple[str, ...] = DEFAULT_IMBALANCE_VARIANTS,
) -> dict[str, Any]:
    schedule = SCHEDULES[mode]
    started = time.perf_counter()
    task = load_task()
    teacher = _teacher()
    _log("teacher logits on the 30,000 training and 5,000 test images")
    logits_started = time.perf_counter()
    train_logits = predict_logits(teacher, task.train.images)
    test_logits = predict_logits(teacher, task.test.images)
    logits_s = time.perf_counter() - logits_started
    reference = teacher_macs(teacher)
    if reference is None:
        raise RuntimeError("cannot count the teacher's MACs")
    budget = Budget(reference, 0.25, "macs")
    teacher_accuracy = float((test_logits.argmax(1) == task.test.labels).float().mean())
    results: dict[str, Any] = {
        "mode": mode,
        "machine": _machine(),
        "teacher": {
            "file": str(TEACHER_PATH.relative_to(ROOT)),
            "test_accuracy": teacher_accuracy,
            "per_class_accuracy": [
                float((test_logits.argmax(1)[task.test.labels == k] == k).float().mean()) for k in range(TASK_CLASSES)
            ],
            "parameters": teacher.parameter_count,
            "macs": reference,
            "multiplications": reference,
            "logits_s": round(logits_s, 1),
        },
        "runs": {},
    }
    full = TransferSet(task.train.images, task.train.labels, train_logits)
    positives = TransferSet(
        task.positives.images, task.positives.labels, train_logits[torch.from_numpy(task.positive_indices)]
    )
    for family in families:
        _log(f"{family}: KD on all 30,000 ({schedule.full[family]} epochs)")
        results["runs"][f"{family}/full"] = _run(
            family, budget, full, schedule.full[family], teacher, test_logits, task
        )
        _log(f"  test accuracy {results['runs'][f'{family}/full']['test_accuracy']:.4f}")
        _log(f"{family}: KD on the 300 positives ({schedule.positives} epochs)")
        results["runs"][f"{family}/positives"] = _run(
            family, budget, positives, schedule.positives, teacher, test_logits, task, batch_size=32
        )
        _log(f"  test accuracy {results['runs'][f'{family}/positives']['test_accuracy']:.4f}")
    if not skip_imbalance:
        keep = _imbalanced_indices(task.train.labels)
        imbalanced = TransferSet(task.train.images[keep], task.train.labels[keep], train_logits[keep])
        for name in imbalance_variants:
            for seed in schedule.imbalance_seeds:
                _log(f"imbalanced ({len(keep):,} images): ghost, {name} KD, seed {seed} ({schedule.imbalanced} epochs)")
                run = _run(
                    "ghost",
                    budget,
                    imbalanced,
                    schedule.imbalanced,
                    teacher,
                    test_logits,
                    task,
                    seed=seed,
                    **IMBALANCE_VARIANTS[name],
                )
                results["runs"][f"imbalanced/{name}/seed{seed}"] = run
                _log(f"  test accuracy {run['test_accuracy']:.4f}, minority {_minority_accuracy(run):.4f}")
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def seed_figures(runs: dict[str, Any], name: str, seeds: int) -> dict[str, Any]:
    """Test accuracy of runs ``f"{name}@seed{k}"`` for k < ``seeds``: per seed, mean and sample sd (None for one)."""
    accuracies = [runs[f"{name}@seed{seed}"]["test_accuracy"] for seed in range(seeds)]
    return {
        "per_seed": accuracies,
        "mean": float(np.mean(accuracies)),
        "sd": float(np.std(accuracies, ddof=1)) if seeds > 1 else None,
    }


def write_results(summary: dict[str, Any], output: dict[str, Any], out: Path | None) -> None:
    """Print ``summary`` and write ``output`` as JSON to ``out`` (when given)."""
    print(json.dumps(summary, indent=1))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(output, indent=1) + "\n")


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def render_markdown(results: dict[str, Any]) -> str:
    """The distillation tables of ``docs/results.md`` for one benchmark run."""
    teacher = results["teacher"]
    machine = results["machine"]
    runs = results["runs"]
    command = results.get("command", f"python -m bench.bench_distill --mode {results['mode']}")
    lines = [
        f"Command: `{command}` -- {results['wall_s'] / 60:.1f} min wall "
        f"on {machine['cores']} threads of a {machine['cpu']} ({machine['device']}), torch {machine['torch']}, "
        f"{machine['date']}. Raw figures: `docs/results/distill_{results.get('name', results['mode'])}.json`.",
        "",
        "| student | transfer data | images | epochs | test acc. | vs teacher | target | params | MACs | mults |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| teacher (ResNet-20 x2) | all labelled | 30,000 | 4 | {teacher['test_accuracy']:.2%} | | | "
        f"{teacher['parameters']:,} | {teacher['macs'] / 1e6:.1f}M | {teacher['multiplications'] / 1e6:.1f}M |",
    ]
    for key, run in runs.items():
        family, data = key.split("/", 1)
        if family == "imbalanced":
            continue
        gap = (teacher["test_accuracy"] - run["test_accuracy"]) * 100
        target = ""
        if data == "full":
            met = "met" if gap <= TARGET_GAP[family] else "missed"
            target = f"<= {TARGET_GAP[family]:g} ({met})"
        label = "KD, all 30,000" if data == "full" else "KD, 300 positives"
        float_epochs = run.get("config", {}).get("float_stage_epochs", 0)
        epochs = f"{float_epochs} float + {run['epochs']}" if float_epochs else f"{run['epochs']}"
        lines.append(
            f"| {family} | {label} | {run['transfer_size']:,} | {epochs} | {run['test_accuracy']:.2%} | "
            f"-{gap:.2f} | {target} | {run['parameters']:,} | {run['macs'] / 1e6:.1f}M | "
            f"{run['multiplications'] / 1e6:.2f}M |"
        )
    lines += _render_imbalance(runs)
    return "\n".join(lines)


def _render_imbalance(runs: dict[str, Any]) -> list[str]:
    """The imbalance table: per variant, per-class test accuracy averaged over its seeds, against plain KD."""
    variants: dict[str, list[dict[str, Any]]] = {}
    for key, run in runs.items():
        parts = key.split("/")
        if parts[0] == "imbalanced":
            variants.setdefault(parts[1], []).append(run)
    if not variants:
        return []

    def mean_per_class(group: list[dict[str, Any]]) -> list[float]:
        return [sum(run["per_class_accuracy"][k] for run in group) / len(group) for k in range(TASK_CLASSES)]

    first = next(iter(variants.values()))[0]
    plain = mean_per_class(variants["plain"]) if "plain" in variants else None
    lines = [
        "",
        f"Class-imbalanced transfer set (classes {', '.join(CLASS_NAMES[k] for k in MINORITY_CLASSES)} cut to a "
        f"tenth: {first['transfer_size']:,} images), ghost student, {first['epochs']} epochs, per-class test "
        f"accuracy averaged over the seeds (the minority mean of each seed in the last column but one):",
        "",
        "| KD | "
        + " | ".join(f"{name}{' (minority)' if k in MINORITY_CLASSES else ''}" for k, name in enumerate(CLASS_NAMES))
        + " | minority mean | per seed | all |",
        "|---|" + "---:|" * (TASK_CLASSES + 3),
    ]
    for name, group in variants.items():
        per_class = mean_per_class(group)
        cells = []
        for k, value in enumerate(per_class):
            delta = "" if plain is None or name == "plain" else f" ({(value - plain[k]) * 100:+.1f})"
            cells.append(f"{value:.1%}{delta}")
        minority = sum(per_class[k] for k in MINORITY_CLASSES) / len(MINORITY_CLASSES)
        minority_cell = f"**{minority:.1%}**"
        if plain is not None and name != "plain":
            plain_minority = sum(plain[k] for k in MINORITY_CLASSES) / len(MINORITY_CLASSES)
            minority_cell += f" (**{(minority - plain_minority) * 100:+.1f}**)"
        seeds = ", ".join(f"{_minority_accuracy(run):.1%}" for run in group)
        overall = sum(run["test_accuracy"] for run in group) / len(group)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {minority_cell} | {seeds} | {overall:.2%} |")
    settings = {name: IMBALANCE_VARIANTS.get(name, {}) for name in variants}
    lines += [
        "",
        "Figures in brackets: points against plain KD. Variants (overrides of the ghost default config): "
        + "; ".join(f"{name} `{json.dumps(overrides)}`" for name, overrides in settings.items())
        + ".",
    ]
    return lines


def _write_markdown_section(mode: str, body: str) -> None:
    begin, end = f"<!-- distill:{mode}:begin -->", f"<!-- distill:{mode}:end -->"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Results on the benchmark task\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    RESULTS_MD.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(SCHEDULES), default="quick")
    parser.add_argument(
        "--families", nargs="*", choices=FAMILIES, default=list(FAMILIES), help="none: the imbalance experiment only"
    )
    parser.add_argument("--skip-imbalance", action="store_true")
    parser.add_argument(
        "--imbalance-variants",
        nargs="+",
        choices=sorted(IMBALANCE_VARIANTS),
        default=list(DEFAULT_IMBALANCE_VARIANTS),
        help="ways of training on the imbalanced set (default: plain and robust)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument(
        "--tag", help="write distill_<mode>_<tag>.json and the docs section distill:<mode>_<tag> (e.g. ablations)"
    )
    args = parser.parse_args(argv)
    if args.tag is not None and not args.tag.replace("_", "").isalnum():
        parser.error(f"--tag takes letters, digits and underscores, got {args.tag!r}")
    results = run_benchmark(args.mode, tuple(args.families), args.skip_imbalance, tuple(args.imbalance_variants))
    results["command"] = shlex.join(["python", "-m", "bench.bench_distill", *(sys.argv[1:] if argv is None else argv)])
    if args.tag is not None:
        results["name"] = f"{args.mode}_{args.tag}"
    body = render_markdown(results)
    print(body)
    if not args.no_write:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        name = args.mode if args.tag is None else f"{args.mode}_{args.tag}"
        (RESULTS_DIR / f"distill_{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        _write_markdown_section(name, body)


if __name__ == "__main__":
    main()
