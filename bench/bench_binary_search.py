"""The binary channel search on the benchmark task: search, then train the searched and the default student alike.

Usage (repository root)::

    python -m bench.bench_binary_search [--epochs 8] [--seeds 0] [--tag NAME]

The search (:func:`compression.search.search_binary_widths`, arXiv:1909.07378) runs as a job's ``--search`` runs
it: the stage widths of the binary ResNet-20 under the default :class:`~compression.search.BinaryBudget` (1.5x
the default binary student's ops, weight bytes and MACs), its proxy a one-epoch KD run on 2,000 of the 30,000
training images scored on 1,000 more. Then the searched student and the default one (the widest binary ResNet-20
within a quarter of the teacher's MACs) are distilled on all 30,000 images for ``--epochs`` epochs each (the
binary family's default config, as in ``bench.bench_distill``) and scored on the 5,000 test images. Writes
``docs/results/binary_search<_tag>.json`` and prints a table: widths, ops, weight bytes, accuracy, search and
training seconds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from typing import Any

from bench.bench_distill import RESULTS_DIR, _log, _machine, _run, _teacher
from bench.task import TASK_CLASSES, load_task
from compression import Budget
from compression.distill import TransferSet, predict_logits
from compression.metrics.graph_ops import teacher_macs
from compression.search import search_binary_widths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="distillation epochs of both students")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    task = load_task()
    teacher = _teacher()
    logits = predict_logits(teacher, task.train.images)
    test_logits = predict_logits(teacher, task.test.images)
    teacher_accuracy = float((test_logits.argmax(1) == task.test.labels).float().mean())
    mac_budget = Budget(teacher_macs(teacher), 0.25, "macs")
    _log("binary channel search (population 6, 2 generations, 1-epoch proxy on 2,000 images)")
    with tempfile.TemporaryDirectory() as cache:  # a fresh search, never a cached answer
        search = search_binary_widths(teacher, task.train.images, TASK_CLASSES, mac_budget, seed=0, cache_dir=cache)
    _log(f"  searched {search.stage_widths} (default {search.default_widths}) in {search.search_s:.0f} s")
    transfer = TransferSet(task.train.images, task.train.labels, logits)
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.bench_binary_search", *(argv or sys.argv[1:])]),
        "machine": _machine(),
        "teacher_test_accuracy": teacher_accuracy,
        "search": search.to_dict(),
        "runs": {},
    }
    students = {"default": search.default_widths, "searched": search.stage_widths}
    for seed in args.seeds:
        for name, widths in students.items():
            _log(f"{name} {widths}, seed {seed}: {args.epochs} epochs on all 30,000")
            run = _run(
                "binary",
                mac_budget,
                transfer,
                args.epochs,
                teacher,
                test_logits,
                task,
                student_kwargs={"stage_widths": tuple(widths)},
                seed=seed,
            )
            results["runs"][f"{name}/seed{seed}"] = {**run, "stage_widths": list(widths)}
            _log(f"  test accuracy {run['test_accuracy']:.4f} ({run['wall_s']:.0f} s)")
    print(f"\nteacher {teacher_accuracy:.4f}; search {search.search_s:.0f} s, {search.candidates_trained} candidates")
    print("| student | widths | ops | weight bytes | test acc. | vs teacher | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key, run in results["runs"].items():
        cost = search.default_cost if key.startswith("default") else search.cost
        print(
            f"| {key} | {'/'.join(map(str, run['stage_widths']))} | {cost.ops:,} | {cost.bytes:,} | "
            f"{run['test_accuracy'] * 100:.2f}% | {(run['test_accuracy'] - teacher_accuracy) * 100:+.2f} | "
            f"{run['wall_s']:.0f} |"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    (RESULTS_DIR / f"binary_search{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
