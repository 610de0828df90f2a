"""mine(): a real (small) teacher, real images, a real pool; the selection must be mostly the task's images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compression.teachers import Teacher
from pu_mining.candidates import PROBE_SHARE, nearest_neighbour_candidates
from pu_mining.embedder import load_embedder
from pu_mining.image_files import ImageRecord
from pu_mining.miner import MiningCancelled, MiningConfig, mine, score_pool, select
from pu_mining.pool import Pool, PoolConfig, PoolStore, RecordSource
from pu_mining.positives import Positives
from pu_mining.selection import (
    DFND_MIN_CONFIDENCE,
    DFND_MIN_SHARE,
    DFND_SIZE_FACTOR,
    EVALUATION_SHARE,
    EVALUATION_TARGET,
    SELECTIONS,
    self_cross_entropy,
)
from pu_mining.sources import animal_mnist, fashion_mnist, mnist_digits
from storage import LocalBlobStore
from tests.fashion_mnist import TASK_CLASS_NAMES, task_images

CLASSES = list(TASK_CLASS_NAMES)


@pytest.fixture(scope="module")
def teacher(trained_teacher: Teacher) -> Teacher:
    """The suite's trained teacher (tests/teachers.py): three resolution stages for the miner to tap."""
    return trained_teacher


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    """400 task images (Fashion-MNIST test, classes 0-4) among 400 MNIST digits and 400 animal silhouettes."""
    task, _ = task_images("test", 400)
    task_uint8 = task.squeeze(1).mul(255).round().to(torch.uint8).numpy()
    digits, _ = mnist_digits()
    animals, _ = animal_mnist()

    def records(name: str, images: np.ndarray) -> RecordSource:
        return RecordSource(name, (ImageRecord(name, str(i), image) for i, image in enumerate(images)))

    root = tmp_path_factory.mktemp("pools")
    store = PoolStore(LocalBlobStore(root / "blobs"), cache_dir=root / "cache")
    config = PoolConfig(image_size=28, channels=1, embedder_resolution=32, shard_size=500)
    store.ingest(
        "small",
        [records("task", task_uint8), records("digits", digits[:400]), records("animals", animals[:400])],
        config=config,
        embedder=load_embedder(resolution=32, num_threads=1),
    )
    return store.open("small")


@pytest.fixture(scope="module")
def positives() -> Positives:
    images, labels = task_images("train", 2000)
    keep = torch.cat([torch.nonzero(labels == k).flatten()[:12] for k in range(5)])  # 12 per class, not in the pool
    return Positives(images[keep], labels[keep], CLASSES, [f"p{i}" for i in range(len(keep))], "test")


def _truth(pool: Pool) -> np.ndarray:
    return np.array([name.startswith("task:") for name in pool.names()])


def test_mining_selects_the_task_images(teacher, pool, positives) -> None:
    events: list[dict] = []
    result = mine(teacher, positives, pool, MiningConfig(num_threads=1, epochs=20), on_progress=events.append)
    truth = _truth(pool)
    selected = truth[result.ids]
    precision, recall = selected.mean(), selected.sum() / truth.sum()
    assert precision >= 0.85 and recall >= 0.5, (precision, recall, result.report.prior)  # pool share: 1/3
    report = result.report
    assert report.candidates == len(result.candidate_ids) <= report.candidate_budget == len(pool)
    assert report.selected == len(result.ids) and 0 < report.prior < 1 and report.prior_estimated
    assert report.holdout == 10 and report.holdout_recall is not None  # 12 per class, 20 % held out: 2 per class
    # the estimate's Wilson interval over the 10 held-out positives holds it and is wide, as 10 positives allow
    low, high = report.holdout_recall_interval
    assert low <= report.holdout_recall <= high and high - low > 0.25  # at least 0.28 wide for any count of 10
    assert sum(report.class_histogram.values()) == report.selected
    assert list(report.class_histogram) == CLASSES
    assert sum(report.score_histogram["counts"]) == report.candidates
    assert [e["step"] for e in events] == ["candidates", "teacher_features", "prior", "pu_classifier", "selection"]
    # scores are best first; selected items are unique; teacher classes agree with the teacher on the images
    assert np.all(np.diff(result.scores) <= 0) and len(set(result.ids.tolist())) == len(result.ids)
    logits = teacher(pool.image_tensor(result.ids[:50]))
    np.testing.assert_array_equal(result.teacher_classes[:50], logits.argmax(dim=1).numpy())
    grid = Image.open(io.BytesIO(result.thumbnail_grid(pool, CLASSES, per_class=4)))
    assert grid.size == (4 * 30, 5 * 30)


def test_given_prior_budgets_and_determinism(teacher, pool, positives) -> None:
    config = MiningConfig(num_threads=1, prior=0.3, candidate_budget=600, selection_budget=50, holdout_fraction=0)
    first = mine(teacher, positives, pool, config)
    assert first.report.prior == 0.3 and not first.report.prior_estimated
    assert len(first.candidate_ids) <= 600 and len(first.ids) <= 50 and first.report.holdout_recall is None
    again = mine(teacher, positives, pool, config)
    np.testing.assert_array_equal(first.ids, again.ids)


def test_near_duplicates_of_positives_are_not_selected(teacher, pool, positives, tmp_path: Path) -> None:
    # a positive that is also in the pool (the same pixels) must not be mined back
    task, _ = task_images("test", 400)
    copies = Positives(task[:5], torch.zeros(5, dtype=torch.int64), CLASSES, list("abcde"), "t")
    both = Positives(
        torch.cat([positives.images, copies.images]),
        torch.cat([positives.labels, copies.labels]),
        CLASSES,
        [*positives.names, *copies.names],
        "t",
    )
    result = mine(teacher, both, pool, MiningConfig(num_threads=1, holdout_fraction=0))
    copied_ids = np.flatnonzero(np.isin(pool.names(), [f"task:{i}" for i in range(5)]))
    assert not set(copied_ids.tolist()) & set(result.ids.tolist())
    assert result.report.duplicates_of_positives >= 1


def test_errors_and_cancel(teacher, pool, positives) -> None:
    with pytest.raises(MiningCancelled):
        mine(teacher, positives, pool, MiningConfig(num_threads=1), should_stop=lambda: True)
    with pytest.raises(ValueError, match="candidate_budget"):
        MiningConfig(candidate_budget=0)
    with pytest.raises(ValueError, match="prior"):
        MiningConfig(prior=1.5)
    with pytest.raises(TypeError, match="Positives"):
        mine(teacher, positives.images, pool)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="embedding_stage"):
        MiningConfig(embedding_stage="yes")  # type: ignore[arg-type]


def test_the_embedding_stage_changes_the_classifier_not_the_prior(teacher, pool, positives) -> None:
    both = score_pool(teacher, positives, pool, MiningConfig(num_threads=1))
    teacher_only = score_pool(teacher, positives, pool, MiningConfig(num_threads=1, embedding_stage=False))
    assert both.prior == teacher_only.prior  # estimated on the teacher's stages either way
    assert both.scores is not None and teacher_only.scores is not None
    assert not np.allclose(both.scores, teacher_only.scores)  # the classifier saw one more stage
    np.testing.assert_array_equal(both.candidate_ids, teacher_only.candidate_ids)


def test_budget_covering_the_pool_makes_every_item_a_candidate(teacher, pool, positives) -> None:
    result = mine(teacher, positives, pool, MiningConfig(num_threads=1, candidate_budget=10 * len(pool)))
    np.testing.assert_array_equal(result.candidate_ids, np.arange(len(pool)))
    assert result.report.candidate_probe == len(pool) and result.report.candidate_queries == 0


def test_candidates_reach_task_images_far_from_every_positive(teacher, positives, tmp_path: Path) -> None:
    """Positives of one class only (T-shirts), a pool of 400 shirts (close to every positive) and 200 task images
    of the other classes (far from every positive): a nearest-neighbour search around the positives fills its
    budget with shirts; the random probe and the teacher's class-conditional queries must still find the task."""
    images, labels = fashion_mnist("train")
    far_rows = np.concatenate([np.flatnonzero(labels == k)[:50] for k in (1, 2, 3, 4)])
    shirt_rows = np.flatnonzero(labels == 6)[:400]

    def records(name: str, rows: np.ndarray) -> RecordSource:
        return RecordSource(name, (ImageRecord(name, str(i), images[i]) for i in rows))

    store = PoolStore(LocalBlobStore(tmp_path / "blobs"), cache_dir=tmp_path / "cache")
    store.ingest(
        "shirts",
        [records("task", far_rows), records("shirts", shirt_rows)],
        config=PoolConfig(image_size=28, channels=1, embedder_resolution=32, shard_size=500),
        embedder=load_embedder(resolution=32, num_threads=1),
    )
    pool = store.open("shirts")
    far = _truth(pool)
    t_shirts = positives.labels == 0
    shirt_positives = Positives(
        positives.images[t_shirts], positives.labels[t_shirts], CLASSES, list("abcdefghijkl"), "t"
    )
    half = len(pool) // 2
    near_ids, _ = nearest_neighbour_candidates(pool, pool.load_embedder(1)(shirt_positives.images), half)
    near_recall = far[near_ids].sum() / far.sum()
    assert near_recall < 0.6  # the pool is as the test needs: a search around the positives misses the task
    # the default budget (200 per positive) covers the pool: every item, far or not, is a candidate
    scored = score_pool(teacher, shirt_positives, pool, MiningConfig(num_threads=1, holdout_fraction=0, epochs=1))
    np.testing.assert_array_equal(scored.candidate_ids, np.arange(len(pool)))
    # a budget below the pool: the probe and the teacher-guided scout do not fall below the positives' neighbours
    config = MiningConfig(num_threads=1, candidate_budget=half, holdout_fraction=0)
    scored = score_pool(teacher, shirt_positives, pool, config)
    assert len(scored.candidate_ids) <= half and scored.candidates.probe_size == round(PROBE_SHARE * half)
    assert far[scored.candidate_ids].sum() / far.sum() >= near_recall
    # held-out reach is 1 above the scout's cut-off, else the probe's rate, never more
    reach = scored.candidates.reach(pool.embeddings(np.flatnonzero(far)))
    assert set(np.unique(reach).tolist()) <= {1.0, scored.candidates.probe_rate}


def test_selection_strategies_from_one_scoring(teacher, pool, positives) -> None:
    scored = score_pool(teacher, positives, pool, MiningConfig(num_threads=1, epochs=20))
    results = {strategy: select(scored, strategy) for strategy in SELECTIONS}
    default, pu, half = results["default"], results["pu"], results["pu-half"]

    def selection(result) -> np.ndarray:  # training + the part of the selection held back
        return np.concatenate([result.ids, result.evaluation_ids[: result.report.evaluation_from_selection]])

    assert len(selection(half)) <= len(selection(pu)) // 2 + 1 and len(selection(default)) <= len(selection(pu))
    for strategy in ("random", "dfnd"):  # the same size as the default
        assert len(selection(results[strategy])) == len(selection(default)), strategy
    cross_entropy = self_cross_entropy(teacher(pool.image_tensor(selection(results["dfnd"]))))
    rest = np.setdiff1d(np.arange(len(pool)), selection(results["dfnd"]))
    assert cross_entropy.max() <= self_cross_entropy(teacher(pool.image_tensor(rest))).min() + 1e-5
    truth = _truth(pool)
    assert truth[selection(default)].mean() > truth[selection(results["random"])].mean() + 0.3
    for strategy, result in results.items():
        report = result.report
        assert report.selection == result.selection == strategy
        assert not set(result.ids.tolist()) & set(result.evaluation_ids.tolist())  # evaluation never trained on
        assert report.evaluation == len(result.evaluation_ids) <= EVALUATION_TARGET
        assert report.evaluation >= min(EVALUATION_TARGET, len(pool) - len(result.ids)) // 2
        assert sum(report.class_histogram.values()) == len(result.ids)
        assert sum(report.evaluation_classes.values()) == len(result.evaluation_ids)
        assert report.evaluation_from_selection == int(EVALUATION_SHARE * len(selection(result)))
    with pytest.raises(ValueError, match="selection"):
        select(scored, "best")
    # candidates below the pool: random items the teacher never scored are counted as such
    partial = score_pool(teacher, positives, pool, MiningConfig(num_threads=1, epochs=2, candidate_budget=400))
    drawn = select(partial, "random")
    outside = ~np.isin(drawn.ids, partial.candidate_ids)
    assert outside.any() and (drawn.teacher_classes[outside] == -1).all()
    assert drawn.report.class_histogram.get("not scored") == int(outside.sum())


def test_min_selection_fills_the_default_with_the_next_ranked_items(teacher, pool, positives) -> None:
    scored = score_pool(teacher, positives, pool, MiningConfig(num_threads=1, epochs=20))

    def selection(result) -> np.ndarray:  # training + the part of the selection held back
        return np.concatenate([result.ids, result.evaluation_ids[: result.report.evaluation_from_selection]])

    members = selection(select(scored, "default"))
    floor = len(members) + 300
    filled = select(scored, "default", min_selection=floor)
    chosen = selection(filled)
    dropped = filled.report.duplicates_of_positives + filled.report.duplicates_within_selection
    assert len(chosen) + dropped == floor and set(members.tolist()) <= set(chosen.tolist())  # the members, then more
    extra = np.setdiff1d(chosen, members)
    score_of = dict(zip(scored.candidate_ids.tolist(), scored.scores.tolist(), strict=True))
    rest = np.setdiff1d(scored.candidate_ids, chosen)
    weakest_extra = min(score_of[int(i)] for i in extra)
    assert sum(score_of[int(i)] > weakest_extra for i in rest) <= dropped  # the next items of the PU ranking
    assert len(selection(select(scored, "random", min_selection=floor))) == len(chosen)  # the baseline's size
    assert len(selection(select(scored, "default", min_selection=len(members) // 2))) == len(members)  # floor only
    truth = _truth(pool)
    assert truth[chosen].sum() > truth[members].sum()  # the fill reaches task images the members missed
    with pytest.raises(ValueError, match="min_selection"):
        MiningConfig(min_selection=0)


def test_no_labels_mode_selects_as_dfnd(teacher, pool) -> None:
    result = mine(teacher, None, pool, MiningConfig(num_threads=1), class_names=CLASSES)
    report = result.report
    assert result.selection == "dfnd" and not report.labels_used and report.holdout_recall is None
    assert report.positives_used == 0 and list(report.class_histogram) == CLASSES
    chosen = np.concatenate([result.ids, result.evaluation_ids[: report.evaluation_from_selection]])
    probabilities = torch.softmax(teacher(pool.image_tensor(np.arange(len(pool)))), dim=1).max(dim=1).values.numpy()
    confident = int((probabilities >= DFND_MIN_CONFIDENCE).sum())
    size = max(int(np.ceil(DFND_SIZE_FACTOR * confident)), int(np.ceil(DFND_MIN_SHARE * len(pool))))
    assert len(chosen) == min(size, len(pool))  # the no-labels size rule
    assert probabilities[chosen].min() >= np.delete(probabilities, chosen).max() - 1e-5  # the most confident
    with pytest.raises(ValueError, match="positives"):
        mine(teacher, None, pool, MiningConfig(num_threads=1, selection="pu"))
    with pytest.raises(ValueError, match="selection"):
        MiningConfig(selection="everything")
