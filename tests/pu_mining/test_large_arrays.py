"""A pool file of real size: a 70,000-image ``.npz`` whose one member (55 MB) is over the per-member upload limit.

Synthetic pixels (the numbers do not matter here): an administrator's local file must be read, streamed in chunks
with bounded memory; the same file as an upload keeps the 32 MiB per-member limit.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pu_mining.array_stream import CHUNK_BYTES
from pu_mining.image_files import ReadLimits, UnsafeArchiveError, iter_images
from pu_mining.pool import _open_source

COUNT = 70_000


@pytest.fixture(scope="module")
def large_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "pool.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(COUNT, 28, 28), dtype=np.uint8)
    labels = np.arange(COUNT, dtype=np.int64) % 10
    np.savez(path, x=images, y=labels)
    assert images.nbytes > ReadLimits().max_file_bytes  # the case at hand: one member over the upload limit
    return path


def test_an_upload_keeps_the_per_member_limit(large_npz: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="limit for one member"):
        list(iter_images(large_npz))


def test_local_pool_file_is_streamed_with_bounded_memory(large_npz: Path) -> None:
    _, records, _ = _open_source(str(large_npz), None)  # what PoolStore.ingest reads a local file with
    tracemalloc.start()
    count, checksum, last = 0, 0, None
    for record in records:
        if count % 9_973 == 0:
            checksum += int(record.image.sum())
        count += 1
        last = record
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == COUNT and last is not None and last.name == f"index {COUNT - 1}" and last.label == (COUNT - 1) % 10
    expected = np.load(large_npz)["x"]
    assert checksum == sum(int(expected[i].sum()) for i in range(0, COUNT, 9_973))
    assert peak < 3 * CHUNK_BYTES + 2 * 1024 * 1024, peak  # a few chunks, never the 55 MB array


def test_explicit_array_limit_still_refuses(large_npz: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="limit for one member"):
        list(iter_images(large_npz, ReadLimits(max_array_bytes=1024 * 1024)))
    with pytest.raises(ValueError, match="max_array_bytes"):
        ReadLimits(max_array_bytes=0)
