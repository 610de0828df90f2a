"""The candidate step of mining: which pool items the teacher looks at, built to lose few of the task's images.

Positive-Unlabeled compression (Xu et al., arXiv:1909.09757) runs the PU classifier over the pool; the candidate
step only saves teacher passes, so it must not decide membership. :func:`find_candidates`:

- **The budget covers the pool:** every item is a candidate (no search, nothing lost).
- **Otherwise, two parts:**
  1. a uniform random *probe* of the pool (:data:`PROBE_SHARE` of the budget) goes through the teacher: it reaches
     every region of the pool, so task images far from every positive are found at the probe's rate at least;
  2. a linear *scout* on the pool embeddings ranks the rest of the pool: it is fitted (logistic loss) with the
     positives and the probe items the teacher is confident on (top probability >= :data:`QUERY_MIN_CONFIDENCE`,
     teacher-output-based, so task images that look like no uploaded positive count) against the rest of the probe
     (unlabelled; the Elkan-Noto argument: a classifier of labelled against unlabelled ranks like one of positive
     against negative). The best-ranked items fill the budget.

:class:`Candidates` keeps the scout and its cut-off so that :meth:`Candidates.reach` can say, for held-out
positives, how likely each is to have become a candidate had it been in the pool (1 if the scout ranks it above the
cut-off, else the probe's sampling rate): the held-out recall then counts the candidate step's losses too, and
stays an honest estimate of the true recall.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pu_mining.pool import Pool

__all__ = ["PROBE_SHARE", "QUERY_MIN_CONFIDENCE", "Candidates", "find_candidates", "nearest_neighbour_candidates"]

PROBE_SHARE = 0.25
"""Share of the candidate budget drawn uniformly at random from the pool when the budget is below the pool. A
trade-off, measured: on the on-topic benchmark pool (30,000 of 76,713, scout fitted on the positives alone) 0.25
kept 0.758 of the task images and 0.1 kept 0.809; on a pool whose task images are far from every positive (the
test's) 0.1 fell below a plain neighbour search, 0.25 did not."""
SCOUT_WEIGHT_DECAY = 1e-2
SCOUT_ITERATIONS = 100
_SCORE_CHUNK = 8192
QUERY_MIN_CONFIDENCE = 0.9
"""A probe item becomes a query only when the teacher's top probability on it is at least this."""

#: ``logits(ids) -> (N, K)`` teacher logits for pool items (the miner caches the pass for reuse).
LogitsFunction = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class Candidates:
    """Sorted candidate ``ids``; ``probe_rate``: the chance that any one pool item entered through the random
    probe (1.0 when every item is a candidate); the scout's ``weights`` / ``bias`` and ``cutoff``: an item the
    scout scores at least ``cutoff`` was a candidate (``inf``: no scout ran); ``queries``: labelled rows it was
    fitted with (positives and confident probe items)."""

    ids: np.ndarray
    probe_rate: float
    probe_size: int
    query_count: int = 0
    weights: np.ndarray | None = None
    bias: float = 0.0
    cutoff: float = math.inf

    def scout_scores(self, embeddings: np.ndarray) -> np.ndarray:
        if self.weights is None:
            return np.full(len(embeddings), -math.inf)
        return np.asarray(embeddings, dtype=np.float32) @ self.weights + self.bias

    def reach(self, embeddings: np.ndarray) -> np.ndarray:
        """For items outside the pool (held-out positives), the probability each would have been a candidate."""
        if self.probe_rate >= 1.0 or len(embeddings) == 0:
            return np.ones(len(embeddings), dtype=np.float64)
        return np.where(self.scout_scores(embeddings) >= self.cutoff, 1.0, self.probe_rate)


def nearest_neighbour_candidates(pool: Pool, queries: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool ids with their best cosine to any query, the ``budget`` highest (one FAISS search per query)."""
    if budget <= 0 or len(queries) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    index = pool.index()
    k = min(len(pool), max(16, math.ceil(4 * budget / len(queries))))
    if index.kind == "hnsw":
        index.set_search_params(ef_search=max(k, 128))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    ids, scores = ids.reshape(-1), scores.reshape(-1)
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((-scores, ids))  # per id, best score first
    ids, scores = ids[order], scores[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    ids, scores = ids[first], scores[first]
    best = np.argsort(-scores, kind="stable")[:budget]
    return ids[best].astype(np.int64), scores[best]


def _fit_scout(labelled: np.ndarray, unlabelled: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Balanced logistic regression, labelled (1) against unlabelled (0), L2 ``SCOUT_WEIGHT_DECAY``; full-batch."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.concatenate([labelled, unlabelled]).astype(np.float32))
    y = torch.cat([torch.ones(len(labelled)), torch.zeros(len(unlabelled))])
    weight = torch.cat(
        [torch.full((len(labelled),), 0.5 / len(labelled)), torch.full((len(unlabelled),), 0.5 / len(unlabelled))]
    )
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = (torch.randn(x.shape[1], generator=generator) * 0.01).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=SCOUT_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none") * weight).sum()
        loss = loss + SCOUT_WEIGHT_DECAY * (w * w).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        weights = (w / std).numpy().astype(np.float32)
        bias = float(b - (mean / std * w).sum())
    return weights, bias


def _confident(logits: torch.Tensor) -> np.ndarray:
    """Rows whose top teacher probability is at least :data:`QUERY_MIN_CONFIDENCE`."""
    return np.flatnonzero(torch.softmax(logits.float(), dim=1).max(dim=1).values.numpy() >= QUERY_MIN_CONFIDENCE)


def find_candidates(
    pool: Pool,
    positive_embeddings: np.ndarray | None,
    budget: int,
    teacher_logits: LogitsFunction,
    seed: int,
) -> Candidates:
    """The candidates within ``budget`` (module docstring); ``positive_embeddings`` may be None (no labels: the
    candidates are a uniform sample of ``budget`` items)."""
    if budget >= len(pool):
        return Candidates(np.arange(len(pool), dtype=np.int64), 1.0, len(pool))
    rng = np.random.default_rng(seed)
    probe_size = budget if positive_embeddings is None else max(1, round(PROBE_SHARE * budget))
    probe = np.sort(rng.choice(len(pool), size=probe_size, replace=False)).astype(np.int64)
    probe_rate = probe_size / len(pool)
    if positive_embeddings is None or probe_size >= budget:
        return Candidates(probe, probe_rate, probe_size)
    confident = _confident(teacher_logits(probe))
    labelled = np.concatenate([np.asarray(positive_embeddings, dtype=np.float32), pool.embeddings(probe[confident])])
    unlabelled_rows = np.setdiff1d(np.arange(probe_size), confident)
    if len(unlabelled_rows) == 0:
        unlabelled_rows = np.arange(probe_size)
    weights, bias = _fit_scout(labelled, pool.embeddings(probe[unlabelled_rows]), seed)
    scores = np.empty(len(pool), dtype=np.float32)
    for start in range(0, len(pool), _SCORE_CHUNK):
        rows = np.arange(start, min(len(pool), start + _SCORE_CHUNK))
        scores[rows] = pool.embeddings(rows) @ weights + bias
    scores[probe] = -np.inf
    rest = budget - probe_size
    best = np.argpartition(-scores, rest - 1)[:rest]
    cutoff = float(scores[best].min())
    ids = np.union1d(probe, best).astype(np.int64)
    return Candidates(ids, probe_rate, probe_size, len(labelled), weights, bias, cutoff)
