"""The no-labels mode as a job runs it, on the benchmark's wild pool: what a user without positives gets.

Usage (repository root; the pool and teacher as for ``bench.bench_table``)::

    python -m bench.bench_no_labels --seeds 3 --epochs 3 [--orders dfnd balanced random mixed] [--teacher resnet|cnn]
        [--noise-adaptation-weight 1.0] [--size-factor 1.5] [--threads 2] [--out docs/results/no_labels_wild.json]

A job without ``--positives`` mines with :func:`pu_mining.miner.score_pool` (no PU classifier) and selects ``dfnd``:
the pool items with the lowest teacher self-cross-entropy, as many as :func:`pu_mining.selection.dfnd_size` gives
(1.5 times the items the teacher is at least 90 % sure of), a tenth held back for evaluation; the student is
distilled on the rest alone (no labelled image) with DFND's noise-adaptation term (Chen et al., "Learning Student
Networks in the Wild", CVPR 2021). The table's DFND row differs: it adds the 300 labelled positives and takes as
many items as the default selection.

``--orders``: ``dfnd`` is the ranking the job uses; ``balanced`` interleaves the same ranking by the teacher's
predicted class (each class's most self-confident item, then each class's second, ...), the same number of items:
whether per-class quotas help a selection the teacher skews to a few classes; ``random`` is a uniform draw of the
same number of pool items: whether the self-confidence ranking helps at all; ``mixed`` alternates the two (half
the most self-confident items, half a uniform draw). ``--noise-adaptation-weight 0`` trains
with plain KD instead of DFND's loss; ``--size-factor F`` takes F times the items the teacher is at least 90 % sure
of instead of the job's :data:`pu_mining.selection.DFND_SIZE_FACTOR` (compare at equal image passes: 1.5 at 2
epochs against 1 at 3). Test accuracy on the 5,000 test
images, per DistillConfig seed; compare with the default selection's rows of ``docs/results.md``.
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
from bench.bench_table import _open_pool, _quarter_of_teacher, selection_figures
from bench.task import TASK_CLASSES, load_task
from bench.train_teacher import TEACHERS
from compression.distill import TransferSet, predict_logits

ORDERS = ("dfnd", "balanced", "random", "mixed")


def balanced_order(ranked_ids: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``ranked_ids`` (best first) reordered round-robin over ``classes`` (each item's class), each class's order
    kept: the k-th item of every class comes before the (k+1)-th of any."""
    within = np.zeros(len(ranked_ids), dtype=np.int64)
    seen: dict[int, int] = {}
    for position, k in enumerate(classes.tolist()):
        within[position] = seen.get(k, 0)
        seen[k] = within[position] + 1
    return ranked_ids[np.argsort(within, kind="stable")]


def alternate(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The items of two rankings of the same ids taken in turn (first, second, first, ...), each id once."""
    interleaved = np.stack([first, second], axis=1).reshape(-1)
    _, positions = np.unique(interleaved, return_index=True)
    return interleaved[np.sort(positions)]


def main(argv: list[str] | None = None) -> None:
    from pu_mining.miner import MiningConfig, score_pool, select
    from pu_mining.selection import dfnd_size, hold_back

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="resnet")
    parser.add_argument("--noise-adaptation-weight", type=float, default=1.0)
    parser.add_argument("--size-factor", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    task = load_task()
    teacher = _teacher(args.teacher)
    test_logits = predict_logits(teacher, task.test.images)
    budget = _quarter_of_teacher(teacher)
    pool = _open_pool("wild")
    names = pool.names()

    _log(f"no-labels mining of {pool.name!r} ({len(pool):,} items)")
    clock = time.perf_counter()
    config = MiningConfig(num_threads=args.threads)
    scored = score_pool(teacher, None, pool, config)
    chosen = select(scored, "dfnd")
    mining_s = time.perf_counter() - clock
    logits_of = dict(zip(scored.candidate_ids.tolist(), range(len(scored.candidate_ids)), strict=True))
    job_size = selection_size = len(chosen.ids) + chosen.report.evaluation_from_selection
    if args.size_factor is not None:
        selection_size = dfnd_size(scored.logits, args.size_factor)
    # the job's ranking (dfnd) and the class-interleaved one, each cut at the job's size and held back alike
    cross_entropy = -torch.log_softmax(scored.logits.float(), dim=1).max(dim=1).values.numpy()
    ranked = scored.candidate_ids[np.argsort(cross_entropy, kind="stable")]
    classes = scored.logits.argmax(dim=1).numpy()[[logits_of[int(i)] for i in ranked]]
    uniform = scored.candidate_ids[np.random.default_rng(config.seed).permutation(len(scored.candidate_ids))]
    rankings = {
        "dfnd": ranked,
        "balanced": balanced_order(ranked, classes),
        "random": uniform,
        "mixed": alternate(ranked, uniform),
    }
    training_ids = {order: hold_back(rankings[order], selection_size, config.seed)[0] for order in args.orders}
    if (
        selection_size == job_size
        and "dfnd" in training_ids
        and not np.array_equal(np.sort(training_ids["dfnd"]), np.sort(chosen.ids))
    ):
        raise RuntimeError("the re-ranked dfnd selection differs from the miner's: the benchmark is out of date")

    runs: dict[str, Any] = {}
    for order in args.orders:
        ids = training_ids[order]
        rows = torch.tensor([logits_of[int(i)] for i in ids], dtype=torch.long)
        shuffle = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
        transfer = TransferSet(pool.image_tensor(ids)[shuffle], None, scored.logits[rows][shuffle])
        for seed in range(args.seeds):
            _log(f"ghost: no labels, {order}, {len(ids):,} images ({args.epochs} epochs, seed {seed})")
            overrides: dict[str, Any] = {
                "noise_adaptation_weight": args.noise_adaptation_weight,
                **({"seed": seed} if seed else {}),
            }
            run = _run("ghost", budget, transfer, args.epochs, teacher, test_logits, task, **overrides)
            _log(f"  test accuracy {run['test_accuracy']:.4f} ({run['wall_s']:.0f} s)")
            runs[f"{order}@seed{seed}"] = run

    summary = {}
    for order in args.orders:
        classes_of_set = scored.logits.argmax(dim=1).numpy()[[logits_of[int(i)] for i in training_ids[order]]]
        summary[order] = {
            "images": len(training_ids[order]),
            **seed_figures(runs, order, args.seeds),
            "selection": selection_figures(names, training_ids[order]),
            "class_makeup": np.bincount(classes_of_set, minlength=TASK_CLASSES).tolist(),
        }
    output = {
        "command": "python -m bench.bench_no_labels " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**_machine(), "cores": args.threads},
        "teacher": args.teacher,
        "selection_size": selection_size,
        "noise_adaptation_weight": args.noise_adaptation_weight,
        "job_selection_size": job_size,
        "mining_s": round(mining_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    write_results(summary, output, args.out)


if __name__ == "__main__":
    main()
