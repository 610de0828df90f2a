"""Mine a pool for the images of a teacher's task: candidates, the multi-scale PU classifier, a selection.

Positive-Unlabeled compression (Xu et al., "Positive-Unlabeled Compression on the Cloud", NeurIPS 2019,
arXiv:1909.09757): the user gives a teacher and a few labelled positives; the pool is unlabelled. :func:`mine` is
:func:`score_pool` then :func:`select`:

1. **Candidates** (:mod:`pu_mining.candidates`): every pool item when ``candidate_budget`` covers the pool (the
   default budget, :data:`CANDIDATES_PER_POSITIVE` times the positives, covers pools up to 200x the upload);
   otherwise a random probe, the teacher's most confident probe items per class and the positives as neighbour
   queries. This stage only saves teacher passes: it must lose few positives.
2. **PU classifier.** The teacher's pooled feature maps at each resolution stage (:mod:`pu_mining.features`) of
   positives and candidates, plus (``embedding_stage``, the default) the pool embedder's vector as one more
   stage, feed the squeeze-and-excitation attention head (:mod:`pu_mining.pu_classifier`), trained with the
   non-negative PU risk (Kiryo et al., NeurIPS 2017, arXiv:1703.00593). The class prior
   ``pi`` (share of the task's images among the candidates) is the user's, or estimated
   (:func:`pu_mining.pu_classifier.estimate_prior_from_features`, on the teacher's stages): the median over
   :data:`PRIOR_SPLITS` random train/held-out splits of the Elkan-Noto estimate (Elkan & Noto, KDD 2008). The
   embedding stage is measured, not assumed: on the benchmark's wild pool (task share 0.03, most negatives
   Fashion-MNIST classes the teacher never saw) the teacher's stages alone reach a ROC AUC of 0.62 over the
   candidates and recall 0.36; with the embedding 0.97 and 0.67 (docs/results.md, "Measured: mining both
   regimes").
3. **Hold-out check.** A part of the positives (``holdout_fraction``, stratified) is not used for training but
   hidden among the candidates; the share of them the selection would have taken -- counting the chance that the
   candidate step reached them (:meth:`pu_mining.candidates.Candidates.reach`) -- is the *held-out recall*, a
   recall estimate that needs no ground truth about the pool.
4. **Selection** (:mod:`pu_mining.selection`, ``MiningConfig.selection``): ``default``, ``pu``, ``pu-half``,
   ``random`` or ``dfnd``; near-duplicates (cosine of pool embeddings >= ``duplicate_threshold``) of a positive or
   of a better-ranked item are dropped; a part of the selection and the next items of its ranking are held back
   as the evaluation set (``evaluation_ids``), never trained on.

**No labels** (``positives=None``): steps 2-3 are skipped and the selection is ``dfnd`` (or ``random``): the
teacher's most self-confident items (Chen et al., "Learning Student Networks in the Wild", CVPR 2021).

Everything is seeded; on one machine and thread count the result is deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from compression.metrics.intervals import wilson_interval
from compression.teachers import Teacher
from pu_mining.candidates import find_candidates
from pu_mining.features import feature_taps
from pu_mining.mining_types import MiningCancelled, MiningConfig, MiningReport, MiningResult, ScoredPool
from pu_mining.near_duplicates import remove_near_duplicates
from pu_mining.pool import Pool
from pu_mining.positives import Positives, split_holdout
from pu_mining.pu_classifier import estimate_prior_from_features, train_pu_classifier
from pu_mining.selection import SELECTIONS, Ranking, class_makeup, hold_back, rank, self_cross_entropy

__all__ = [
    "CANDIDATES_PER_POSITIVE",
    "NO_LABELS_CANDIDATE_BUDGET",
    "SELECTIONS",
    "MiningCancelled",
    "MiningConfig",
    "MiningReport",
    "MiningResult",
    "ScoredPool",
    "mine",
    "score_pool",
    "select",
]

CANDIDATES_PER_POSITIVE = 200
NO_LABELS_CANDIDATE_BUDGET = 100_000
"""Candidates without positives: a uniform sample of this many pool items (all of a smaller pool)."""
PRIOR_SPLITS = 3
MIN_POOL_ITEMS = 100
_FEATURE_BATCH = 512
_HISTOGRAM_BINS = 40

ProgressCallback = Callable[[dict[str, Any]], None]


def _with_held(unlabelled: list[torch.Tensor], held: list[torch.Tensor] | None) -> list[torch.Tensor]:
    """The held-out positives hide among the candidates: unlabelled rows for the classifier."""
    return unlabelled if held is None else [torch.cat([u, h]) for u, h in zip(unlabelled, held, strict=True)]


def _as_tensor(vectors: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))


def _check_inputs(teacher: Teacher, positives: Positives | None, pool: Pool) -> None:
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a compression.Teacher, got {type(teacher).__name__}")
    if positives is not None and not isinstance(positives, Positives):
        raise TypeError(f"positives must be pu_mining.positives.Positives or None, got {type(positives).__name__}")
    if not isinstance(pool, Pool):
        raise TypeError(f"pool must be a pu_mining.pool.Pool, got {type(pool).__name__}")
    if len(pool) < MIN_POOL_ITEMS:
        raise ValueError(f"pool {pool.name!r} has {len(pool)} items; mining needs at least {MIN_POOL_ITEMS}")
    if positives is not None and len(positives) == 0:
        raise ValueError("no positives to mine with (pass positives=None to select without labels)")


def score_pool(
    teacher: Teacher,
    positives: Positives | None,
    pool: Pool,
    config: MiningConfig | None = None,
    *,
    class_names: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScoredPool:
    """Steps 1-3 of the module docstring: candidates, their teacher logits and (with positives) PU scores."""
    config = config or MiningConfig()
    _check_inputs(teacher, positives, pool)
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

    training: Positives | None = positives
    held_out: Positives | None = None
    if positives is not None and config.holdout_fraction > 0 and len(positives) >= 2 * len(positives.class_names):
        training, held_out = split_holdout(positives, config.holdout_fraction, config.seed)
    if positives is None:
        budget = min(len(pool), config.candidate_budget or NO_LABELS_CANDIDATE_BUDGET)
    else:
        budget = min(len(pool), config.candidate_budget or CANDIDATES_PER_POSITIVE * len(positives))

    taps = feature_taps(teacher, num_threads=config.num_threads)
    computed: dict[str, Any] = {}

    def features_of(ids: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        parts: list[list[torch.Tensor]] = []
        logit_parts: list[torch.Tensor] = []
        for start in range(0, len(ids), 8 * _FEATURE_BATCH):
            chunk = ids[start : start + 8 * _FEATURE_BATCH]
            features, logits = taps.features_and_logits(pool.image_tensor(chunk), batch_size=_FEATURE_BATCH)
            parts.append(features)
            logit_parts.append(logits)
            if should_stop is not None and should_stop():
                raise MiningCancelled("mining stopped while computing teacher features")
        stages = len(taps.stages)
        if not parts:
            return [torch.empty(0, c) for c in taps.channels], torch.empty(0, 0)
        return [torch.cat([part[s] for part in parts]) for s in range(stages)], torch.cat(logit_parts)

    def probe_logits(ids: np.ndarray) -> torch.Tensor:
        probe_features, probe_logits_ = features_of(ids)
        computed["ids"], computed["features"], computed["logits"] = ids, probe_features, probe_logits_
        return probe_logits_

    embedder = pool.load_embedder(config.num_threads) if training is not None else None
    positive_embeddings = embedder(training.images) if embedder is not None and training is not None else None
    candidates = find_candidates(pool, positive_embeddings, budget, probe_logits, config.seed)
    step("candidates", 0.1)

    probed = computed.get("ids", np.empty(0, dtype=np.int64))
    missing = np.setdiff1d(candidates.ids, probed)
    unlabelled, logits = features_of(missing)
    if len(probed):  # the probe's teacher pass is reused: the rows are put back in candidate id order
        ids_in_order = np.concatenate([missing, probed])
        order = torch.from_numpy(np.argsort(ids_in_order, kind="stable"))
        unlabelled = [torch.cat([u, p])[order] for u, p in zip(unlabelled, computed["features"], strict=True)]
        logits = torch.cat([logits, computed["logits"]])[order]
        computed.clear()
    step("teacher_features", 0.6)

    names = list(class_names or (positives.class_names if positives is not None else []))
    names += [str(k) for k in range(len(names), logits.shape[1])]
    if positives is None or training is None:
        return ScoredPool(
            pool,
            candidates,
            None,
            logits,
            names,
            None,
            0,
            None,
            None,
            None,
            0.0,
            False,
            None,
            budget,
            [],
            seconds,
            config.duplicate_threshold,
            config.seed,
        )

    positive_features = taps(training.images)
    held_features, held_logits = (None, None)
    held_embeddings = None
    if held_out is not None:
        held_features, held_logits = taps.features_and_logits(held_out.images)
        held_embeddings = embedder(held_out.images) if embedder is not None else None
    unlabelled_with_held = _with_held(unlabelled, held_features)
    if config.prior is not None:
        prior, prior_estimated, prior_method = float(config.prior), False, None
    else:
        estimates = [
            estimate_prior_from_features(
                positive_features, unlabelled_with_held, method=config.prior_method, seed=config.seed + split
            ).prior
            for split in range(PRIOR_SPLITS)
        ]
        prior = float(min(max(float(np.median(estimates)), 0.001), 0.99))
        prior_estimated, prior_method = True, config.prior_method
    step("prior", 0.65)
    if config.embedding_stage and positive_embeddings is not None:  # the prior stays the teacher stages' estimate
        positive_features = [*positive_features, _as_tensor(positive_embeddings)]
        unlabelled = [*unlabelled, _as_tensor(pool.embeddings(candidates.ids))]
        if held_features is not None and held_embeddings is not None:
            held_features = [*held_features, _as_tensor(held_embeddings)]
        unlabelled_with_held = _with_held(unlabelled, held_features)

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
    held_scores = held_classes = held_reach = None
    if held_out is not None and held_features is not None and held_logits is not None and embedder is not None:
        held_scores = model.predict_scores(held_features).numpy().astype(np.float32)
        held_classes = held_logits.argmax(dim=1).numpy()
        held_reach = candidates.reach(held_embeddings if held_embeddings is not None else embedder(held_out.images))
    step("pu_classifier", 0.9)
    if embedder is None:  # unreachable: positives were given, so the embedder was loaded
        raise RuntimeError("no embedder")
    return ScoredPool(
        pool,
        candidates,
        scores,
        logits,
        names,
        embedder(positives.images),
        len(training),
        held_scores,
        held_classes,
        held_reach,
        prior,
        prior_estimated,
        prior_method,
        budget,
        history,
        seconds,
        config.duplicate_threshold,
        config.seed,
    )


def _estimate_recall(
    scored: ScoredPool, ranking: Ranking, selected_classes: np.ndarray, strategy: str
) -> tuple[float, tuple[float, float]] | None:
    """Held-out recall of the selection and its 95 % Wilson interval: a held-out positive counts (times its
    candidate reach) when it scores as well as the weakest selected item of its teacher class (PU strategies; per
    class because of the quotas). The interval treats the reach-weighted count, rounded, as the successes."""
    if scored.held_out_scores is None or scored.held_out_reach is None or scored.held_out_classes is None:
        return None
    if strategy in ("random", "dfnd") or len(scored.held_out_scores) == 0:
        return None
    selected_scores = ranking.order_scores[: len(selected_classes)]
    passed = np.zeros(len(scored.held_out_scores), dtype=bool)
    for k in np.unique(scored.held_out_classes):
        mine_k = selected_scores[selected_classes == k]
        threshold = float(mine_k.min()) if len(mine_k) else np.inf
        rows = scored.held_out_classes == k
        passed[rows] = scored.held_out_scores[rows] >= threshold
    counted = passed * scored.held_out_reach
    successes = min(len(counted), round(float(counted.sum())))
    low, high = wilson_interval(successes, len(counted))
    return float(counted.mean()), (round(low, 4), round(high, 4))


def select(
    scored: ScoredPool,
    strategy: str = "default",
    *,
    selection_budget: int | None = None,
    min_selection: int | None = None,
    seed: int | None = None,
) -> MiningResult:
    """Step 4: the transfer set and evaluation set of ``strategy`` (:data:`SELECTIONS`) from a :class:`ScoredPool`.

    ``random`` and ``dfnd`` take as many items as ``default`` would when positives were given, else (no labels)
    :func:`pu_mining.selection.dfnd_size`; ``selection_budget`` caps every strategy; ``min_selection`` is the
    fewest items ``default`` takes (:attr:`MiningConfig.min_selection`). Cheap: call it once per
    strategy on one :func:`score_pool`.
    """
    if strategy not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {strategy!r}")
    seed = scored.seed if seed is None else seed
    clock = time.monotonic()
    pool, ids = scored.pool, scored.candidate_ids

    def ranking_of(name: str, default_size: int | None) -> Ranking:
        return rank(
            name,
            ids,
            scored.scores,
            scored.logits,
            pool_size=len(pool),
            default_size=default_size,
            seed=seed,
            min_size=min_selection,
        )

    default_size = None
    if scored.scores is not None and strategy in ("random", "dfnd"):
        default_size = len(_deduplicated(scored, ranking_of("default", None))[0])
    ranking = ranking_of(strategy, default_size)
    of_positives = within = 0
    if strategy in ("default", "pu", "pu-half"):
        kept, of_positives, within = _deduplicated(scored, ranking)
        tail = ranking.ids[ranking.size :]
        keep_scores = dict(zip(ranking.ids.tolist(), ranking.order_scores.tolist(), strict=True))
        new_ids = np.concatenate([kept, tail])
        ranking = Ranking(new_ids, np.array([keep_scores[int(i)] for i in new_ids]), len(kept))
    capped = 0
    if selection_budget is not None and ranking.size > selection_budget:
        capped = ranking.size - selection_budget
        ranking = Ranking(ranking.ids, ranking.order_scores, selection_budget)
    training_ids, evaluation_ids = hold_back(ranking.ids, ranking.size, seed)
    classes_of = _teacher_classes(scored, pool)
    selection_classes = classes_of(ranking.ids[: ranking.size])
    training_classes, evaluation_classes = classes_of(training_ids), classes_of(evaluation_ids)
    order_score = dict(
        zip(ranking.ids[: ranking.size].tolist(), ranking.order_scores[: ranking.size].tolist(), strict=True)
    )
    training_scores = np.array([order_score[int(i)] for i in training_ids], dtype=np.float32)
    recall_estimate = _estimate_recall(scored, ranking, selection_classes, strategy)
    holdout_recall, recall_interval = (None, None) if recall_estimate is None else recall_estimate
    seconds = {**scored.seconds, "selection": round(time.monotonic() - clock, 3)}
    candidate_scores = scored.scores if scored.scores is not None else -self_cross_entropy(scored.logits)
    counts, edges = np.histogram(candidate_scores, bins=_HISTOGRAM_BINS)
    report = MiningReport(
        pool=pool.name,
        pool_version=pool.version,
        pool_items=len(pool),
        positives_used=scored.positives_used,
        candidates=len(ids),
        candidate_budget=scored.candidate_budget,
        selected=len(training_ids),
        prior=scored.prior,
        prior_estimated=scored.prior_estimated,
        prior_method=scored.prior_method,
        holdout=0 if scored.held_out_scores is None else len(scored.held_out_scores),
        holdout_recall=holdout_recall,
        duplicates_of_positives=of_positives,
        duplicates_within_selection=within,
        capped_by_budget=capped,
        score_histogram={"edges": edges.round(4).tolist(), "counts": counts.astype(float).tolist()},
        class_histogram=class_makeup(training_classes, scored.class_names),
        training=scored.training,
        seconds=seconds,
        selection=strategy,
        labels_used=scored.scores is not None,
        candidate_probe=scored.candidates.probe_size,
        candidate_queries=scored.candidates.query_count,
        evaluation=len(evaluation_ids),
        evaluation_from_selection=int(np.isin(evaluation_ids, ranking.ids[: ranking.size]).sum()),
        evaluation_classes=class_makeup(evaluation_classes, scored.class_names),
        min_selection=min_selection if strategy == "default" else None,
        filled=int((ranking.order_scores[: ranking.size] <= 0).sum()) if strategy == "default" else 0,
        holdout_recall_interval=recall_interval,
    )
    return MiningResult(
        ids=training_ids.astype(np.int64),
        scores=training_scores,
        teacher_classes=training_classes,
        candidate_ids=ids.astype(np.int64),
        candidate_scores=np.asarray(candidate_scores, dtype=np.float32),
        report=report,
        evaluation_ids=evaluation_ids.astype(np.int64),
        evaluation_teacher_classes=evaluation_classes,
    )


def _deduplicated(scored: ScoredPool, ranking: Ranking) -> tuple[np.ndarray, int, int]:
    head = ranking.ids[: ranking.size]
    if scored.positive_embeddings is None:
        return head, 0, 0
    return remove_near_duplicates(scored.pool, head, scored.positive_embeddings, scored.duplicate_threshold)


def _teacher_classes(scored: ScoredPool, pool: Pool) -> Callable[[np.ndarray], np.ndarray]:
    """Teacher-predicted classes for pool ids, from the candidates' logits; -1 for items outside the candidates
    (only ``random`` picks those)."""
    candidate_classes = scored.logits.argmax(dim=1).numpy().astype(np.int64)
    lookup = np.full(len(pool), -1, dtype=np.int64)
    lookup[scored.candidate_ids] = candidate_classes

    def classes(ids: np.ndarray) -> np.ndarray:
        return lookup[ids] if len(ids) else np.empty(0, dtype=np.int64)

    return classes


def mine(
    teacher: Teacher,
    positives: Positives | None,
    pool: Pool,
    config: MiningConfig | None = None,
    *,
    class_names: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MiningResult:
    """Find the pool items for distilling ``teacher`` (module docstring): :func:`score_pool` then :func:`select`.

    ``positives``: the user's labelled images (:func:`pu_mining.positives.load_positives`), or None for the
    no-labels mode (the selection is then ``dfnd`` unless ``config.selection`` is ``random``). ``class_names``
    names the teacher's outputs without positives. ValueError for a pool that is too small
    (< :data:`MIN_POOL_ITEMS`), empty positives, positives the teacher cannot take, or a strategy that needs
    labels without them. ``on_progress({"stage": "mining", "step", "progress"})`` after each step;
    :class:`MiningCancelled` when ``should_stop()`` turns true.
    """
    config = config or MiningConfig()
    strategy = config.selection
    if positives is None and strategy not in ("dfnd", "random"):
        if strategy != "default":
            raise ValueError(f"selection {strategy!r} needs labelled positives; without them use 'dfnd' or 'random'")
        strategy = "dfnd"
    scored = score_pool(
        teacher, positives, pool, config, class_names=class_names, on_progress=on_progress, should_stop=should_stop
    )
    result = select(
        scored,
        strategy,
        selection_budget=config.selection_budget,
        min_selection=config.min_selection,
        seed=config.seed,
    )
    if on_progress is not None:
        on_progress({"stage": "mining", "step": "selection", "progress": 1.0})
    return result
