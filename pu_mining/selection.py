"""Selection strategies: which scored pool items become the transfer set, and which are held back to evaluate.

Every strategy turns the candidates' scores into one *ranking* (best first) and a *size*; the transfer set is the
ranking's head. :data:`SELECTIONS`:

- ``pu``: every candidate the PU classifier scores above zero, best first (PU-s1 of Xu et al., "Positive-Unlabeled
  Compression on the Cloud", arXiv:1909.09757).
- ``pu-half``: the better-scoring half of ``pu`` (PU-s2).
- ``random``: pool items drawn uniformly at random, as many as ``default`` selects (the baseline that shows what
  choosing is worth).
- ``dfnd``: no labels used: the pool items with the lowest teacher self-cross-entropy ``-log max_k p_k(x)`` (Chen
  et al., "Learning Student Networks in the Wild", CVPR 2021), as many as ``default`` selects when positives were
  given, else :func:`dfnd_size`. Distil it with :mod:`compression.distill.noise_adaptation`.
- ``default``: the PU members (score above zero) whose teacher confidence is not among the lowest
  (:data:`DEFAULT_MIN_CONFIDENCE_QUANTILE` of the members), ranked by PU score within per-class quotas by the
  teacher's predicted class (no class over :data:`CLASS_QUOTA_FACTOR` times the median class), capped by
  ``selection_budget`` (the caller's size for its time budget); when those members are fewer than ``min_size`` (a
  rare task in a large pool), the next items of the same ranking fill the selection up to it (a small transfer set
  is what limits a student distilled from a rare task: the teacher's outputs on near misses still teach). What it
  buys on the benchmark is in docs/results.md.

**Evaluation hold-back** (:func:`hold_back`): a seeded uniform sample of the selection
(:data:`EVALUATION_SHARE`, at most :data:`EVALUATION_TARGET`) is held back from training, and the next items of the
same ranking (just below the cut, never trained on) top it up to :data:`EVALUATION_TARGET` where the pool allows:
the set on which a report measures the student's agreement with the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CLASS_QUOTA_FACTOR",
    "DEFAULT_MIN_CONFIDENCE_QUANTILE",
    "DFND_MIN_CONFIDENCE",
    "DFND_MIN_SHARE",
    "DFND_SIZE_FACTOR",
    "EVALUATION_SHARE",
    "EVALUATION_TARGET",
    "MIN_SELECTION",
    "MIN_SELECTION_POOL_SHARE",
    "SELECTIONS",
    "Ranking",
    "class_makeup",
    "default_min_selection",
    "dfnd_size",
    "hold_back",
    "rank",
    "self_cross_entropy",
]

SELECTIONS = ("default", "pu", "pu-half", "random", "dfnd")
EVALUATION_TARGET = 1000
"""Images the held-back evaluation set aims for (teacher agreement on 1,000 images: +-3 points at 95 %)."""
EVALUATION_SHARE = 0.1
"""The largest share of the selection held back from training for evaluation (a tenth: the transfer set keeps 90 %;
the next-ranked items make up the rest of the evaluation set)."""
DFND_MIN_CONFIDENCE = 0.9
"""No-labels size rule: DFND counts the pool items on which the teacher's top probability is at least this ..."""
DFND_SIZE_FACTOR = 1.5
"""... takes this many times as many (the next most self-confident items too; never more than the candidates) ...
Measured on the benchmark's wild pool (ghost student, 3 seeds, equal image passes; docs/results.md, "The no-labels
mode as a job runs it"): 1.5 times the confident items for 2 epochs 91.79 % against 90.91 % for the confident items
alone for 3 epochs, higher on every seed; the whole pool for 1 epoch did worse (fewer passes, one epoch)."""
DFND_MIN_SHARE = 0.05
"""... but never fewer than this share of the candidates (a poorly calibrated teacher is rarely that confident)."""
CLASS_QUOTA_FACTOR = 2.0
"""``default``: no teacher class may hold more than this many times the median class's share of the selection."""
DEFAULT_MIN_CONFIDENCE_QUANTILE = 0.0
"""``default``: the share of the PU members with the least teacher confidence that is dropped."""
MIN_SELECTION = 6000
"""The service's floor on the ``default`` selection (:func:`default_min_selection`). Measured on the benchmark's
wild pool, ghost student, equal image passes (docs/results.md, "Filling a rare task's selection"): 1,214 PU members
for 30 epochs 90.01 % (3 seeds); filled to 6,000 items (the selection's recall of the task's images 0.63 -> 0.91)
for 8 epochs 92.00 % (6 seeds), in three quarters of the time, against 90.33 % for a random draw of the same size
(10 epochs: 93.33 % against 91.80 %, 3 seeds). With a second teacher (plain CNN), whose members already hold 0.76
of the task's images, filling ties with the members only and beats the random draw on every seed."""
MIN_SELECTION_POOL_SHARE = 0.125
"""... but the floor never takes more than this share of the pool: a selection stays a selection."""


@dataclass(frozen=True)
class Ranking:
    """Pool ``ids`` best first and how many of them form the selection (``size``); ``order_scores`` what they
    were ranked by (higher is better)."""

    ids: np.ndarray
    order_scores: np.ndarray
    size: int


def self_cross_entropy(logits: torch.Tensor) -> np.ndarray:
    """``-log max_k softmax(logits)_k`` per row: the teacher's cross-entropy against its own hard label (DFND)."""
    return (-torch.log_softmax(logits.float(), dim=1).max(dim=1).values).numpy().astype(np.float64)


def default_min_selection(pool_size: int) -> int:
    """The floor on the ``default`` selection for a pool of ``pool_size`` items: :data:`MIN_SELECTION`, at most
    :data:`MIN_SELECTION_POOL_SHARE` of the pool (at least 1)."""
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
        raise ValueError(f"pool_size must be a non-negative int, got {pool_size!r}")
    return max(1, min(MIN_SELECTION, int(MIN_SELECTION_POOL_SHARE * pool_size)))


def dfnd_size(logits: torch.Tensor, factor: float = DFND_SIZE_FACTOR) -> int:
    """The no-labels selection's size among candidates with these teacher ``logits``: ``factor`` times the items whose
    top teacher probability is >= :data:`DFND_MIN_CONFIDENCE`, at least :data:`DFND_MIN_SHARE` of them, at most
    all."""
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 0:
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    confident = int((self_cross_entropy(logits) <= -np.log(DFND_MIN_CONFIDENCE)).sum())
    size = max(int(np.ceil(factor * confident)), int(np.ceil(DFND_MIN_SHARE * len(logits))))
    return min(size, len(logits))


def _quota_cap(ids: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """``ids`` (best first) keeping at most ``CLASS_QUOTA_FACTOR x median`` items of each class, order kept."""
    counts = np.bincount(classes, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) == 0:
        return ids
    cap = max(1, int(np.ceil(CLASS_QUOTA_FACTOR * float(np.median(present)))))
    seen = np.zeros(num_classes, dtype=np.int64)
    keep = np.zeros(len(ids), dtype=bool)
    for position, k in enumerate(classes):
        if seen[k] < cap:
            keep[position] = True
            seen[k] += 1
    return ids[keep]


def rank(
    strategy: str,
    candidate_ids: np.ndarray,
    pu_scores: np.ndarray | None,
    candidate_logits: torch.Tensor,
    *,
    pool_size: int,
    default_size: int | None,
    seed: int,
    min_size: int | None = None,
) -> Ranking:
    """The ranking of ``strategy`` over the candidates (``pu_scores`` None: no labels, only ``dfnd``/``random``).

    ``default_size``: the ``default`` selection's size, which ``random`` and ``dfnd`` match when it is given;
    ``min_size``: the fewest items ``default`` selects while there are candidates (module docstring).
    """
    if strategy not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {strategy!r}")
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(pool_size).astype(np.int64)
        size = default_size if default_size is not None else dfnd_size(candidate_logits)
        return Ranking(order, np.zeros(len(order)), min(size, pool_size))
    if strategy == "dfnd":
        cross_entropy = self_cross_entropy(candidate_logits)
        order = np.argsort(cross_entropy, kind="stable")
        size = default_size if default_size is not None else dfnd_size(candidate_logits)
        return Ranking(candidate_ids[order], -cross_entropy[order], min(size, len(order)))
    if pu_scores is None:
        raise ValueError(f"selection {strategy!r} needs labelled positives; without them use 'dfnd' or 'random'")
    order = np.argsort(-pu_scores, kind="stable")
    members = int((pu_scores > 0).sum())
    if strategy in ("pu", "pu-half"):
        size = members if strategy == "pu" else members // 2
        return Ranking(candidate_ids[order], pu_scores[order], size)
    # default
    head, tail = order[:members], order[members:]
    classes = candidate_logits.argmax(dim=1).numpy()
    if DEFAULT_MIN_CONFIDENCE_QUANTILE > 0 and members:
        cross_entropy = self_cross_entropy(candidate_logits[torch.from_numpy(head)])
        cut = np.quantile(cross_entropy, 1.0 - DEFAULT_MIN_CONFIDENCE_QUANTILE)
        confident = cross_entropy <= cut
        head, tail = head[confident], np.concatenate([head[~confident], tail])
    kept_positions = _quota_cap(np.arange(len(head)), classes[head], candidate_logits.shape[1])
    dropped = np.setdiff1d(np.arange(len(head)), kept_positions)
    ranked = np.concatenate([head[kept_positions], head[dropped], tail])
    size = len(kept_positions)
    if min_size is not None and size < min_size:
        size = min(min_size, len(ranked))
    return Ranking(candidate_ids[ranked], pu_scores[ranked], size)


def hold_back(ranked_ids: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training, evaluation)`` from a ranking whose head of ``size`` is the selection (module docstring)."""
    selection = ranked_ids[:size]
    from_selection = min(int(EVALUATION_SHARE * len(selection)), EVALUATION_TARGET)
    held = np.zeros(len(selection), dtype=bool)
    if from_selection:
        held[np.random.default_rng(seed).choice(len(selection), size=from_selection, replace=False)] = True
    top_up = ranked_ids[size : size + EVALUATION_TARGET - from_selection]
    return selection[~held], np.concatenate([selection[held], top_up]).astype(np.int64)


def class_makeup(classes: np.ndarray, class_names: list[str]) -> dict[str, int]:
    """Items per teacher-predicted class, by name (``str(k)`` past the given names); items the teacher did not see
    (class -1: ``random`` items outside the candidates) are counted under ``"not scored"`` when there are any."""
    classes = np.asarray(classes, dtype=np.int64)
    seen = classes[classes >= 0]
    counts = np.bincount(seen, minlength=len(class_names)) if len(seen) else np.zeros(len(class_names), np.int64)
    makeup = {(class_names[k] if k < len(class_names) else str(k)): int(c) for k, c in enumerate(counts)}
    if (classes < 0).any():
        makeup["not scored"] = int((classes < 0).sum())
    return makeup
