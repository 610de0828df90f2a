"""Pools in blob storage: ingest from real files, exact-duplicate removal, incremental adds, crash safety."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pu_mining.embedder import Embedder, load_embedder
from pu_mining.image_files import ImageRecord
from pu_mining.pool import PoolConfig, PoolNotFoundError, PoolStore, RecordSource, content_hash
from pu_mining.sources import fashion_mnist, mnist_digits
from storage import LocalBlobStore

CONFIG = PoolConfig(image_size=28, channels=1, embedder_resolution=32, shard_size=50)


@functools.cache
def _embedder() -> Embedder:
    return load_embedder(resolution=CONFIG.embedder_resolution, num_threads=1)


@functools.cache
def _fashion() -> tuple[np.ndarray, np.ndarray]:
    images, labels = fashion_mnist("test")
    return images[:200], labels[:200]


def _store(tmp_path: Path) -> PoolStore:
    return PoolStore(LocalBlobStore(tmp_path / "blobs"), cache_dir=tmp_path / "cache")


def _npz(path: Path, images: np.ndarray) -> Path:
    np.savez(path, x=images)
    return path


def test_ingest_npz_and_folder_then_read_back(tmp_path: Path) -> None:
    images, _ = _fashion()
    store = _store(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    digits, _ = mnist_digits()
    for index in range(30):
        Image.fromarray(digits[index]).save(folder / f"digit{index:02d}.png")
    report = store.ingest(
        "fashion", [_npz(tmp_path / "a.npz", images[:120]), folder], config=CONFIG, embedder=_embedder()
    )
    assert report.added == 150 and report.duplicates == 0
    assert report.sources == {"a.npz": 120, "photos": 30}
    pool = store.open("fashion")
    assert len(pool) == 150 and pool.version == 1
    assert [s.count for s in pool.manifest.shards] == [50, 50, 50]
    np.testing.assert_array_equal(pool.images([0, 119, 120]), np.stack([images[0], images[119], digits[0]]))
    assert pool.names([0, 120]).tolist() == ["a.npz:index 0", "photos:digit00.png"]
    assert pool.hashes([5])[0] == content_hash(images[5])
    tensor = pool.image_tensor([3])
    assert tensor.shape == (1, 1, 28, 28) and float(tensor.max()) <= 1.0
    # the index finds each stored embedding as its own nearest neighbour
    vectors = pool.embeddings([7, 130])
    _, ids = pool.index().search(vectors, 1)
    assert ids[:, 0].tolist() == [7, 130]
    assert store.list()[0].name == "fashion"


def test_duplicates_are_stored_once_and_ingest_is_incremental(tmp_path: Path) -> None:
    images, _ = _fashion()
    store = _store(tmp_path)
    store.ingest("p", [_npz(tmp_path / "a.npz", images[:100])], config=CONFIG, embedder=_embedder())
    first = store.open("p")
    index_before = first.manifest.index_key
    # 60 already in the pool + 40 new, one of which appears twice in the same source
    second_batch = np.concatenate([images[40:140], images[139:140]])
    report = store.ingest("p", [_npz(tmp_path / "b.npz", second_batch)], embedder=_embedder())
    assert report.added == 40 and report.duplicates == 61
    pool = store.open("p")
    assert len(pool) == 140 and pool.version == 2
    assert pool.manifest.duplicates_skipped == 61
    assert not report.index_rebuilt
    assert pool.index().ntotal == 140
    np.testing.assert_array_equal(pool.images([100, 139]), images[[100, 139]])
    # the old version's index is gone; the new one is in place
    assert not store.blobs.exists(index_before)
    # the same image saved as PNG is the same content: a duplicate
    png = tmp_path / "same"
    png.mkdir()
    Image.fromarray(images[3]).save(png / "x.png")
    assert store.ingest("p", [png], embedder=_embedder()).duplicates == 1


def test_interrupted_ingest_leaves_the_last_complete_state(tmp_path: Path) -> None:
    images, _ = _fashion()
    store = _store(tmp_path)
    store.ingest("p", [_npz(tmp_path / "a.npz", images[:60])], config=CONFIG, embedder=_embedder())

    def crashing_records() -> object:
        for index in range(60, 200):
            if index == 170:
                raise KeyboardInterrupt  # the process dies mid-ingest, after some shards were written
            yield ImageRecord(source="gen", name=f"index {index}", image=images[index])

    with pytest.raises(KeyboardInterrupt):
        store.ingest("p", [RecordSource("gen", crashing_records())], embedder=_embedder())
    orphans = [info.key for info in store.blobs.list("pools/p/v000002/")]
    assert orphans, "the crashed ingest should have written shards before dying"
    pool = store.open("p")
    assert len(pool) == 60 and pool.version == 1
    _, ids = pool.index().search(pool.embeddings([10]), 1)
    assert ids[0, 0] == 10
    # the next ingest removes the orphans and goes on from the complete state
    store.ingest("p", [_npz(tmp_path / "b.npz", images[60:80])], embedder=_embedder())
    assert len(store.open("p")) == 80
    assert not any(store.blobs.exists(key) for key in orphans if "/v000002/" in key and "shard-00001" in key)


def test_hostile_and_bad_input_is_refused_or_skipped(tmp_path: Path) -> None:
    images, _ = _fashion()
    store = _store(tmp_path)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escape.png", b"x")
    with pytest.raises(ValueError, match="escape"):
        store.ingest("p", [evil], config=CONFIG, embedder=_embedder())
    with pytest.raises(PoolNotFoundError):
        store.open("p")  # nothing was committed
    with pytest.raises(ValueError, match="pool name"):
        store.ingest("Bad Name", [tmp_path], config=CONFIG)
    strips = np.zeros((3, 8, 40), dtype=np.uint8)  # aspect ratio 5: refused per item, skipped with the reason
    report = store.ingest(
        "p",
        [_npz(tmp_path / "ok.npz", images[:5]), _npz(tmp_path / "t.npz", strips)],
        config=CONFIG,
        embedder=_embedder(),
    )
    assert report.added == 5 and len(report.skipped) == 3 and "aspect" in report.skipped[0]
    with pytest.raises(ValueError, match="configuration cannot change"):
        store.ingest("p", [_npz(tmp_path / "ok.npz", images[:5])], config=PoolConfig(image_size=32))


def test_rgb_pool_converts_grey_images(tmp_path: Path) -> None:
    images, _ = _fashion()
    store = _store(tmp_path)
    config = PoolConfig(image_size=32, channels=3, embedder_resolution=32, shard_size=100)
    store.ingest("rgb", [_npz(tmp_path / "a.npz", images[:10])], config=config, embedder=_embedder())
    stored = store.open("rgb").images([0])
    assert stored.shape == (1, 32, 32, 3)
    assert np.array_equal(stored[..., 0], stored[..., 2])
