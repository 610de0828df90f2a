"""What a job given only a time budget gets: the schedule fitted to the budget against the schedule cut by it.

Usage (repository root; the pool and teacher as for ``bench.bench_table``)::

    python -m bench.bench_time_budget --budget-s 180 --seeds 3 [--images N] [--threads 2]
        [--out docs/results/time_budget.json]

A job without ``--epochs`` distils with the family's default schedule length (200 epochs) and its time budget. The
run either shortens the schedule to what the budget affords once its first steps are timed
(``DistillConfig.fit_schedule_to_budget``, the default) or trains the 200-epoch schedule until the budget stops it.
Ghost student (a quarter of the teacher's MACs) on the benchmark's filled default selection of the wild pool plus
the 300 positives (the table's ``default`` row with ``--min-selection 6000``; ``--images N``: its first N images, so
that the same budget affords more epochs); per seed the two runs go one after the
other, so both see the same machine. Test accuracy on the 5,000 test images, epochs run, the last learning rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_distill import _log, _machine, _run, _teacher, seed_figures, write_results
from bench.bench_table import (
    _open_pool,
    _pu_transfer_set,
    _quarter_of_teacher,
    mine_once,
    pool_logits,
)
from bench.task import load_task
from bench.train_teacher import TEACHERS
from compression.distill import DistillConfig, TransferSet, predict_logits
from storage.hashing import file_sha256

FLOOR = 6000
VARIANTS = {"fitted": True, "cut": False}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=180.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.budget_s > 0:
        raise ValueError(f"--budget-s must be positive, got {args.budget_s}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    task = load_task()
    teacher = _teacher("resnet")
    teacher_hash = file_sha256(TEACHERS["resnet"].path)
    test_logits = predict_logits(teacher, task.test.images)
    positive_logits = predict_logits(teacher, task.positives.images)
    budget = _quarter_of_teacher(teacher)
    pool = _open_pool("wild")
    mining = mine_once(teacher, pool, teacher_hash, args.threads, "wild", "resnet", FLOOR)
    ids = np.asarray(mining["strategy_ids"]["default"], dtype=np.int64)
    logits, _ = pool_logits(teacher, pool, ids, teacher_hash, "wild", "resnet")
    transfer = _pu_transfer_set(task.positives, positive_logits, pool.image_tensor(ids), logits)
    logits_in_order = transfer.teacher_logits
    if logits_in_order is None:
        raise RuntimeError("the transfer set lost its teacher logits")
    if args.images is not None:
        if not 2 <= args.images <= len(transfer):
            raise ValueError(f"--images must be between 2 and {len(transfer)}, got {args.images}")
        transfer = TransferSet(
            transfer.images[: args.images], transfer.labels_or_ignore[: args.images], logits_in_order[: args.images]
        )
    epochs = DistillConfig().epochs

    runs: dict[str, Any] = {}
    for seed in range(args.seeds):
        for variant, fit in VARIANTS.items():
            _log(f"ghost: {variant} schedule, {len(transfer):,} images, {args.budget_s:.0f} s budget, seed {seed}")
            overrides: dict[str, Any] = {"time_budget_s": args.budget_s, "fit_schedule_to_budget": fit}
            run = _run("ghost", budget, transfer, epochs, teacher, test_logits, task, seed=seed, **overrides)
            _log(
                f"  test accuracy {run['test_accuracy']:.4f}, {run['epochs_run']} epochs, last lr "
                f"{run['last_lr']:.4f}, {run['stopped_reason']} ({run['wall_s']:.0f} s)"
            )
            runs[f"{variant}@seed{seed}"] = run

    summary = {}
    for variant in VARIANTS:
        summary[variant] = {
            **seed_figures(runs, variant, args.seeds),
            "epochs_run": [runs[f"{variant}@seed{seed}"]["epochs_run"] for seed in range(args.seeds)],
            "last_lr": [runs[f"{variant}@seed{seed}"]["last_lr"] for seed in range(args.seeds)],
        }
    output = {
        "command": "python -m bench.bench_time_budget " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**_machine(), "cores": args.threads},
        "budget_s": args.budget_s,
        "images": len(transfer),
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    write_results(summary, output, args.out)


if __name__ == "__main__":
    main()
