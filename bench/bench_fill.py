"""What fills a rare task's default selection best, on the benchmark's wild pool (ghost student).

Usage (repository root; the pool and teacher as for ``bench.bench_table``)::

    python -m bench.bench_fill --fills ranked random mixed balanced uncertain oracle --seeds 3 --epochs 10
        [--teacher resnet|cnn] [--schedule NAME] [--threads 2] [--out docs/results/fill_wild.json]

When fewer pool items score as the task's than the floor (``MiningConfig.min_selection``, 6,000 here), the
``default`` selection (:mod:`pu_mining.selection`) keeps its PU members and fills up to the floor. ``--fills``:

- ``ranked``: the next items of the PU ranking (what the service does): the task's images just below the threshold
  and the look-alikes nearest to the task;
- ``random``: a uniform draw of the other candidates: as many items, of every kind the pool holds;
- ``mixed``: the two in turn (the next-ranked item, a random one, ...): half of each;
- ``balanced``: from the PU ranking past the members, per teacher-predicted class as many as bring every class of
  the training part (members and fill) to the same count, PU order within a class;
- ``uncertain``: of the next ``2 x`` fill-size items of the PU ranking, the half where the teacher's top two
  probabilities are closest (its decision boundaries), kept in PU order;
- ``uniform``: not a fill but the table's ``random_default`` row (the ``random`` selection's training part: a
  uniform draw from the whole pool of the same size), to compare under another ``--schedule``;
- ``oracle``: not a fill but the ceiling of every miner at this size: all the pool's task images (by the truth,
  which no job has), then the PU ranking's other items up to the same size.

The fills replace the non-members of the job's own training part (after its hold-back for evaluation; the
evaluation items are never drawn), so every variant but the oracle has the same members, and all the same size;
the 300 labelled positives are added and a ghost student is distilled for ``--epochs`` (``--schedule``: another
learning-rate schedule than the ghost family's cosine, one of ``compression.distill.config.SCHEDULES``); test
accuracy on the 5,000 test images per DistillConfig seed. The same-size random draw to compare with is the table's
``random_default`` row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench.bench_distill import _log, _machine, _run, _teacher, seed_figures, write_results
from bench.bench_mining import benchmark_positives
from bench.bench_no_labels import alternate
from bench.bench_table import (
    TRUTH_PREFIX,
    _open_pool,
    _pu_transfer_set,
    _quarter_of_teacher,
    pool_logits,
    selection_figures,
)
from bench.task import load_task
from bench.train_teacher import TEACHERS
from compression.distill import predict_logits
from compression.distill.config import SCHEDULES
from storage.hashing import file_sha256

if TYPE_CHECKING:
    from pu_mining.mining_types import ScoredPool

FILLS = ("ranked", "random", "mixed", "balanced", "uncertain", "oracle", "uniform")
FLOOR = 6000


def balanced_fill(members_classes: np.ndarray, tail: np.ndarray, tail_classes: np.ndarray, size: int) -> np.ndarray:
    """``size`` items of ``tail`` (PU order) that bring the members' per-class counts (``members_classes``) as close
    to equal as the tail allows; what the classes cannot take is made up in PU order."""
    num_classes = int(max(members_classes.max(initial=0), tail_classes.max(initial=0))) + 1
    target = (len(members_classes) + size) / num_classes
    need = np.maximum(0, np.ceil(target - np.bincount(members_classes, minlength=num_classes))).astype(np.int64)
    taken = np.zeros(len(tail), dtype=bool)
    for k in range(num_classes):
        positions = np.flatnonzero(tail_classes == k)[: need[k]]
        taken[positions] = True
    chosen = np.flatnonzero(taken)
    if len(chosen) > size:  # rounding: keep the best-ranked
        chosen = chosen[:size]
    elif len(chosen) < size:
        chosen = np.sort(np.concatenate([chosen, np.flatnonzero(~taken)[: size - len(chosen)]]))
    return tail[chosen]


def uncertain_fill(tail: np.ndarray, tail_logits: torch.Tensor, size: int) -> np.ndarray:
    """Of the first ``2 x size`` items of ``tail`` (PU order), the ``size`` with the smallest gap between the
    teacher's top two probabilities, in PU order."""
    window = min(len(tail), 2 * size)
    top_two = torch.softmax(tail_logits[:window].float(), dim=1).topk(2, dim=1).values
    margin = (top_two[:, 0] - top_two[:, 1]).numpy()
    chosen = np.sort(np.argsort(margin, kind="stable")[:size])
    return tail[chosen]


def candidate_positions(scored: ScoredPool, ids: np.ndarray) -> np.ndarray:
    """Where each pool item of ``ids`` sits among the scored candidates (their ids are sorted)."""
    positions = np.searchsorted(scored.candidate_ids, ids)
    if (positions >= len(scored.candidate_ids)).any() or not np.array_equal(scored.candidate_ids[positions], ids):
        raise ValueError("every item must be a candidate of the scored pool")
    return positions


def fill_variants(
    scored: ScoredPool,
    training_ids: np.ndarray,
    evaluation_ids: np.ndarray,
    is_member: np.ndarray,
    is_task: np.ndarray,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every fill of the default selection's training part (``training_ids``, ranked; ``is_member`` per item), each
    of the same size and, but for ``oracle``, with the same members (module docstring). ``scored``: the scored pool
    the selection came from (every pool item a candidate); ``is_task``: the truth per pool item (``oracle`` only)."""
    if scored.scores is None:
        raise ValueError("the fills follow the PU ranking: the pool must be scored with positives")
    members, fill = training_ids[is_member], training_ids[~is_member]
    classes = scored.logits.argmax(dim=1).numpy()
    pu_order = scored.candidate_ids[np.argsort(-scored.scores, kind="stable")]
    tail = pu_order[~np.isin(pu_order, np.concatenate([members, evaluation_ids]))]
    tail_positions = candidate_positions(scored, tail)
    member_positions = candidate_positions(scored, members)
    others = np.setdiff1d(np.arange(len(is_task)), np.concatenate([training_ids, evaluation_ids]))
    drawn = np.random.default_rng(seed).choice(others, size=len(fill), replace=False)
    task_ids = np.flatnonzero(is_task)
    ranked_others = pu_order[~is_task[pu_order]]
    return {
        "ranked": training_ids,
        "random": np.concatenate([members, drawn]),
        "mixed": np.concatenate([members, alternate(fill, drawn)[: len(fill)]]),
        "balanced": np.concatenate(
            [members, balanced_fill(classes[member_positions], tail, classes[tail_positions], len(fill))]
        ),
        "uncertain": np.concatenate(
            [members, uncertain_fill(tail, scored.logits[torch.from_numpy(tail_positions)], len(fill))]
        ),
        "oracle": np.concatenate([task_ids, ranked_others[: len(training_ids) - len(task_ids)]]),
    }


def main(argv: list[str] | None = None) -> None:
    from pu_mining.miner import MiningConfig, score_pool, select

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", nargs="+", choices=FILLS, default=list(FILLS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="resnet")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    task = load_task()
    teacher = _teacher(args.teacher)
    teacher_hash = file_sha256(TEACHERS[args.teacher].path)
    test_logits = predict_logits(teacher, task.test.images)
    positive_logits = predict_logits(teacher, task.positives.images)
    budget = _quarter_of_teacher(teacher)
    pool = _open_pool("wild")
    names = pool.names()

    _log(f"mining {pool.name!r} ({len(pool):,} items), floor {FLOOR:,}")
    clock = time.perf_counter()
    config = MiningConfig(num_threads=args.threads, min_selection=FLOOR)
    scored = score_pool(teacher, benchmark_positives(), pool, config)
    if scored.scores is None:
        raise RuntimeError("the PU classifier gave no scores")
    mining_s = time.perf_counter() - clock
    job = select(scored, "default", min_selection=FLOOR)
    is_member = scored.scores[candidate_positions(scored, job.ids)] > 0
    is_task = np.char.startswith(names.astype(str), TRUTH_PREFIX)
    variants = fill_variants(scored, job.ids, job.evaluation_ids, is_member, is_task, config.seed)
    classes = scored.logits.argmax(dim=1).numpy()
    variants["uniform"] = select(scored, "random", min_selection=FLOOR).ids
    training_ids = {fill: variants[fill] for fill in args.fills}
    members = int(is_member.sum())
    _log(f"{members:,} members in the {len(job.ids):,} training items ({mining_s:.0f} s)")
    for fill in args.fills:
        fill_classes = classes[candidate_positions(scored, training_ids[fill])]
        makeup = np.bincount(fill_classes, minlength=scored.logits.shape[1]).tolist()
        _log(f"  {fill}: {selection_figures(names, training_ids[fill])}, per teacher class {makeup}")

    runs: dict[str, Any] = {}
    for fill in args.fills:
        ids = training_ids[fill]
        logits, _ = pool_logits(teacher, pool, ids, teacher_hash, "wild", args.teacher)
        transfer = _pu_transfer_set(task.positives, positive_logits, pool.image_tensor(ids), logits)
        for seed in range(args.seeds):
            _log(f"ghost: {fill} fill, {len(transfer):,} images ({args.epochs} epochs, seed {seed})")
            overrides: dict[str, Any] = {"seed": seed} if seed else {}
            if args.schedule is not None:
                overrides["schedule"] = args.schedule
            run = _run("ghost", budget, transfer, args.epochs, teacher, test_logits, task, **overrides)
            _log(f"  test accuracy {run['test_accuracy']:.4f} ({run['wall_s']:.0f} s)")
            runs[f"{fill}@seed{seed}"] = run

    summary = {}
    for fill in args.fills:
        summary[fill] = {
            "images": len(training_ids[fill]) + len(task.positives),
            **seed_figures(runs, fill, args.seeds),
            "selection": selection_figures(names, training_ids[fill]),
        }
    output = {
        "command": "python -m bench.bench_fill " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**_machine(), "cores": args.threads},
        "teacher": args.teacher,
        "schedule": args.schedule,
        "members": members,
        "training_items": len(job.ids),
        "mining_s": round(mining_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    write_results(summary, output, args.out)


if __name__ == "__main__":
    main()
