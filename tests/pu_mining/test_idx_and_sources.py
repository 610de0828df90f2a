"""The IDX reader on crafted and real files; the packaged Fashion-MNIST source."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from pu_mining.idx import parse_idx, read_idx
from pu_mining.sources import fashion_mnist


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(("dtype", "code"), [(np.uint8, 0x08), (np.int32, 0x0C), (np.float32, 0x0D)])
def test_round_trip_plain_and_gzip(tmp_path, dtype, code) -> None:
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    data = _idx_bytes(array, code)
    (tmp_path / "a.idx").write_bytes(data)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(data))
    for name in ("a.idx", "a.idx.gz"):
        loaded = read_idx(tmp_path / name)
        assert loaded.dtype == np.dtype(dtype) and np.array_equal(loaded, array)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX data type"),
        (b"\x00\x00\x08\x02\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "promises 5 data bytes"),
    ],
)
def test_bad_idx_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_idx(data)


def test_corrupt_gzip_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(path)


def test_packaged_fashion_mnist() -> None:
    images, labels = fashion_mnist("test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    with pytest.raises(ValueError, match="split"):
        fashion_mnist("validation")
