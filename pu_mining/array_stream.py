"""Read the images of a large ``.npz`` in chunks of rows, so that memory stays bounded whatever the array's size.

An administrator's pool file may hold a single ``x`` member of hundreds of megabytes (70,000 Fashion-MNIST-sized
images are 55 MB). :func:`stream_uint8_npz` reads such a member -- ``uint8``, C order, ``[N, H, W]`` or
``[N, H, W, 1 | 3]`` -- straight from the zip stream, :data:`CHUNK_BYTES` at a time (deflate is inflated in bounded
steps by :mod:`zipfile`); labels (``y``, small) are read whole. Other layouts return None and are read whole by
:func:`pu_mining.arrays.read_uint8_image_arrays` under the byte limit.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pu_mining.arrays import check_npy_header

__all__ = ["CHUNK_BYTES", "stream_uint8_npz"]

CHUNK_BYTES = 8 * 1024 * 1024
"""Bytes of image rows held in memory at once while streaming."""
_IMAGE_KEYS = ("x", "images")
_LABEL_KEYS = ("y", "labels")


def _member(members: dict[str, zipfile.ZipInfo], keys: tuple[str, ...]) -> tuple[str, zipfile.ZipInfo] | None:
    for key in keys:
        info = members.get(f"{key}.npy")
        if info is not None:
            return key, info
    return None


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with archive.open(info) as stream:
        shape, dtype = check_npy_header(stream, info.file_size, name)
        stream.seek(0)
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, fortran_order, _ = read(stream)
    return shape, dtype, bool(fortran_order)


def stream_uint8_npz(
    path: str | Path, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[np.ndarray, np.ndarray | None]] | None:
    """Chunks ``(images uint8 [n, H, W(, C)], labels int64 [n] or None)`` of the ``.npz`` at ``path``, or None when
    its image array is not a plain ``uint8`` C-order stack (then read it whole). Headers are checked first
    (:func:`pu_mining.arrays.check_npy_header`: no object arrays, sizes that match)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        found = _member(members, _IMAGE_KEYS)
        if found is None:
            return None
        key, info = found
        shape, dtype, fortran = _read_header(archive, info, f"{path}['{key}']")
        if dtype != np.uint8 or fortran or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
            return None
        labels = None
        label_member = _member(members, _LABEL_KEYS)
        if label_member is not None:
            label_shape, label_dtype, _ = _read_header(archive, label_member[1], f"{path}['{label_member[0]}']")
            if label_dtype.kind not in "iu" or label_shape != (shape[0],):
                return None  # the whole-file reader explains what is wrong
            with archive.open(label_member[1]) as stream:
                labels = np.lib.format.read_array(stream, allow_pickle=False).astype(np.int64)
    return _chunks(path, info, shape, labels, chunk_bytes)


def _chunks(
    path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], labels: np.ndarray | None, chunk_bytes: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    row_shape = shape[1:]
    row_bytes = max(1, math.prod(row_shape))
    rows_per_chunk = max(1, chunk_bytes // row_bytes)
    with zipfile.ZipFile(path) as archive, archive.open(info) as stream:
        check_npy_header(stream, info.file_size, str(path))
        for start in range(0, shape[0], rows_per_chunk):
            count = min(rows_per_chunk, shape[0] - start)
            data = stream.read(count * row_bytes)
            if len(data) != count * row_bytes:
                raise ValueError(f"{path}: the image array ends early (corrupt or tampered)")
            images = np.frombuffer(data, dtype=np.uint8).reshape(count, *row_shape)
            if images.ndim == 4 and images.shape[3] == 1:
                images = images[..., 0]
            yield images, None if labels is None else labels[start : start + count]
