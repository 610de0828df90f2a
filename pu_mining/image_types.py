"""The types and limits shared by the image readers: what one upload may hold, what a record is, the errors.

See :mod:`pu_mining.image_files` for the formats and the checks these limits drive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

OnError = Literal["raise", "skip"]
InputFormat = Literal["folder", "zip", "tar", "npy", "npz", "idx", "image"]

PIL_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
"""The Pillow decoders :func:`decode_image` may use (no others: less attack surface)."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
     ".pbm", ".pnm"}
)  # fmt: skip
"""Names that claim to be images: one that cannot be decoded is an error, not a file to skip."""

RATIO_CHECK_MIN_BYTES = 1024**2
"""The compression-ratio check applies to members (and archives) declaring more than this (1 MiB): a small flat BMP
legitimately deflates a thousandfold, and what it can inflate to is bounded by the size limits anyway."""

_MIB = 1024**2
_TAR_BLOCK = 512
_READ_CHUNK = _MIB


class UnsafeArchiveError(ValueError):
    """An upload (archive, folder or file) breaks a safety rule or a :class:`ReadLimits` limit; never skipped."""


class ImageDecodeError(ValueError):
    """A member that is (or is named as) an image cannot be decoded; skipped instead with ``on_error="skip"``."""


@dataclass(frozen=True)
class ReadLimits:
    """What one upload may hold. Every limit is checked before reading where headers tell, and while reading.

    - ``max_files`` (200,000): members of an archive or entries of a folder (of any kind), or images of an array;
    - ``max_total_bytes`` (4 GiB): uncompressed bytes in all (also the largest input file);
    - ``max_file_bytes`` (32 MiB): one member or image file;
    - ``max_image_pixels`` (4096 x 4096 = 16,777,216): width x height of one image;
    - ``max_compression_ratio`` (200): uncompressed / compressed size of a zip member or of a whole archive
      (checked above :data:`RATIO_CHECK_MIN_BYTES`);
    - ``max_array_bytes`` (None: ``max_file_bytes``): one array member of a ``.npz``. Uploads keep the per-member
      limit; an administrator's local pool files (:meth:`pu_mining.pool.PoolStore.ingest`) raise it to
      ``max_total_bytes``, and their ``uint8`` image arrays are read in chunks (:mod:`pu_mining.array_stream`), so
      memory stays bounded instead of the file being refused.
    """

    max_files: int = 200_000
    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 32 * _MIB
    max_image_pixels: int = 4096 * 4096
    max_compression_ratio: float = 200.0
    max_array_bytes: int | None = None

    def __post_init__(self) -> None:
        array_bytes = self.max_array_bytes
        if array_bytes is not None and (isinstance(array_bytes, bool) or not isinstance(array_bytes, int)):
            raise TypeError(f"ReadLimits.max_array_bytes must be an int or None, got {type(array_bytes).__name__}")
        if array_bytes is not None and array_bytes < 1:
            raise ValueError(f"ReadLimits.max_array_bytes must be >= 1, got {array_bytes}")
        for field_name in ("max_files", "max_total_bytes", "max_file_bytes", "max_image_pixels"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ReadLimits.{field_name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"ReadLimits.{field_name} must be >= 1, got {value}")
        ratio = self.max_compression_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise TypeError(f"ReadLimits.max_compression_ratio must be a number, got {type(ratio).__name__}")
        if not math.isfinite(ratio) or ratio < 1:
            raise ValueError(f"ReadLimits.max_compression_ratio must be a finite number >= 1, got {ratio}")


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image: ``source`` (the path given), ``name`` (member path inside the folder or archive, or ``index N``
    for arrays), ``image`` (``uint8`` ``[H, W]`` or ``[H, W, 3]``) and ``label`` (the first folder component when
    asked for, an int from an array's ``y``, or None)."""

    source: str
    name: str
    image: np.ndarray
    label: str | int | None = None


@dataclass(frozen=True)
class SkippedMember:
    """A member that was not read as an image, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def is_hidden(parts: tuple[str, ...] | list[str]) -> bool:
    """Whether a member path (as components) is hidden: a component starting with ``.`` or named ``__MACOSX``."""
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)
