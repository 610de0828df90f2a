"""Candidate recall of the mining's candidate step on the benchmark pools, without the teacher.

    python -m bench.bench_candidates [--budgets 15000 30000 60000] [--threads 2]

For each pool of ../shared/BENCHMARK.md (``benchmark``, ``benchmark-wild``; ingest them first with
``python -m bench.bench_pool_ingest --regime ...``) and budget below the pool: the share of the pool's task images
among the candidates of (a) the old step, the union of the positives' nearest neighbours
(:func:`pu_mining.candidates.nearest_neighbour_candidates`), and (b) the random probe plus embedding scout of
:func:`pu_mining.candidates.find_candidates` with no teacher-confident probe items (zero logits), so the scout is
fitted on the 300 positives alone: a lower bound for what the miner does with a real teacher.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.bench_mining import benchmark_positives
from bench.bench_pool_ingest import open_benchmark_pool_store, pool_name
from pu_mining.candidates import find_candidates, nearest_neighbour_candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[15_000, 30_000, 60_000])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    positives = benchmark_positives()
    rows = []
    for regime in ("on-topic", "wild"):
        pool = open_benchmark_pool_store().open(pool_name(regime))
        embeddings = pool.load_embedder(args.threads)(positives.images)
        truth = np.char.startswith(pool.names().astype(str), "fmnist_task:")
        for budget in args.budgets:
            if budget >= len(pool):
                continue
            started = time.monotonic()
            near, _ = nearest_neighbour_candidates(pool, embeddings, budget)
            found = find_candidates(pool, embeddings, budget, lambda ids: torch.zeros(len(ids), 5), seed=0)
            row = {
                "regime": regime,
                "budget": budget,
                "nearest_neighbours": {
                    "items": len(near),
                    "recall": round(float(truth[near].mean() * len(near) / truth.sum()), 4),
                },
                "probe_and_scout": {
                    "items": len(found.ids),
                    "recall": round(float(truth[found.ids].sum() / truth.sum()), 4),
                },
                "seconds": round(time.monotonic() - started, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
