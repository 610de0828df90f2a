"""The pool's FAISS index (pu_mining/vector_index.py): exactness, recall, incremental adds, files, bad input."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from pu_mining.vector_index import (
    FLAT_MAX_VECTORS,
    HNSW_MAX_VECTORS,
    VectorIndex,
    build_index,
    choose_index_kind,
    default_nlist,
    default_nprobe,
)

DIM = 32


def unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def uniform() -> np.ndarray:
    return unit(np.random.default_rng(0).standard_normal((2000, DIM)))


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """4,000 vectors in 40 Gaussian clusters, and 50 queries drawn the same way."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, DIM))
    labels = rng.integers(0, 40, 4050)
    points = unit(centres[labels] + 0.35 * rng.standard_normal((4050, DIM)))
    return points[:4000], points[4000:]


def exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(f, t).size / t.size for f, t in zip(found, truth, strict=True)]))


def test_choose_index_kind_thresholds() -> None:
    assert choose_index_kind(0) == "flat"
    assert choose_index_kind(FLAT_MAX_VECTORS) == "flat"
    assert choose_index_kind(FLAT_MAX_VECTORS + 1) == "hnsw"
    assert choose_index_kind(HNSW_MAX_VECTORS) == "hnsw"
    assert choose_index_kind(HNSW_MAX_VECTORS + 1) == "ivf"
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(1000) == 25  # at least 39 training points per cell
    assert 8 <= default_nprobe(4000) <= 4000
    with pytest.raises(ValueError):
        choose_index_kind(-1)


def test_flat_equals_numpy_brute_force(uniform: np.ndarray) -> None:
    index = build_index(uniform, kind="auto")
    assert index.kind == "flat" and index.index_dim == DIM and index.ntotal == len(uniform)
    scores, ids = index.search(uniform[:20], 10)
    expected_scores, expected_ids = exact(uniform, uniform[:20], 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_incremental_flat_add_equals_building_at_once(uniform: np.ndarray) -> None:
    ids = np.arange(len(uniform), dtype=np.int64) * 3 + 7
    whole = build_index(uniform, ids, kind="flat")
    parts = VectorIndex(DIM, "flat")
    for chunk in np.array_split(np.arange(len(uniform)), 3):
        parts.add(uniform[chunk], ids[chunk])
    for index in (whole, parts):
        assert index.ntotal == len(uniform)
    queries = uniform[::97]
    for left, right in zip(whole.search(queries, 15), parts.search(queries, 15), strict=True):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_on_clustered_vectors(kind: str, clustered: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = clustered
    index = build_index(vectors, kind=kind)
    _, truth = exact(vectors, queries, 10)
    _, found = index.search(queries, 10)
    assert recall(found, truth) >= 0.9
    if kind == "ivf":
        index.set_search_params(nprobe=index.params["nlist"])  # every cell: exact
        assert recall(index.search(queries, 10)[1], truth) == 1.0


def test_reduced_index_projects_added_vectors_and_queries() -> None:
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((64, 16)))[0]  # data on a 16-d subspace of 64-d
    vectors = unit(rng.standard_normal((3000, 16)) @ basis.T)
    index = build_index(vectors, kind="hnsw", reduce_dim=16)
    assert index.dim == 64 and index.index_dim == 16
    scores, ids = index.search(vectors[:30], 10)
    expected_scores, truth = exact(vectors, vectors[:30], 10)
    assert recall(ids, truth) >= 0.95
    np.testing.assert_allclose(scores[:, 0], expected_scores[:, 0], atol=1e-4)  # no loss: the subspace is kept
    assert index.metadata()["projection_energy"] == pytest.approx(1.0, abs=1e-5)


def test_auto_reduction_applies_to_approximate_kinds_only() -> None:
    vectors = unit(np.random.default_rng(4).standard_normal((600, 300)))
    assert build_index(vectors, kind="flat").index_dim == 300
    assert build_index(vectors, kind="hnsw").index_dim == 256
    assert build_index(vectors, kind="hnsw", reduce_dim=None).index_dim == 300


def test_ivf_adds_reuse_the_trained_quantizer(clustered: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = clustered
    index = VectorIndex(DIM, "ivf", nlist=20)
    index.add(vectors[:800])
    ivf = faiss.extract_index_ivf(index.faiss_index)
    centroids = ivf.quantizer.reconstruct_n(0, 20)
    index.add(vectors[800:])
    np.testing.assert_array_equal(ivf.quantizer.reconstruct_n(0, 20), centroids)
    assert index.ntotal == len(vectors)
    index.set_search_params(nprobe=20)
    _, ids = index.search(vectors[::50], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(0, len(vectors), 50))
    assert "grew" in (index.retrain_advice() or "")


def test_fewer_results_than_k_and_empty_index(uniform: np.ndarray) -> None:
    index = build_index(uniform[:5], kind="flat")
    scores, ids = index.search(uniform[:2], 8)
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    scores, ids = VectorIndex(DIM, "hnsw").search(uniform[:2], 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize(("kind", "reduce_dim"), [("flat", None), ("ivf", None), ("hnsw", None), ("ivf", 16)])
def test_save_and_mmap_load_round_trip(
    kind: str, reduce_dim: int | None, clustered: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    vectors, queries = clustered
    index = build_index(vectors, kind=kind, reduce_dim=reduce_dim, fingerprint="embedder-v1")
    expected = index.search(queries, 10)
    path = tmp_path / "pool.faiss"
    index.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.faiss", "pool.faiss.json"]  # no temp files left
    mapped = VectorIndex.load(path, mmap=True)
    assert (mapped.kind, mapped.dim, mapped.index_dim, mapped.ntotal) == (kind, DIM, index.index_dim, len(vectors))
    assert mapped.read_only and mapped.fingerprint == "embedder-v1" and mapped.params == index.params
    for left, right in zip(expected, mapped.search(queries, 10), strict=True):
        np.testing.assert_array_equal(left, right)
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.add(vectors[:2])
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.save(tmp_path / "copy.faiss")
    # atomic replace: a reader that mapped the old file keeps seeing it
    build_index(vectors[:500], kind=kind, reduce_dim=reduce_dim).save(path)
    for left, right in zip(expected, mapped.search(queries, 10), strict=True):
        np.testing.assert_array_equal(left, right)
    loaded = VectorIndex.load(path, mmap=False)
    assert loaded.ntotal == 500 and not loaded.read_only
    loaded.add(vectors[500:510])
    assert loaded.ntotal == 510


def test_inconsistent_files_are_refused(uniform: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "a.faiss"
    build_index(uniform, kind="flat").save(path)
    faiss.write_index(faiss.IndexFlatIP(DIM), str(path))  # replaced behind the sidecar's back
    with pytest.raises(ValueError, match="does not match"):
        VectorIndex.load(path)
    with pytest.raises(ValueError, match="must both exist"):
        VectorIndex.load(tmp_path / "missing.faiss")
    with pytest.raises(ValueError, match="nothing to save"):
        VectorIndex(DIM, "ivf").save(tmp_path / "b.faiss")


def test_bad_input_is_refused(uniform: np.ndarray) -> None:
    index = build_index(uniform[:100], kind="hnsw", fingerprint="fp-a")
    bad_vectors = [
        uniform[:3, :-1],  # wrong dimension
        uniform[0],  # 1-d
        np.where(np.eye(3, DIM) > 0, np.nan, 0).astype(np.float32),  # non-finite
        (uniform[:3] * 1000).astype(np.int64),  # integers
        uniform[:3] * 2,  # not normalised
        uniform[:3].tolist(),  # not an array
    ]
    for bad in bad_vectors:
        with pytest.raises(ValueError):
            index.add(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            index.search(bad, 5)  # type: ignore[arg-type]
    for bad_ids in (np.arange(3, dtype=np.float64), np.array([1, 1, 2]), np.array([-1, 0, 1]), np.arange(4)):
        with pytest.raises(ValueError):
            index.add(uniform[:3], bad_ids)
    with pytest.raises(ValueError, match="fingerprint"):
        index.search(uniform[:1], 5, fingerprint="fp-b")
    with pytest.raises(ValueError):
        index.search(uniform[:1], 0)
    with pytest.raises(ValueError, match="nprobe"):
        index.set_search_params(nprobe=4)
    with pytest.raises(ValueError):
        VectorIndex(DIM, "annoy")
    with pytest.raises(ValueError):
        build_index(uniform, kind="flat", nlist=10)
    assert index.ntotal == 100  # nothing was added by the refused calls
