"""Mine a benchmark pool for the benchmark task and score every selection strategy against the truth.

    python -m bench.bench_pool_ingest --regime wild      # once per regime: the pool (bench/artifacts/pools)
    python -m bench.train_teacher                        # once: the teacher (bench/artifacts/teacher.pt)
    python -m bench.bench_mining --regime on-topic|wild [--prior true|estimate|VALUE] [--threads 2] [--out F.json]

Positives: the 300 of ../shared/BENCHMARK.md (60 per class, as a user would upload them). Truth: an item is
positive iff it comes from the pool's Fashion-MNIST task images (29,700 on-topic, 1,500 wild; its pool name starts
with ``fmnist_task:``). One :func:`pu_mining.miner.score_pool`, then :func:`pu_mining.miner.select` for every
strategy of :data:`pu_mining.selection.SELECTIONS`. Prints and writes: candidates and their recall, ROC AUC of the
PU scores over the candidates, estimated vs true prior; per strategy the selection's size (training + held back
from it), precision / recall (overall and against the look-alike classes), the held-out recall the report gives,
the evaluation set's size and task share, and the per-class make-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_pool_ingest import DEFAULT_ROOT, open_benchmark_pool_store, pool_name
from bench.train_teacher import TEACHERS
from compression import load_teacher
from pu_mining.benchmark_pool import REGIMES, build_benchmark_pool
from pu_mining.benchmark_task import TASK_CLASS_NAMES
from pu_mining.miner import MiningConfig, MiningResult, ScoredPool, score_pool, select
from pu_mining.positives import Positives
from pu_mining.pu_classifier import roc_auc
from pu_mining.selection import SELECTIONS, self_cross_entropy

CLASS_NAMES = list(TASK_CLASS_NAMES)


def benchmark_positives() -> Positives:
    pool = build_benchmark_pool(seed=None)
    images, labels = pool.positives
    return Positives(
        images=torch.from_numpy(images).float().div(255).unsqueeze(1),
        labels=torch.from_numpy(labels),
        class_names=CLASS_NAMES,
        names=[f"fmnist_train:{int(i)}" for i in pool.positive_index],
        source_hash="benchmark",
    )


def strategy_figures(names: np.ndarray, result: MiningResult) -> dict:
    """Precision / recall of a strategy's selection (training plus the part of it held back for evaluation)."""
    truth = np.array([name.startswith("fmnist_task:") for name in names])
    lookalike = np.array([name.startswith("fmnist_lookalike:") for name in names])
    report = result.report
    from_selection = result.evaluation_ids[: report.evaluation_from_selection]
    selection = np.concatenate([result.ids, from_selection])
    hits = int(truth[selection].sum())
    return {
        "selected": len(selection),
        "training": len(result.ids),
        "precision": round(hits / max(1, len(selection)), 4),
        "recall": round(hits / max(1, int(truth.sum())), 4),
        "training_precision": round(float(truth[result.ids].mean()) if len(result.ids) else 0.0, 4),
        "lookalikes_selected": int(lookalike[selection].sum()),
        "holdout_recall": None if report.holdout_recall is None else round(report.holdout_recall, 4),
        "holdout_recall_interval": report.holdout_recall_interval,
        "evaluation": len(result.evaluation_ids),
        "evaluation_from_selection": report.evaluation_from_selection,
        "evaluation_task_share": round(float(truth[result.evaluation_ids].mean()), 4)
        if len(result.evaluation_ids)
        else None,
        "class_makeup": report.class_histogram,
        "true_task_by_teacher_class": {
            name: int(truth[result.ids[result.teacher_classes == k]].sum()) for k, name in enumerate(CLASS_NAMES)
        },
    }


def default_variants(names: np.ndarray, scored: ScoredPool) -> dict[str, dict[str, float]]:
    """Precision / recall of the PU members (score > 0) after dropping the share ``q`` of them the teacher is least
    confident on, and of the members whose teacher class holds at most ``f`` times the median class: what the
    ``default`` selection's two knobs would buy (measurement only; the truth is not used by the miner)."""
    if scored.scores is None:
        return {}
    truth = np.array([name.startswith("fmnist_task:") for name in names])[scored.candidate_ids]
    members = scored.scores > 0
    cross_entropy = self_cross_entropy(scored.logits)
    classes = scored.logits.argmax(dim=1).numpy()
    out: dict[str, dict[str, float]] = {}

    def figures(chosen: np.ndarray) -> dict[str, float]:
        hits = int((chosen & truth).sum())
        return {
            "selected": int(chosen.sum()),
            "precision": round(hits / max(1, int(chosen.sum())), 4),
            "recall_of_candidates_task": round(hits / max(1, int(truth.sum())), 4),
        }

    for q in (0.0, 0.1, 0.2, 0.3, 0.5):
        chosen = members.copy()
        if q > 0 and members.any():
            cut = np.quantile(cross_entropy[members], 1.0 - q)
            chosen &= cross_entropy <= cut
        out[f"drop_least_confident_{q:g}"] = figures(chosen)
    for threshold in (0.5, 1.0, 2.0):
        out[f"pu_score_above_{threshold:g}"] = figures(scored.scores > threshold)
    out["teacher_class_counts_of_members"] = {
        str(k): int(((classes == k) & members).sum()) for k in range(scored.logits.shape[1])
    }
    return out


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
    parser.add_argument("--regime", choices=REGIMES, default="on-topic")
    parser.add_argument(
        "--prior", default="estimate", help="'estimate', 'true' (the candidates' true share) or a number"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=MiningConfig.epochs)
    parser.add_argument("--candidate-budget", type=int, default=None, help="default: 200 x the positives")
    parser.add_argument(
        "--no-embedding-stage", action="store_true", help="the PU classifier on the teacher's stages alone"
    )
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="resnet", help="the benchmark teacher")
    parser.add_argument(
        "--min-selection",
        type=int,
        default=None,
        help="the floor on the default selection (the service's: pu_mining.selection.default_min_selection)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--dump", type=Path, default=None, help="also save the scores, held-out scores and truth (.npz) for analysis"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    store = open_benchmark_pool_store(args.root)
    pool = store.open(pool_name(args.regime))
    teacher = load_teacher(TEACHERS[args.teacher].path, input_shape=(1, 28, 28))
    positives = benchmark_positives()
    names = pool.names()
    prior = None
    if args.prior == "true":
        first = score_pool(teacher, positives, pool, MiningConfig(prior=0.5, epochs=1, num_threads=args.threads))
        prior = float(np.mean([n.startswith("fmnist_task:") for n in names[first.candidate_ids]]))
    elif args.prior != "estimate":
        prior = float(args.prior)
    config = MiningConfig(
        prior=prior,
        epochs=args.epochs,
        num_threads=args.threads,
        candidate_budget=args.candidate_budget,
        embedding_stage=not args.no_embedding_stage,
        min_selection=args.min_selection,
    )
    scored = score_pool(teacher, positives, pool, config, on_progress=lambda event: print(event, flush=True))
    candidate_scores = scored.scores if scored.scores is not None else np.zeros(len(scored.candidate_ids))
    figures = score(names, scored.candidate_ids, scored.candidate_ids, candidate_scores)
    for key in ("selected", "precision", "recall", "lookalike_selected", "lookalike_precision", "selected_by_source"):
        figures.pop(key)
    strategies = {
        strategy: strategy_figures(names, select(scored, strategy, min_selection=args.min_selection))
        for strategy in SELECTIONS
    }
    output = {
        "command": "python -m bench.bench_mining " + " ".join(argv if argv is not None else sys.argv[1:]),
        "regime": args.regime,
        "teacher": args.teacher,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {args.threads} threads",
        "wall_seconds": round(time.monotonic() - started, 1),
        **figures,
        "candidate_probe": scored.candidates.probe_size,
        "prior_used": round(scored.prior, 4),
        "prior_estimated": scored.prior_estimated,
        "holdout": 0 if scored.held_out_scores is None else len(scored.held_out_scores),
        "seconds": scored.seconds,
        "strategies": strategies,
        "default_variants": default_variants(names, scored),
    }
    print(json.dumps(output, indent=1))
    if args.dump is not None and scored.scores is not None and scored.held_out_scores is not None:
        args.dump.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            args.dump,
            candidate_ids=scored.candidate_ids,
            scores=scored.scores,
            logits=scored.logits.numpy(),
            held_out_scores=scored.held_out_scores,
            held_out_classes=scored.held_out_classes if scored.held_out_classes is not None else np.empty(0),
            truth=np.array([name.startswith("fmnist_task:") for name in names])[scored.candidate_ids],
            lookalike=np.array([name.startswith("fmnist_lookalike:") for name in names])[scored.candidate_ids],
            prior=scored.prior,
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(output, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
