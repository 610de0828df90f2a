"""Images from NumPy files (``.npz`` with ``x`` and optional ``y``, or ``.npy``), as the trainer and miner take them.

Accepted layouts: ``[N, H, W]`` (grayscale), ``[N, C, H, W]`` or ``[N, H, W, C]`` with ``C`` in 1, 3 (a last axis of
size 1 or 3 with a second axis of another size is read as channels-last). ``uint8`` pixels are divided by 255; float
pixels must already be in [0, 1]. Labels are integers >= 0, or -1 for an unlabelled image.

Files are read with ``allow_pickle=False`` (an object array is refused, never unpickled), and an ``.npz`` archive is
checked before anything is decompressed: its members' declared sizes must fit ``max_bytes`` (a zip bomb is refused
without being inflated). Before an array is loaded its ``.npy`` header is checked against the bytes that follow it
(:func:`check_npy_header`): a header promising a huge shape cannot make NumPy allocate it.

:func:`read_image_arrays` gives float32 tensors; :func:`read_uint8_image_arrays` gives the same images as ``uint8``
NumPy arrays (no float copy: a quarter of the memory), for readers that handle one image at a time.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch

__all__ = [
    "DEFAULT_MAX_ARRAY_BYTES",
    "ImageArrays",
    "check_npy_header",
    "images_to_tensor",
    "images_to_uint8",
    "read_image_arrays",
    "read_uint8_image_arrays",
]

DEFAULT_MAX_ARRAY_BYTES = 2 * 1024**3
"""Largest total uncompressed size of the arrays in one file (2 GiB)."""

_IMAGE_KEYS = ("x", "images")
_LABEL_KEYS = ("y", "labels")


@dataclass(frozen=True)
class ImageArrays:
    """Images ``[N, C, H, W]`` float32 in [0, 1] and labels ``[N]`` int64 (-1: unlabelled), or None."""

    images: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.images.shape[0])


class _RawArrays(NamedTuple):
    images: np.ndarray
    images_name: str
    labels: np.ndarray | None
    labels_name: str


def read_image_arrays(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_ARRAY_BYTES) -> ImageArrays:
    """Read ``path`` (``.npz`` or ``.npy``); ValueError saying what is wrong with a file it cannot use."""
    raw = _read_raw(path, max_bytes)
    images = images_to_tensor(raw.images, raw.images_name)
    labels = None if raw.labels is None else torch.from_numpy(_check_labels(raw.labels, len(images), raw.labels_name))
    return ImageArrays(images, labels)


def read_uint8_image_arrays(
    path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_ARRAY_BYTES
) -> tuple[np.ndarray, np.ndarray | None]:
    """The images of ``path`` as ``uint8`` ``[N, H, W]`` (grayscale) or ``[N, H, W, 3]`` (RGB), and its labels.

    The same file checks as :func:`read_image_arrays` (see :func:`images_to_uint8` for the pixels); labels are an
    ``int64`` array ``[N]`` (-1: unlabelled), or None when the file has none.
    """
    raw = _read_raw(path, max_bytes)
    images = images_to_uint8(raw.images, raw.images_name)
    labels = None if raw.labels is None else _check_labels(raw.labels, len(images), raw.labels_name)
    return images, labels


def _read_raw(path: str | os.PathLike[str], max_bytes: int) -> _RawArrays:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _read_npz(path, max_bytes)
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError(f"{path}: not a NumPy file (.npz with 'x' and 'y', or .npy of images)")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path}: {size:,} bytes is over the limit of {max_bytes:,}")
    with path.open("rb") as handle:
        check_npy_header(handle, size, path.name)
    return _RawArrays(_load_array(path, path.name), str(path), None, "")


def check_npy_header(stream: IO[bytes], size: int, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the ``.npy`` header at the start of ``stream`` (``size`` bytes in all), checked.

    ValueError if it is not ``.npy`` data (format 1.0 or 2.0), if the dtype holds Python objects (loading would
    need unpickling) or if the header promises a different number of data bytes than follow it. Reads only the
    header.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        header_bytes = stream.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{name}: not a readable .npy array ({error})") from None
    if dtype.hasobject:
        raise ValueError(f"{name}: holds an object array, which would need unpickling; refused")
    expected = math.prod(shape) * dtype.itemsize
    if header_bytes + expected != size:
        raise ValueError(
            f"{name}: the .npy header promises {expected:,} data bytes (shape {shape}, dtype {dtype}), "
            f"but {size - header_bytes:,} follow it"
        )
    return shape, dtype


def _read_npz(path: Path, max_bytes: int) -> _RawArrays:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {member.filename: member for member in archive.infolist()}
            declared = sum(member.file_size for member in members.values())
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path}: corrupt .npz archive ({error})") from None
    if declared > max_bytes:
        raise ValueError(f"{path}: the arrays hold {declared:,} bytes uncompressed, over the limit of {max_bytes:,}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            image_key = next((key for key in _IMAGE_KEYS if key in keys), None)
            if image_key is None:
                raise ValueError(f"{path}: no 'x' array of images (found: {', '.join(sorted(keys)) or 'nothing'})")
            label_key = next((key for key in _LABEL_KEYS if key in keys), None)
            for key in (image_key, label_key):
                if key is not None:
                    _check_npz_member(path, members, key)
            raw_images = archive[image_key]
            raw_labels = archive[label_key] if label_key is not None else None
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(f"{path}: holds an object array, which would need unpickling; refused") from None
        raise
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path}: cannot read the arrays ({error})") from None
    return _RawArrays(raw_images, f"{path}['{image_key}']", raw_labels, f"{path}['{label_key}']")


def _check_npz_member(path: Path, members: dict[str, zipfile.ZipInfo], key: str) -> None:
    """Check the ``.npy`` header of array ``key`` of the ``.npz`` at ``path`` before NumPy loads it."""
    member = members.get(f"{key}.npy", members.get(key))
    if member is None:
        raise ValueError(f"{path}: no member for array {key!r}")
    with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
        check_npy_header(stream, member.file_size, f"{path}['{key}']")


def _load_array(path: Path, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(f"{name}: holds an object array, which would need unpickling; refused") from None
        raise ValueError(f"{name}: cannot read the array ({error})") from None
    except (OSError, EOFError) as error:
        raise ValueError(f"{name}: cannot read the array ({error})") from None


def images_to_tensor(array: np.ndarray, name: str = "images") -> torch.Tensor:
    """``[N, C, H, W]`` float32 in [0, 1] from an image array in one of the accepted layouts (see the module)."""
    array = _as_nchw(array, name)
    if np.issubdtype(array.dtype, np.integer):
        _check_integer_pixels(array, name)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(255.0))
    return torch.from_numpy(_checked_float_pixels(array, name))


def images_to_uint8(array: np.ndarray, name: str = "images") -> np.ndarray:
    """``uint8`` ``[N, H, W]`` (one channel) or ``[N, H, W, 3]`` from an image array in an accepted layout.

    The same checks as :func:`images_to_tensor`; ``uint8`` pixels are kept as they are (no copy for ``[N, H, W]``),
    other integers must be in 0..255 and float pixels in [0, 1] are scaled by 255 and rounded.
    """
    array = _as_nchw(array, name)
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.integer):
        _check_integer_pixels(array, name)
        pixels = array.astype(np.uint8)
    else:
        pixels = np.rint(_checked_float_pixels(array, name) * np.float32(255.0)).astype(np.uint8)
    pixels = pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pixels)


def _as_nchw(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` (checked: dtype, layout, count, channels, size) as an ``[N, C, H, W]`` view."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(array).__name__}")
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.dtype == np.bool_ or not numeric:
        raise ValueError(f"{name}: images must be uint8 or float, got dtype {array.dtype}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
            array = array.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{name}: images must be [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {array.shape}")
    count, channels, height, width = array.shape
    if count == 0:
        raise ValueError(f"{name}: no images")
    if channels not in (1, 3):
        raise ValueError(f"{name}: images must have 1 or 3 channels, got {channels} (shape {array.shape})")
    if height < 8 or width < 8:
        raise ValueError(f"{name}: images of {height}x{width} pixels are too small (at least 8x8)")
    return array


def _check_integer_pixels(array: np.ndarray, name: str) -> None:
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{name}: integer pixels must be in 0..255")


def _checked_float_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """Float pixels as contiguous float32 clipped to [0, 1]; ValueError for NaN / inf or values outside [0, 1]."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: images contain NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"{name}: float pixels must be in [0, 1], got [{low:g}, {high:g}] (send uint8 0..255 or divide by 255)"
        )
    return values.clip(0.0, 1.0)


def _check_labels(array: np.ndarray, count: int, name: str) -> np.ndarray:
    if array.shape != (count,):
        raise ValueError(f"{name}: labels must have shape ({count},) to match the images, got {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{name}: labels must be whole numbers")
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {array.dtype}")
    labels = array.astype(np.int64)
    if (labels < -1).any():
        raise ValueError(f"{name}: labels must be >= 0 (or -1 for unlabelled images)")
    return labels
