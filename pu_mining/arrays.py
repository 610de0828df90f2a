"""Images from NumPy files (``.npz`` with ``x`` and optional ``y``, or ``.npy``), as the trainer and miner take them.

Accepted layouts: ``[N, H, W]`` (grayscale), ``[N, C, H, W]`` or ``[N, H, W, C]`` with ``C`` in 1, 3 (a last axis of
size 1 or 3 with a second axis of another size is read as channels-last). ``uint8`` pixels are divided by 255; float
pixels must already be in [0, 1]. Labels are integers >= 0, or -1 for an unlabelled image.

Files are read with ``allow_pickle=False`` (an object array is refused, never unpickled), and an ``.npz`` archive is
checked before anything is decompressed: its members' declared sizes must fit ``max_bytes`` (a zip bomb is refused
without being inflated).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DEFAULT_MAX_ARRAY_BYTES", "ImageArrays", "images_to_tensor", "read_image_arrays"]

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


def read_image_arrays(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_ARRAY_BYTES) -> ImageArrays:
    """Read ``path`` (``.npz`` or ``.npy``); ValueError saying what is wrong with a file it cannot use."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _read_npz(path, max_bytes)
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError(f"{path}: not a NumPy file (.npz with 'x' and 'y', or .npy of images)")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes is over the limit of {max_bytes:,}")
    return ImageArrays(images_to_tensor(_load_array(path, path.name), str(path)), None)


def _read_npz(path: Path, max_bytes: int) -> ImageArrays:
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(member.file_size for member in archive.infolist())
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
            raw_images = archive[image_key]
            label_key = next((key for key in _LABEL_KEYS if key in keys), None)
            raw_labels = archive[label_key] if label_key is not None else None
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(f"{path}: holds an object array, which would need unpickling; refused") from None
        raise
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path}: cannot read the arrays ({error})") from None
    images = images_to_tensor(raw_images, f"{path}['{image_key}']")
    labels = None if raw_labels is None else _labels_to_tensor(raw_labels, len(images), f"{path}['{label_key}']")
    return ImageArrays(images, labels)


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
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{name}: integer pixels must be in 0..255")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(255.0))
    values = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: images contain NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"{name}: float pixels must be in [0, 1], got [{low:g}, {high:g}] (send uint8 0..255 or divide by 255)"
        )
    return torch.from_numpy(values.clip(0.0, 1.0))


def _labels_to_tensor(array: np.ndarray, count: int, name: str) -> torch.Tensor:
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
    return torch.from_numpy(labels)
