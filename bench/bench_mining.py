"""Mine the benchmark pool for the benchmark task and score the selection against the truth.

    python -m bench.bench_pool_ingest          # once: the pool (bench/artifacts/pools)
    python -m bench.train_teacher              # once: the teacher (bench/artifacts/teacher.pt)
    python -m bench.bench_mining [--prior true|estimate|VALUE] [--threads 2] [--out docs/results/mining.json]

Positives: the 300 of ../shared/BENCHMARK.md (60 per class, as a user would upload them). Truth: an item is
positive iff it comes from the 29,700 Fashion-MNIST task images (its pool name starts with ``fmnist_task:``).
Prints and writes: candidates and their recall, selected count, precision / recall overall and on the look-alike
Fashion-MNIST classes alone, ROC AUC of the PU scores over the candidates, estimated vs true prior, held-out recall.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_pool_ingest import DEFAULT_ROOT, POOL_NAME, open_benchmark_pool_store
from compression import load_teacher
from pu_mining.benchmark_pool import build_benchmark_pool
from pu_mining.miner import MiningConfig, mine
from pu_mining.positives import Positives
from pu_mining.pu_classifier import roc_auc

TEACHER = Path("bench/artifacts/teacher.pt")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]


def benchmark_positives() -> Positives:
    pool = build_benchmark_pool()
    images, labels = pool.positives
    return Positives(
        images=torch.from_numpy(images).float().div(255).unsqueeze(1),
        labels=torch.from_numpy(labels),
        class_names=CLASS_NAMES,
        names=[f"fmnist_train:{int(i)}" for i in pool.positive_index],
        source_hash="benchmark",
    )


def score(names: np.ndarray, selected: np.ndarray, candidate_ids: np.ndarray, candidate_scores: np.ndarray) -> dict:
    source = np.array([name.split(":", 1)[0] for name in names])
    truth = source == "fmnist_task"
    lookalike = source == "fmnist_lookalike"
    chosen = np.zeros(len(names), dtype=bool)
    chosen[selected] = True
    true_positive = int((chosen & truth).sum())
    in_candidates = np.zeros(len(names), dtype=bool)
    in_candidates[candidate_ids] = True
    candidate_truth = truth[candidate_ids]
    return {
        "pool_items": len(names),
        "true_positives_in_pool": int(truth.sum()),
        "true_prior_pool": round(float(truth.mean()), 4),
        "candidates": len(candidate_ids),
        "candidate_recall": round(float((in_candidates & truth).sum() / truth.sum()), 4),
        "true_prior_candidates": round(float(candidate_truth.mean()), 4),
        "selected": int(chosen.sum()),
        "precision": round(true_positive / max(1, int(chosen.sum())), 4),
        "recall": round(true_positive / int(truth.sum()), 4),
        "lookalike_selected": int((chosen & lookalike).sum()),
        "lookalike_precision": round(true_positive / max(1, true_positive + int((chosen & lookalike).sum())), 4),
        "selected_by_source": {s: int((chosen & (source == s)).sum()) for s in np.unique(source)},
        "roc_auc_candidates": round(roc_auc(candidate_scores[candidate_truth], candidate_scores[~candidate_truth]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--prior", default="estimate", help="'estimate', 'true' (the candidates' true share) or a number"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=MiningConfig.epochs)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    store = open_benchmark_pool_store(args.root)
    pool = store.open(POOL_NAME)
    teacher = load_teacher(TEACHER, input_shape=(1, 28, 28))
    positives = benchmark_positives()
    names = pool.names()
    prior = None
    if args.prior == "true":
        first = mine(teacher, positives, pool, MiningConfig(prior=0.5, epochs=1, num_threads=args.threads))
        prior = float(np.mean([n.startswith("fmnist_task:") for n in names[first.candidate_ids]]))
    elif args.prior != "estimate":
        prior = float(args.prior)
    config = MiningConfig(prior=prior, epochs=args.epochs, num_threads=args.threads)
    result = mine(teacher, positives, pool, config, on_progress=lambda event: print(event, flush=True))
    figures = score(names, result.ids, result.candidate_ids, result.candidate_scores)
    report = result.report
    output = {
        "command": "python -m bench.bench_mining " + " ".join(argv if argv is not None else []),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
        "wall_seconds": round(time.monotonic() - started, 1),
        **figures,
        "prior_used": round(report.prior, 4),
        "prior_estimated": report.prior_estimated,
        "holdout": report.holdout,
        "holdout_recall": None if report.holdout_recall is None else round(report.holdout_recall, 4),
        "duplicates_of_positives": report.duplicates_of_positives,
        "duplicates_within_selection": report.duplicates_within_selection,
        "class_histogram": report.class_histogram,
        "seconds": report.seconds,
    }
    print(json.dumps(output, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(output, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
