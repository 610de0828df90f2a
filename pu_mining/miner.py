"""Mine a pool for the images of a teacher's task: FAISS candidates, then the multi-scale PU classifier.

Positive-Unlabeled compression (Xu et al., "Positive-Unlabeled Compression on the Cloud", NeurIPS 2019,
arXiv:1909.09757): the user gives a teacher and a few labelled positives; the pool is unlabelled. :func:`mine`:

1. **Candidates.** The positives are embedded with the pool's embedder and the pool's FAISS index returns each
   one's nearest neighbours; every pool item found is ranked by its highest cosine to any positive and the top
   ``candidate_budget`` are kept. Default budget: :data:`CANDIDATES_PER_POSITIVE` times the positives (a user who
   sends 1 % of their data has about 100x as many images of the task; twice that leaves room for the embedder's
   mistakes), at most the pool. This stage only saves teacher passes: it must lose few positives.
2. **PU classifier.** The teacher's pooled feature maps at each resolution stage (:mod:`pu_mining.features`) of
   positives and candidates feed the squeeze-and-excitation attention head (:mod:`pu_mining.pu_classifier`),
   trained with the non-negative PU risk (Kiryo et al., NeurIPS 2017, arXiv:1703.00593). The class prior
   ``pi`` (share of the task's images among the candidates) is the user's, or estimated
   (:func:`pu_mining.pu_classifier.estimate_prior_from_features`): the median over :data:`PRIOR_SPLITS` random
   train/held-out splits of the Elkan-Noto estimate (Elkan & Noto, KDD 2008). Measured on the benchmark's
   candidates (true prior 0.79), five splits gave Elkan-Noto 0.75-0.78 and Best-Bin (Garg et al., NeurIPS 2021)
   0.83-0.92 (and 0.68 on another split): Best-Bin's bin choice is too unstable with a few hundred positives.
3. **Hold-out check.** A part of the positives (``holdout_fraction``, stratified) is not used for training but
   hidden among the candidates; the share of them that the classifier selects is the *held-out recall*, a
   recall estimate that needs no ground truth about the pool.
4. **Selection.** Candidates scoring above zero, best first, capped at ``selection_budget``; near-duplicates
   (cosine of pool embeddings >= ``duplicate_threshold``) of a positive or of a better-scoring selected item are
   dropped. Each selected item's teacher-predicted class is recorded (the same teacher pass gives the logits).

Everything is seeded; on one machine and thread count the result is deterministic.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from compression.teachers import Teacher
from pu_mining.features import feature_taps
from pu_mining.nnpu import PriorMethod
from pu_mining.pool import Pool
from pu_mining.positives import Positives, split_holdout
from pu_mining.pu_classifier import estimate_prior_from_features, train_pu_classifier

__all__ = ["CANDIDATES_PER_POSITIVE", "MiningCancelled", "MiningConfig", "MiningReport", "MiningResult", "mine"]

CANDIDATES_PER_POSITIVE = 200
PRIOR_SPLITS = 3
MIN_POOL_ITEMS = 100
_FEATURE_BATCH = 512
_HISTOGRAM_BINS = 40

ProgressCallback = Callable[[dict[str, Any]], None]


class MiningCancelled(RuntimeError):  # noqa: N818  (a request, not an error)
    """``should_stop()`` turned true during :func:`mine`."""


@dataclass(frozen=True)
class MiningConfig:
    """Settings of :func:`mine`; see the module docstring for what each step does."""

    candidate_budget: int | None = None
    selection_budget: int | None = None
    prior: float | None = None
    prior_method: PriorMethod = "elkan_noto"
    holdout_fraction: float = 0.2
    epochs: int = 10
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 256
    duplicate_threshold: float = 0.99
    seed: int = 0
    num_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("candidate_budget", "selection_budget"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.prior is not None and not (isinstance(self.prior, int | float) and 0.0 < self.prior < 1.0):
            raise ValueError(f"prior must be in (0, 1) or None, got {self.prior!r}")
        if not (isinstance(self.holdout_fraction, int | float) and 0.0 <= self.holdout_fraction < 0.5):
            raise ValueError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction!r}")
        if not (isinstance(self.duplicate_threshold, int | float) and 0.0 < self.duplicate_threshold <= 1.0):
            raise ValueError(f"duplicate_threshold must be in (0, 1], got {self.duplicate_threshold!r}")
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or (name == "learning_rate" and value == 0):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'learning_rate' else 'non-negative'} "
                    f"number, got {value!r}"
                )


@dataclass
class MiningReport:
    """What :func:`mine` did, for people (``report.html``) and machines (``report.json``)."""

    pool: str
    pool_version: int
    pool_items: int
    positives_used: int
    candidates: int
    candidate_budget: int
    selected: int
    prior: float
    prior_estimated: bool
    prior_method: str | None
    holdout: int
    holdout_recall: float | None
    duplicates_of_positives: int
    duplicates_within_selection: int
    capped_by_budget: int
    score_histogram: dict[str, list[float]]
    class_histogram: dict[str, int]
    training: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MiningResult:
    """Selected pool ``ids`` (best score first) with their ``scores`` and ``teacher_classes``; every candidate's
    id and score (``candidate_ids``, ``candidate_scores``); the :class:`MiningReport`."""

    ids: np.ndarray
    scores: np.ndarray
    teacher_classes: np.ndarray
    candidate_ids: np.ndarray
    candidate_scores: np.ndarray
    report: MiningReport

    def thumbnail_grid(self, pool: Pool, class_names: list[str], per_class: int = 10) -> bytes:
        """A PNG: one row per teacher class, its best-scoring selected items left to right (grey for none)."""
        from PIL import Image

        size = pool.manifest.config.image_size
        rows = max(1, len(class_names))
        canvas = np.full((rows * (size + 2), per_class * (size + 2), 3), 48, dtype=np.uint8)
        for row in range(rows):
            chosen = self.ids[self.teacher_classes == row][:per_class]
            if len(chosen) == 0:
                continue
            images = pool.images(chosen)
            if images.ndim == 3:
                images = np.repeat(images[..., None], 3, axis=3)
            for column, image in enumerate(images):
                top, left = row * (size + 2) + 1, column * (size + 2) + 1
                canvas[top : top + size, left : left + size] = image
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="PNG")
        return buffer.getvalue()


def _candidates(pool: Pool, queries: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool ids with their best cosine to any query, the ``budget`` highest."""
    index = pool.index()
    k = min(len(pool), max(16, math.ceil(4 * budget / len(queries))))
    if index.kind == "hnsw":
        index.set_search_params(ef_search=max(k, 128))
    scores, ids = index.search(queries, k)
    ids, scores = ids.reshape(-1), scores.reshape(-1)
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((-scores, ids))  # per id, best score first
    ids, scores = ids[order], scores[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    ids, scores = ids[first], scores[first]
    best = np.argsort(-scores, kind="stable")[:budget]
    return ids[best], scores[best]


def _remove_near_duplicates(
    pool: Pool, ranked_ids: np.ndarray, positive_embeddings: np.ndarray, threshold: float
) -> tuple[np.ndarray, int, int]:
    """``ranked_ids`` without items whose embedding has cosine >= ``threshold`` with a positive or with an item
    ranked before them. Neighbours come from the pool index; cosines are recomputed exactly."""
    if len(ranked_ids) == 0:
        return ranked_ids, 0, 0
    index = pool.index()
    rank = np.full(len(pool), -1, dtype=np.int64)
    rank[ranked_ids] = np.arange(len(ranked_ids))
    drop = np.zeros(len(ranked_ids), dtype=bool)
    _, near_positive = index.search(positive_embeddings, 16)
    for row, neighbours in enumerate(near_positive):
        neighbours = neighbours[(neighbours >= 0) & (rank[np.maximum(neighbours, 0)] >= 0)]
        if len(neighbours):
            cosines = pool.embeddings(neighbours) @ positive_embeddings[row]
            drop[rank[neighbours[cosines >= threshold]]] = True
    of_positives = int(drop.sum())
    within = 0
    embeddings = pool.embeddings(ranked_ids)
    _, neighbour_ids = index.search(embeddings, 8)
    for position, neighbours in enumerate(neighbour_ids):
        if drop[position]:
            continue
        neighbour_rank = rank[np.maximum(neighbours, 0)]
        earlier = neighbours[(neighbours >= 0) & (neighbour_rank >= 0) & (neighbour_rank < position)]
        earlier = earlier[~drop[rank[earlier]]]
        if len(earlier) and float((pool.embeddings(earlier) @ embeddings[position]).max()) >= threshold:
            drop[position] = True
            within += 1
    return ranked_ids[~drop], of_positives, within


def mine(
    teacher: Teacher,
    positives: Positives,
    pool: Pool,
    config: MiningConfig | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MiningResult:
    """Find the pool items that belong to ``teacher``'s task (module docstring); :class:`MiningResult`.

    ``positives``: the user's labelled images (:func:`pu_mining.positives.load_positives`). ValueError for a
    pool that is too small (< :data:`MIN_POOL_ITEMS`), no positives, or positives the teacher cannot take.
    ``on_progress({"stage": "mining", "step", "progress"})`` after each step; :class:`MiningCancelled` when
    ``should_stop()`` turns true.
    """
    config = config or MiningConfig()
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a compression.Teacher, got {type(teacher).__name__}")
    if not isinstance(positives, Positives):
        raise TypeError(f"positives must be pu_mining.positives.Positives, got {type(positives).__name__}")
    if not isinstance(pool, Pool):
        raise TypeError(f"pool must be a pu_mining.pool.Pool, got {type(pool).__name__}")
    if len(pool) < MIN_POOL_ITEMS:
        raise ValueError(f"pool {pool.name!r} has {len(pool)} items; mining needs at least {MIN_POOL_ITEMS}")
    if len(positives) == 0:
        raise ValueError("no positives to mine with")
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def step(name: str, progress: float) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[name] = round(now - clock, 3)
        clock = now
        if on_progress is not None:
            on_progress({"stage": "mining", "step": name, "progress": progress})
        if should_stop is not None and should_stop():
            raise MiningCancelled(f"mining stopped after {name}")

    if config.holdout_fraction > 0 and len(positives) >= 2 * len(positives.class_names):
        training, held_out = split_holdout(positives, config.holdout_fraction, config.seed)
    else:
        training, held_out = positives, None
    budget = min(len(pool), config.candidate_budget or CANDIDATES_PER_POSITIVE * len(positives))

    embedder = pool.load_embedder(config.num_threads)
    positive_embeddings = embedder(training.images)
    candidate_ids, _ = _candidates(pool, positive_embeddings, budget)
    candidate_ids = np.sort(candidate_ids)
    step("candidates", 0.1)

    taps = feature_taps(teacher, num_threads=config.num_threads)
    positive_features = taps(training.images)
    held_features = taps(held_out.images) if held_out is not None else None
    candidate_features: list[list[torch.Tensor]] = []
    candidate_logits: list[torch.Tensor] = []
    for start in range(0, len(candidate_ids), 8 * _FEATURE_BATCH):
        chunk = pool.image_tensor(candidate_ids[start : start + 8 * _FEATURE_BATCH])
        features, logits = taps.features_and_logits(chunk, batch_size=_FEATURE_BATCH)
        candidate_features.append(features)
        candidate_logits.append(logits)
        if should_stop is not None and should_stop():
            raise MiningCancelled("mining stopped while computing teacher features")
    stages = len(taps.stages)
    unlabelled = [torch.cat([part[s] for part in candidate_features]) for s in range(stages)]
    logits = torch.cat(candidate_logits)
    if held_features is not None:  # hidden among the candidates: unlabelled for the classifier
        unlabelled_with_held = [torch.cat([u, h]) for u, h in zip(unlabelled, held_features, strict=True)]
    else:
        unlabelled_with_held = unlabelled
    step("teacher_features", 0.6)

    if config.prior is not None:
        prior, prior_estimated, prior_method = float(config.prior), False, None
    else:
        estimates = [
            estimate_prior_from_features(
                positive_features, unlabelled_with_held, method=config.prior_method, seed=config.seed + split
            ).prior
            for split in range(PRIOR_SPLITS)
        ]
        prior = float(min(max(float(np.median(estimates)), 0.01), 0.99))
        prior_estimated, prior_method = True, config.prior_method
    step("prior", 0.65)

    model, history = train_pu_classifier(
        positive_features,
        unlabelled_with_held,
        prior,
        epochs=config.epochs,
        lr=config.learning_rate,
        batch_size=config.batch_size,
        seed=config.seed,
        weight_decay=config.weight_decay,
    )
    scores = model.predict_scores(unlabelled).numpy().astype(np.float32)
    holdout_recall = None
    if held_features is not None:
        holdout_recall = float((model.predict_scores(held_features).numpy() > 0).mean())
    step("pu_classifier", 0.9)

    above = np.flatnonzero(scores > 0)
    ranked = above[np.argsort(-scores[above], kind="stable")]
    kept, of_positives, within = _remove_near_duplicates(
        pool, candidate_ids[ranked], embedder(positives.images), config.duplicate_threshold
    )
    capped = 0
    if config.selection_budget is not None and len(kept) > config.selection_budget:
        capped = len(kept) - config.selection_budget
        kept = kept[: config.selection_budget]
    position = np.searchsorted(candidate_ids, kept)
    selected_scores = scores[position]
    teacher_classes = logits[torch.from_numpy(position)].argmax(dim=1).numpy() if len(kept) else np.empty(0, int)
    step("selection", 1.0)

    counts, edges = np.histogram(scores, bins=_HISTOGRAM_BINS)
    names = positives.class_names
    class_counts = np.bincount(teacher_classes, minlength=logits.shape[1]) if len(kept) else np.zeros(logits.shape[1])
    class_histogram = {(names[k] if k < len(names) else str(k)): int(count) for k, count in enumerate(class_counts)}
    report = MiningReport(
        pool=pool.name,
        pool_version=pool.version,
        pool_items=len(pool),
        positives_used=len(training),
        candidates=len(candidate_ids),
        candidate_budget=budget,
        selected=len(kept),
        prior=prior,
        prior_estimated=prior_estimated,
        prior_method=prior_method,
        holdout=0 if held_out is None else len(held_out),
        holdout_recall=holdout_recall,
        duplicates_of_positives=of_positives,
        duplicates_within_selection=within,
        capped_by_budget=capped,
        score_histogram={"edges": edges.round(4).tolist(), "counts": counts.astype(float).tolist()},
        class_histogram=class_histogram,
        training=history,
        seconds=seconds,
    )
    return MiningResult(
        ids=kept.astype(np.int64),
        scores=selected_scores,
        teacher_classes=teacher_classes.astype(np.int64),
        candidate_ids=candidate_ids.astype(np.int64),
        candidate_scores=scores,
        report=report,
    )
