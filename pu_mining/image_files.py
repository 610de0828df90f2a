"""Reading user images safely from every format users send: folders, zip / tar archives, NumPy, IDX, image files.

:func:`iter_images` takes a path and yields one :class:`ImageRecord` per image, ``uint8`` pixels ``[H, W]``
(grayscale) or ``[H, W, 3]`` (RGB), in a deterministic order: member paths sorted component by component (so a
folder and a zip of it give the same order), arrays in index order. The format is detected from the content (magic
bytes), never from the file name:

| input | detected by | notes |
|---|---|---|
| folder | a directory | walked recursively; symbolic links: see below |
| zip | ``PK\\x03\\x04`` / ``PK\\x05\\x06`` | a zip whose members are all top-level ``*.npy`` is an ``.npz`` |
| tar, tar.gz / tgz, tar.bz2, tar.xz | ``ustar`` or a valid tar header (after decompression) | streamed, not extracted |
| ``.npy`` / ``.npz`` | ``\\x93NUMPY`` / zip of ``.npy`` | :mod:`pu_mining.arrays` (no pickles); ``y``: int labels |
| IDX (MNIST), maybe gzipped | ``00 00 <type> <ndim>`` | :func:`pu_mining.idx.parse_idx`; images ``[N, H, W]`` |
| one image | PNG, JPEG, GIF, BMP, TIFF, WebP, PPM/PGM/PBM magic | decoded by Pillow, first frame only |

Uploads are hostile until proven otherwise. Nothing is ever extracted to disk: members are read into memory one at a
time through readers that stop at the :class:`ReadLimits`. Refused with :class:`UnsafeArchiveError` (a ValueError
naming the member and the reason), before anything is decompressed wherever the header already tells:

- member names that are absolute (``/etc/x``), have a drive letter (``C:x``), a backslash (a Windows path trick
  on a POSIX reader), a ``..`` component or a NUL byte, or that appear twice;
- tar symbolic links, hard links, devices, FIFOs and sparse files; zip entries whose Unix mode (in
  ``external_attr``) is a symbolic link or any other special file;
- more than ``max_files`` members, a member over ``max_file_bytes``, more than ``max_total_bytes`` in all
  (declared sizes, then the bytes actually read: a zip member is never inflated past its declared size, a tar
  stream never past the total);
- zip bombs: a member (over 1 MiB) or a whole archive declaring more than ``max_compression_ratio`` times its
  compressed size, a member whose compressed data is larger than its declared size allows (a lying header),
  members whose data overlap (Fifield's non-recursive bomb), a central directory too large for ``max_files``
  entries, and a member whose data does not match its header when read (bad CRC: corrupt or tampered);
- images over ``max_image_pixels`` (a PNG of 100,000 x 100,000 pixels is a few kilobytes): checked from the header,
  before decoding, and by Pillow itself (``Image.MAX_IMAGE_PIXELS`` set from the limits,
  ``DecompressionBombWarning`` an error).

Zip members compressed with bzip2 or LZMA are skipped (with the reason): :mod:`zipfile` inflates them without an
output bound, so a small member could fill memory. Deflate and stored members are read; tar archives may use gzip,
bzip2 or xz (those stream readers are bounded).

Skipped, each listed with its reason in :attr:`ImageReader.skipped`: hidden files and folders (a component starting
with ``.``: ``.DS_Store``, AppleDouble ``._x.png``), ``__MACOSX/`` metadata, files that are not images (README.txt),
nested archives (never opened), arrays inside folders or archives, encrypted zip members. A file whose content or
name says it is an image but that cannot be decoded (truncated PNG, text named ``x.png``) raises
:class:`ImageDecodeError`, or is skipped with the reason when ``on_error="skip"``.

Tar archives are read twice: a first pass checks every header, a second reads the members (in name order by
seeking for a plain tar; in one forward pass for a compressed one, where members stored out of name order wait in
memory until their turn: nothing for an archive written in name order, at most ``max_total_bytes``).

Folders: every symbolic link is checked; one that resolves to a regular file inside the folder is read, one that
points outside the folder, to a folder (no loops), or nowhere is skipped with the reason. Other special files
(FIFOs, sockets, devices) are skipped unopened.

Pixels: 8-bit grayscale stays ``[H, W]``; bilevel becomes 0/255; 16-bit grayscale (``I;16``, and ``I`` in
0..65535) is divided by 257; 32-bit float grayscale in [0, 1] is scaled by 255 (in [0, 255] kept); palette, CMYK,
YCbCr, LAB and HSV images become RGB (Pillow's ``convert("RGB")``), except palette images whose colours are all
greys (a grayscale GIF), which become grayscale; an alpha channel is composited onto black
(``rgb * alpha / 255``: what ``convert("RGB")`` gives for the usual zero-colour transparent pixels, but
deterministic); EXIF orientation is not applied (torchvision's loaders do not apply it either).
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import math
import os
import re
import stat
import struct
import tarfile
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
from PIL import Image, ImageFile

from pu_mining.arrays import images_to_uint8, read_uint8_image_arrays
from pu_mining.idx import parse_idx
from storage.hashing import file_sha256

__all__ = [
    "IMAGE_EXTENSIONS",
    "PIL_FORMATS",
    "TAR_MEMORY_BUDGET",
    "ImageDecodeError",
    "ImageReader",
    "ImageRecord",
    "ReadLimits",
    "SkippedMember",
    "UnsafeArchiveError",
    "decode_image",
    "is_hidden",
    "iter_images",
    "sniff",
]

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
TAR_MEMORY_BUDGET = 64 * _MIB
"""Bytes of a compressed tar's early members (out of name order) kept in memory; more wait in a temporary file."""
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
      (checked above :data:`RATIO_CHECK_MIN_BYTES`).
    """

    max_files: int = 200_000
    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 32 * _MIB
    max_image_pixels: int = 4096 * 4096
    max_compression_ratio: float = 200.0

    def __post_init__(self) -> None:
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


def iter_images(
    path: str | os.PathLike[str],
    limits: ReadLimits | None = None,
    labels_from_folders: bool = False,
    on_error: OnError = "raise",
) -> ImageReader:
    """The images of ``path`` (any accepted format; see the module), as an :class:`ImageReader` iterator.

    The format is detected and the input checked now (FileNotFoundError, ValueError); members are read as the
    iterator advances. ``.skipped`` lists what was not read and why. Reaching the end without a single image is
    a ValueError listing what was seen.
    """
    return ImageReader(path, limits, labels_from_folders=labels_from_folders, on_error=on_error)


class ImageReader(Iterator[ImageRecord]):
    """Iterator of the :class:`ImageRecord` of one input (one pass), with what it skipped.

    Attributes: ``source`` (the path given, as a string), ``format`` (``folder``, ``zip``, ``tar``, ``npy``,
    ``npz``, ``idx`` or ``image``), ``skipped`` (:class:`SkippedMember` list, filled while iterating) and ``count``
    (images yielded so far). :attr:`sha256` identifies the content.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        limits: ReadLimits | None = None,
        *,
        labels_from_folders: bool = False,
        on_error: OnError = "raise",
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if limits is None:
            limits = ReadLimits()
        if not isinstance(limits, ReadLimits):
            raise TypeError(f"limits must be a ReadLimits, got {type(limits).__name__}")
        if not isinstance(labels_from_folders, bool):
            raise TypeError(f"labels_from_folders must be a bool, got {type(labels_from_folders).__name__}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path = Path(path)
        self.source = str(path)
        self.limits = limits
        self.labels_from_folders = labels_from_folders
        self.on_error: OnError = on_error
        self.skipped: list[SkippedMember] = []
        self.count = 0
        self._finished = False
        self._folder_digest: hashlib._Hash | None = None
        self._file_sha256: str | None = None
        self.format, self._detail = _detect(self.path, limits)
        self._records = self._generate()

    def __iter__(self) -> ImageReader:
        return self

    def __next__(self) -> ImageRecord:
        return next(self._records)

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the input file, or for a folder of the sorted names and contents of the files it read.

        For a folder it is known once the iterator is exhausted (RuntimeError before).
        """
        if self.format != "folder":
            if self._file_sha256 is None:
                self._file_sha256 = file_sha256(self.path)
            return self._file_sha256
        if not self._finished or self._folder_digest is None:
            raise RuntimeError(f"{self.source}: the folder's digest is known once every image has been read")
        return self._folder_digest.hexdigest()

    # ------------------------------------------------------------------------------------------------- reading

    def _generate(self) -> Iterator[ImageRecord]:
        readers = {
            "folder": self._read_folder,
            "zip": self._read_zip,
            "tar": self._read_tar,
            "npy": self._read_arrays,
            "npz": self._read_arrays,
            "idx": self._read_idx,
            "image": self._read_single_image,
        }
        for record in readers[self.format]():
            self.count += 1
            yield record
        self._finished = True
        if self.count == 0:
            raise ValueError(f"{self.source}: no images found ({self.format}); {self._describe_skipped()}")

    def _describe_skipped(self, shown: int = 12) -> str:
        if not self.skipped:
            return "it holds nothing else either"
        listed = "; ".join(str(item) for item in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return f"seen and skipped: {listed}{more}"

    def _skip(self, name: str, reason: str) -> None:
        self.skipped.append(SkippedMember(name, reason))

    def _member(self, parts: tuple[str, ...], data: bytes) -> ImageRecord | None:
        """The record of a member's bytes; None (recorded as skipped) when it is not an image."""
        name = "/".join(parts)
        kind = sniff(data)
        claims_image = os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS
        if kind in _IMAGE_KINDS or claims_image:
            try:
                if kind not in _IMAGE_KINDS:
                    found = f"looks like {_KIND_NAMES[kind]}" if kind else f"starts with {data[:16]!r}"
                    raise ImageDecodeError(
                        f"{self.source}: member {name!r}: named like an image but its content is not one ({found})"
                    )
                image = decode_image(data, self.limits, f"{self.source}: member {name!r}")
            except ImageDecodeError as error:
                if self.on_error == "raise":
                    raise
                self._skip(name, str(error).removeprefix(f"{self.source}: member {name!r}: "))
                return None
            label = parts[0] if self.labels_from_folders and len(parts) > 1 else None
            return ImageRecord(self.source, name, image, label)
        if kind in _ARCHIVE_KINDS:
            self._skip(name, f"nested archive ({_KIND_NAMES[kind]}; not opened)")
        elif kind == "npy":
            self._skip(name, "a NumPy array inside a folder or archive (send .npy / .npz files on their own)")
        else:
            self._skip(name, "not an image")
        return None

    def _read_single_image(self) -> Iterator[ImageRecord]:
        size = self.path.stat().st_size
        if size > self.limits.max_file_bytes:
            raise UnsafeArchiveError(
                f"{self.source}: {size:,} bytes, over the {self.limits.max_file_bytes:,}-byte limit for one image"
            )
        data = _read_regular_file(self.path, self.limits.max_file_bytes, self.source)
        record = self._member((self.path.name,), data)
        if record is not None:
            yield record

    def _array_records(self, images: np.ndarray, labels: np.ndarray | None) -> Iterator[ImageRecord]:
        limits = self.limits
        if len(images) > limits.max_files:
            raise UnsafeArchiveError(
                f"{self.source}: {len(images):,} images, over the limit of {limits.max_files:,} (max_files)"
            )
        height, width = images.shape[1:3]
        if height * width > limits.max_image_pixels:
            raise UnsafeArchiveError(
                f"{self.source}: images of {width}x{height} pixels, over the limit of {limits.max_image_pixels:,}"
            )
        for index, image in enumerate(images):
            label = None if labels is None or labels[index] < 0 else int(labels[index])
            yield ImageRecord(self.source, f"index {index}", image, label)

    def _read_arrays(self) -> Iterator[ImageRecord]:
        if self.format == "npz":
            with _open_zip(self.path, self.source) as archive:
                infos = _check_zip(archive, self.path, self.limits, self.source)
                if any(info.compress_type not in _ZIP_READABLE for info in infos):
                    raise UnsafeArchiveError(f"{self.source}: .npz members must be stored or deflated")
        images, labels = read_uint8_image_arrays(self.path, max_bytes=self.limits.max_total_bytes)
        yield from self._array_records(images, labels)

    def _read_idx(self) -> Iterator[ImageRecord]:
        data = _read_idx_bytes(self.path, self._detail, self.limits, self.source)
        array = parse_idx(data, source=self.source)
        if array.ndim == 1:
            raise ValueError(f"{self.source}: an IDX file of labels (1-D), not of images (send the images file)")
        yield from self._array_records(images_to_uint8(array, self.source), None)

    # ---------------------------------------------------------------------------------------------- folders

    def _read_folder(self) -> Iterator[ImageRecord]:
        root = self.path.resolve()
        files = self._walk(root)
        files.sort(key=lambda item: item[0])
        self._folder_digest = hashlib.sha256()
        total = 0
        for parts, file_path in files:
            name = "/".join(parts)
            head, size = _read_head(file_path, _TAR_BLOCK, self.source, name)
            kind = sniff(head)
            claims_image = os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS
            if kind not in _IMAGE_KINDS and not claims_image:
                self._member(parts, head)  # records why it is skipped
                continue
            if size > self.limits.max_file_bytes:
                raise UnsafeArchiveError(
                    f"{self.source}: file {name!r} is {size:,} bytes, over the "
                    f"{self.limits.max_file_bytes:,}-byte limit for one image"
                )
            total += size
            if total > self.limits.max_total_bytes:
                raise UnsafeArchiveError(
                    f"{self.source}: the images add up to more than {self.limits.max_total_bytes:,} bytes (at {name!r})"
                )
            data = _read_regular_file(file_path, self.limits.max_file_bytes, f"{self.source}: file {name!r}")
            self._folder_digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
            self._folder_digest.update(hashlib.sha256(data).digest())
            record = self._member(parts, data)
            if record is not None:
                yield record

    def _walk(self, root: Path) -> list[tuple[tuple[str, ...], Path]]:
        """Regular files under ``root`` as (components, path); skips and limits as the module says."""
        found: list[tuple[tuple[str, ...], Path]] = []
        pending: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
        entries = 0
        while pending:
            folder, prefix = pending.pop()
            try:
                with os.scandir(folder) as scan:
                    listing = sorted(scan, key=lambda entry: entry.name)
            except OSError as error:
                raise ValueError(f"{self.source}: cannot list {folder} ({error.strerror or error})") from None
            for entry in listing:
                entries += 1
                if entries > self.limits.max_files:
                    raise UnsafeArchiveError(f"{self.source}: more than {self.limits.max_files:,} entries (max_files)")
                parts = (*prefix, entry.name)
                name = "/".join(parts)
                if is_hidden(parts):
                    self._skip(name + ("/" if entry.is_dir(follow_symlinks=False) else ""), _hidden_reason(parts))
                elif entry.is_symlink():
                    target = _inside_link_target(Path(entry.path), root)
                    if isinstance(target, str):
                        self._skip(name, target)
                    else:
                        found.append((parts, target))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), parts))
                elif entry.is_file(follow_symlinks=False):
                    found.append((parts, Path(entry.path)))
                else:
                    self._skip(name, "not a regular file (FIFO, socket or device; not opened)")
        return found

    # -------------------------------------------------------------------------------------------------- zip

    def _read_zip(self) -> Iterator[ImageRecord]:
        with _open_zip(self.path, self.source) as archive:
            infos = _check_zip(archive, self.path, self.limits, self.source)
            members = []
            for info in infos:
                parts = _member_parts(info.filename, self.source)
                if info.is_dir():
                    continue
                name = "/".join(parts)
                if is_hidden(parts):
                    self._skip(name, _hidden_reason(parts))
                elif info.flag_bits & 0x1:
                    self._skip(name, "encrypted (no password; not read)")
                elif info.compress_type not in _ZIP_READABLE:
                    method = _ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                    self._skip(name, f"compressed with {method} (only deflate and stored are read; re-zip it)")
                else:
                    members.append((parts, info))
            members.sort(key=lambda item: item[0])
            total = 0
            for parts, info in members:
                data = _read_zip_member(archive, info, self.limits, self.source, "/".join(parts))
                total += len(data)
                if total > self.limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        f"{self.source}: unpacks to more than {self.limits.max_total_bytes:,} bytes"
                    )
                record = self._member(parts, data)
                if record is not None:
                    yield record

    # -------------------------------------------------------------------------------------------------- tar

    def _read_tar(self) -> Iterator[ImageRecord]:
        compression = self._detail
        limits = self.limits
        raw_size = self.path.stat().st_size
        stream_limit = limits.max_total_bytes + 4 * _TAR_BLOCK * (limits.max_files + 1)
        with self.path.open("rb") as raw, _decompressing(raw, compression) as inner:
            stream = _BoundedStream(inner, stream_limit, limits.max_file_bytes + _TAR_BLOCK, self.source)
            try:
                archive = tarfile.TarFile(fileobj=stream, mode="r")  # type: ignore[arg-type]
                members = self._tar_members(archive, raw_size)
                if compression == "none":  # seeking is free: read in name order
                    for parts, info in members:
                        record = self._member(parts, _read_tar_member(archive, info, self.source, parts))
                        if record is not None:
                            yield record
                else:  # one forward pass through the stream, in archive order, releasing in name order
                    yield from self._tar_in_stream_order(archive, members)
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as error:
                raise ValueError(f"{self.source}: corrupt or truncated tar archive ({error})") from None

    def _tar_members(self, archive: tarfile.TarFile, raw_size: int) -> list[tuple[tuple[str, ...], tarfile.TarInfo]]:
        """Every member's header checked (first pass); the regular, visible files sorted by name."""
        limits = self.limits
        members: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        seen: set[tuple[str, ...]] = set()
        count = total = 0
        while (info := archive.next()) is not None:
            count += 1
            if count > limits.max_files:
                raise UnsafeArchiveError(f"{self.source}: more than {limits.max_files:,} members (max_files)")
            parts = _member_parts(info.name, self.source)
            name = "/".join(parts)
            where = f"{self.source}: member {info.name!r}"
            if info.issym():
                raise UnsafeArchiveError(f"{where}: a symbolic link (to {info.linkname!r}); refused")
            if info.islnk():
                raise UnsafeArchiveError(f"{where}: a hard link (to {info.linkname!r}); refused")
            if info.ischr() or info.isblk() or info.isfifo():
                raise UnsafeArchiveError(f"{where}: a device or FIFO; refused")
            if info.issparse():
                raise UnsafeArchiveError(f"{where}: a sparse file; refused")
            if info.isdir():
                continue
            if info.size > limits.max_file_bytes:
                raise UnsafeArchiveError(
                    f"{where}: {info.size:,} bytes, over the {limits.max_file_bytes:,}-byte limit for one member"
                )
            total += info.size
            if total > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    f"{self.source}: members add up to more than {limits.max_total_bytes:,} bytes (at {info.name!r})"
                )
            if total > RATIO_CHECK_MIN_BYTES and total > limits.max_compression_ratio * raw_size:
                raise UnsafeArchiveError(
                    f"{self.source}: unpacks to over {limits.max_compression_ratio:g} times its {raw_size:,} bytes "
                    f"(at {info.name!r}): a decompression bomb?"
                )
            if parts in seen:
                raise UnsafeArchiveError(f"{where}: listed twice (ambiguous); refused")
            seen.add(parts)
            if not info.isreg():
                self._skip(name, f"unsupported tar member type {info.type!r}")
            elif is_hidden(parts):
                self._skip(name, _hidden_reason(parts))
            else:
                members.append((parts, info))
        members.sort(key=lambda item: item[0])
        return members

    def _tar_in_stream_order(
        self, archive: tarfile.TarFile, members: list[tuple[tuple[str, ...], tarfile.TarInfo]]
    ) -> Iterator[ImageRecord]:
        """Read members in stream order (forward seeks only), yield them in name order.

        Members that arrive before their turn wait: nothing for an archive written in name order; otherwise in
        memory up to :data:`TAR_MEMORY_BUDGET` bytes, and past it in an unlinked temporary file (bounded by
        ``max_total_bytes``), so an archive in any order costs bounded memory.
        """
        rank = {id(info): position for position, (_, info) in enumerate(members)}
        waiting: dict[int, bytes | tuple[int, int]] = {}
        in_memory = 0
        spill: IO[bytes] | None = None
        next_rank = 0
        try:
            for parts, info in sorted(members, key=lambda item: item[1].offset_data):
                data = _read_tar_member(archive, info, self.source, parts)
                position = rank[id(info)]
                if position != next_rank and in_memory + len(data) > TAR_MEMORY_BUDGET:
                    if spill is None:
                        spill = tempfile.TemporaryFile(prefix="condense-tar-")  # noqa: SIM115 -- closed below
                    offset = spill.seek(0, os.SEEK_END)
                    spill.write(data)
                    waiting[position] = (offset, len(data))
                else:
                    waiting[position] = data
                    in_memory += len(data)
                del data
                while next_rank in waiting:
                    item = waiting.pop(next_rank)
                    if isinstance(item, tuple):
                        if spill is None:
                            raise RuntimeError("a member was set aside without a temporary file")
                        spill.seek(item[0])
                        item = spill.read(item[1])
                    else:
                        in_memory -= len(item)
                    record = self._member(members[next_rank][0], item)
                    next_rank += 1
                    if record is not None:
                        yield record
        finally:
            if spill is not None:
                spill.close()


# ------------------------------------------------------------------------------------------------ format detection

_IMAGE_KINDS = frozenset({"png", "jpeg", "gif", "bmp", "tiff", "webp", "ppm"})
_ARCHIVE_KINDS = frozenset({"zip", "gzip", "bzip2", "xz", "tar", "7z", "rar"})
_KIND_NAMES = {
    "png": "PNG", "jpeg": "JPEG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WebP", "ppm": "PPM/PGM/PBM",
    "zip": "a zip archive", "gzip": "gzip data", "bzip2": "bzip2 data", "xz": "xz data", "tar": "a tar archive",
    "7z": "a 7-Zip archive", "rar": "a RAR archive", "npy": "a NumPy array",
}  # fmt: skip
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # IDX type code -> bytes per value


def sniff(data: bytes) -> str | None:
    """What ``data`` (the first bytes of a file, 512 for tar) is, from magic bytes: an image kind (``png``,
    ``jpeg``, ``gif``, ``bmp``, ``tiff``, ``webp``, ``ppm``), an archive kind (``zip``, ``gzip``, ``bzip2``,
    ``xz``, ``tar``, ``7z``, ``rar``), ``npy``, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM") and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if re.match(rb"P[1-6][ \t\r\n#]", data[:3]):
        return "ppm"
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if re.match(rb"BZh[1-9]", data[:4]):
        return "bzip2"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if data.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if _is_tar_header(data):
        return "tar"
    return None


def _is_tar_header(block: bytes) -> bool:
    if len(block) < _TAR_BLOCK:
        return False
    if block[257:262] == b"ustar":
        return True
    try:  # a pre-POSIX (v7) header: only its checksum tells
        tarfile.TarInfo.frombuf(block[:_TAR_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _is_idx_header(head: bytes) -> bool:
    return len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_ITEM_BYTES and 1 <= head[3] <= 4


def _detect(path: Path, limits: ReadLimits) -> tuple[InputFormat, str]:
    """The input's format and a detail (the tar compression; for IDX, ``gzip`` or ``none``)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file or folder") from None
    if stat.S_ISDIR(info.st_mode):
        return "folder", ""
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: not a regular file or a folder")
    if info.st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    if info.st_size > limits.max_total_bytes:
        raise UnsafeArchiveError(f"{path}: {info.st_size:,} bytes, over the {limits.max_total_bytes:,}-byte limit")
    with path.open("rb") as handle:
        head = handle.read(_TAR_BLOCK)
    kind = sniff(head)
    if kind in _IMAGE_KINDS:
        return "image", kind or ""
    if kind == "npy":
        return "npy", ""
    if kind == "zip":
        return ("npz" if _is_npz(path) else "zip"), ""
    if kind == "tar":
        return "tar", "none"
    if kind in ("gzip", "bzip2", "xz"):
        inner = _peek_decompressed(path, kind, path)
        if _is_tar_header(inner):
            return "tar", kind
        if kind == "gzip" and _is_idx_header(inner):
            return "idx", "gzip"
        what = _KIND_NAMES.get(sniff(inner) or "", "unrecognised data")
        raise ValueError(f"{path}: {_KIND_NAMES[kind]} holding {what} (accepted: tar archives, gzipped IDX files)")
    if _is_idx_header(head):
        return "idx", "none"
    if kind is not None:
        raise ValueError(f"{path}: {_KIND_NAMES[kind]}, which is not accepted (send zip or tar archives)")
    raise ValueError(
        f"{path}: unrecognised format (starts with {head[:16]!r}); accepted: a folder, zip, tar (.tar, .tar.gz, "
        ".tar.bz2, .tar.xz), .npy, .npz, IDX (optionally gzipped) or an image file (PNG, JPEG, GIF, BMP, TIFF, "
        "WebP, PPM)"
    )


def _is_npz(path: Path) -> bool:
    """A zip whose members are all top-level ``.npy`` files (what ``numpy.savez`` writes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # reported as a corrupt zip when read
    return bool(names) and all(name.endswith(".npy") and "/" not in name for name in names)


def _peek_decompressed(path: Path, kind: str, source: object) -> bytes:
    try:
        with path.open("rb") as raw, _decompressing(raw, kind) as stream:
            return stream.read(_TAR_BLOCK)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise ValueError(f"{source}: corrupt {_KIND_NAMES[kind]} ({error})") from None


def _decompressing(raw: IO[bytes], kind: str) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


# ---------------------------------------------------------------------------------------------------- reading


def _open_nofollow(path: Path, what: str) -> int:
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeArchiveError(f"{what}: became a symbolic link while being read; refused") from None
        raise ValueError(f"{what}: cannot open it ({error.strerror or error})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnsafeArchiveError(f"{what}: not a regular file; refused")
    return descriptor


def _read_head(path: Path, count: int, source: str, name: str) -> tuple[bytes, int]:
    """The first ``count`` bytes of a folder's file, and its size."""
    descriptor = _open_nofollow(path, f"{source}: file {name!r}")
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read(count), os.fstat(handle.fileno()).st_size


def _read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file ``path`` (not through a final symbolic link), at most ``max_bytes``."""
    descriptor = _open_nofollow(path, what)
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeArchiveError(f"{what}: over the {max_bytes:,}-byte limit for one image")
    return data


def _inside_link_target(link: Path, root: Path) -> Path | str:
    """The file a folder's symbolic link resolves to when it is a regular file inside ``root``, else the reason."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken or looping symbolic link (not followed)"
    if not target.is_relative_to(root):
        return "symbolic link pointing outside the folder (not followed)"
    if target.is_dir():
        return "symbolic link to a folder (not followed)"
    if not target.is_file():
        return "symbolic link to something that is not a regular file (not followed)"
    return target


def _hidden_reason(parts: tuple[str, ...]) -> str:
    if "__MACOSX" in parts or parts[-1].startswith("._"):
        return "macOS metadata"
    return "hidden file or folder"


_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_parts(name: str, source: str) -> tuple[str, ...]:
    """The components of an archive member's name; UnsafeArchiveError for a name that could escape a folder."""
    reason = None
    if "\x00" in name:
        reason = "a NUL byte in its name"
    elif "\\" in name:
        reason = "a backslash in its name (a Windows path separator: a path trick)"
    elif name.startswith("/"):
        reason = "an absolute path"
    elif _DRIVE.match(name):
        reason = "a drive letter"
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if reason is None and ".." in parts:
        reason = "a '..' component (path traversal)"
    if reason is None and not parts:
        reason = "an empty name"
    if reason is not None:
        raise UnsafeArchiveError(f"{source}: member {name!r}: {reason}; refused")
    return parts


def _read_idx_bytes(path: Path, compression: str, limits: ReadLimits, source: str) -> bytes:
    """The uncompressed IDX bytes, read no further than the header's shape promises (and the limits allow)."""
    try:
        with path.open("rb") as raw, _decompressing(raw, compression) as stream:
            head = stream.read(4)
            if not _is_idx_header(head):
                raise ValueError(f"{source}: not an IDX file")
            dims = stream.read(4 * head[3])
            if len(dims) != 4 * head[3]:
                raise ValueError(f"{source}: truncated IDX header")
            shape = [int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]
            expected = math.prod(shape) * _IDX_ITEM_BYTES[head[2]]
            if expected > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    f"{source}: the IDX header promises {expected:,} bytes (shape {tuple(shape)}), over the "
                    f"{limits.max_total_bytes:,}-byte limit"
                )
            body = stream.read(expected + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{source}: corrupt gzip stream ({error})") from None
    if len(body) != expected:
        raise ValueError(f"{source}: IDX header promises {expected:,} data bytes, found {len(body):,}")
    return head + dims + body


# -------------------------------------------------------------------------------------------------------- zip

_ZIP_READABLE = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_ZIP_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "Deflate64"}
_ZIP_LOCAL_HEADER = 30
_ZIP_CENTRAL_ENTRY_BUDGET = 1024
"""Central-directory bytes allowed per entry of ``max_files`` (an entry is 46 bytes plus name, extra, comment)."""


def _open_zip(path: Path, source: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ValueError(f"{source}: corrupt or truncated zip archive ({error})") from None


def _check_zip_directory(path: Path, limits: ReadLimits, source: str) -> None:
    """Refuse a central directory too large for ``max_files`` before :mod:`zipfile` parses it into memory."""
    find_end_record = getattr(zipfile, "_EndRecData", None)  # private, but stable since Python 2; optional here
    if find_end_record is None:
        return
    with path.open("rb") as handle:
        try:
            end = find_end_record(handle)
        except (OSError, struct.error):
            return  # zipfile reports it
    if not end:
        return
    entries = end[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)]
    directory_bytes = end[getattr(zipfile, "_ECD_SIZE", 5)]
    if entries > limits.max_files:
        raise UnsafeArchiveError(f"{source}: {entries:,} members, over the limit of {limits.max_files:,} (max_files)")
    if directory_bytes > _ZIP_CENTRAL_ENTRY_BUDGET * limits.max_files:
        raise UnsafeArchiveError(
            f"{source}: a central directory of {directory_bytes:,} bytes, too large for {limits.max_files:,} members"
        )


def _check_zip(archive: zipfile.ZipFile, path: Path, limits: ReadLimits, source: str) -> list[zipfile.ZipInfo]:
    """Every zip-level rule of the module, from the central directory alone; the members in archive order."""
    _check_zip_directory(path, limits, source)
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise UnsafeArchiveError(f"{source}: {len(infos):,} members, over the limit of {limits.max_files:,}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for info in infos:
        parts = _member_parts(info.filename, source)
        where = f"{source}: member {info.filename!r}"
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(f"{where}: a symbolic link (Unix mode {mode:o}); refused")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"{where}: a special file (Unix mode {mode:o}); refused")
        if info.is_dir():
            continue
        if parts in seen:
            raise UnsafeArchiveError(f"{where}: listed twice (ambiguous); refused")
        seen.add(parts)
        if info.file_size > limits.max_file_bytes:
            raise UnsafeArchiveError(
                f"{where}: declares {info.file_size:,} bytes, over the {limits.max_file_bytes:,}-byte limit for one "
                "member"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"{source}: members declare more than {limits.max_total_bytes:,} bytes in all (at {info.filename!r})"
            )
        encryption = 12 if info.flag_bits & 0x1 else 0
        if info.compress_type == zipfile.ZIP_STORED:
            lying = info.compress_size != info.file_size + encryption
        else:  # no real compressor grows data by more than about 1 % plus a few hundred bytes
            lying = info.compress_size > info.file_size + info.file_size // 100 + 1024 + encryption
        if lying:
            raise UnsafeArchiveError(
                f"{where}: {info.compress_size:,} compressed bytes cannot hold only the {info.file_size:,} bytes it "
                "declares (a lying header: a zip bomb?); refused"
            )
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > limits.max_compression_ratio * max(
            info.compress_size, 1
        ):
            raise UnsafeArchiveError(
                f"{where}: {info.compress_size:,} compressed bytes declare {info.file_size:,} (more than "
                f"{limits.max_compression_ratio:g} times as many: a zip bomb?); refused"
            )
    archive_bytes = path.stat().st_size
    if total > RATIO_CHECK_MIN_BYTES and total > limits.max_compression_ratio * archive_bytes:
        raise UnsafeArchiveError(
            f"{source}: unpacks to {total:,} bytes, more than {limits.max_compression_ratio:g} times its "
            f"{archive_bytes:,} (a zip bomb?); refused"
        )
    spans = sorted(infos, key=lambda info: info.header_offset)
    end_of_data = getattr(archive, "start_dir", archive_bytes)
    for info, after in zip(spans, [*spans[1:], None], strict=True):
        limit = end_of_data if after is None else after.header_offset
        if info.header_offset + _ZIP_LOCAL_HEADER + info.compress_size > limit:
            raise UnsafeArchiveError(
                f"{source}: member {info.filename!r} overlaps "
                + ("the central directory" if after is None else f"member {after.filename!r}")
                + " (overlapping members: a zip bomb construction); refused"
            )
    return infos


def _read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ReadLimits, source: str, name: str
) -> bytes:
    """A zip member's bytes: :mod:`zipfile` inflates deflate output in bounded steps and never past ``file_size``."""
    where = f"{source}: member {name!r}"
    try:
        with archive.open(info) as member:
            data = member.read(min(info.file_size, limits.max_file_bytes) + 1)
    except zipfile.BadZipFile as error:
        raise UnsafeArchiveError(
            f"{where}: its data does not match its header ({error}): corrupt or tampered; refused"
        ) from None
    except (OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as error:
        raise ValueError(f"{where}: cannot read it ({error})") from None
    if len(data) != info.file_size:
        raise UnsafeArchiveError(
            f"{where}: holds {len(data):,}{'+' if len(data) > info.file_size else ''} bytes, not the "
            f"{info.file_size:,} it declares: corrupt or tampered; refused"
        )
    return data


# -------------------------------------------------------------------------------------------------------- tar


class _BoundedStream:
    """A seekable read-only view of a (decompressing) stream that refuses to go past ``limit`` bytes in all or to
    hand out more than ``max_read`` bytes in one read: what :mod:`tarfile` reads in one go (a pax or GNU long-name
    header, a member) is bounded, and so is the decompression."""

    def __init__(self, inner: IO[bytes], limit: int, max_read: int, source: str) -> None:
        self._inner = inner
        self._limit = limit
        self._max_read = max_read
        self._source = source
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self._max_read:
            raise UnsafeArchiveError(
                f"{self._source}: a tar header or member over {self._max_read:,} bytes at offset "
                f"{self._position:,}; refused"
            )
        data = self._inner.read(size)
        self._position += len(data)
        if self._position > self._limit:
            raise UnsafeArchiveError(f"{self._source}: unpacks to more than {self._limit:,} bytes; refused")
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute and relative seeks")
        if offset > self._limit:
            raise UnsafeArchiveError(f"{self._source}: unpacks to more than {self._limit:,} bytes; refused")
        self._position = self._inner.seek(offset)
        return self._position

    def tell(self) -> int:
        return self._position


def _read_tar_member(archive: tarfile.TarFile, info: tarfile.TarInfo, source: str, parts: tuple[str, ...]) -> bytes:
    member = archive.extractfile(info)
    if member is None:
        raise ValueError(f"{source}: member {'/'.join(parts)!r}: cannot be read")
    with member:
        data = member.read(info.size)
    if len(data) != info.size:
        raise ValueError(f"{source}: member {'/'.join(parts)!r}: truncated ({len(data):,} of {info.size:,} bytes)")
    return data


# ------------------------------------------------------------------------------------------------------ decoding

_PIL_LOCK = threading.Lock()


def decode_image(data: bytes, limits: ReadLimits | None = None, name: str = "<image>") -> np.ndarray:
    """The first frame of the image file in ``data`` as ``uint8`` ``[H, W]`` or ``[H, W, 3]`` (see the module).

    Only the Pillow decoders in :data:`PIL_FORMATS`. ImageDecodeError (naming ``name``) for anything that does not
    decode; UnsafeArchiveError for an image over ``limits.max_image_pixels``, checked from the header before the
    pixels are decoded. Pillow's global settings are changed for the call only, under a lock.
    """
    if limits is None:
        limits = ReadLimits()
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise ImageDecodeError(f"{name}: an image of {width}x{height} pixels")
                if width * height > limits.max_image_pixels:
                    raise _pixel_bomb(name, width, height, limits)
                image.load()
                return _to_uint8_pixels(image, name)
        except (UnsafeArchiveError, ImageDecodeError):
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UnsafeArchiveError(
                f"{name}: over the {limits.max_image_pixels:,}-pixel limit ({error}); refused"
            ) from None
        except MemoryError:
            raise
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... for bad files
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise ImageDecodeError(f"{name}: cannot decode the image ({detail})") from None
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _pixel_bomb(name: str, width: int, height: int, limits: ReadLimits) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{name}: {width}x{height} = {width * height:,} pixels, over the {limits.max_image_pixels:,}-pixel limit "
        "(a decompression bomb?); refused"
    )


def _to_uint8_pixels(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "L"):
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    elif mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(f"{name}: 32-bit integer pixels outside 0..65535")
        pixels = ((values * 255 + 32767) // 65535).astype(np.uint8)
    elif mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageDecodeError(f"{name}: float pixels with NaN or infinite values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0 or high > 255:
            raise ImageDecodeError(f"{name}: float pixels in [{low:g}, {high:g}], neither [0, 1] nor [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
        pixels = np.rint(values * scale).clip(0, 255).astype(np.uint8)
    elif mode in ("LA", "La"):
        gray_alpha = np.asarray(image.convert("LA"), dtype=np.uint16)
        pixels = ((gray_alpha[..., 0] * gray_alpha[..., 1] + 127) // 255).astype(np.uint8)
    elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        pixels = ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
    elif mode == "RGB":
        pixels = np.asarray(image, dtype=np.uint8)
    else:  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in ("P", "PA") and (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
        pixels = pixels[..., 0]  # a palette of greys (a grayscale GIF) is a grayscale image
    return np.ascontiguousarray(pixels)
