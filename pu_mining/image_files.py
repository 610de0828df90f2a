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

import dataclasses
import hashlib
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from pu_mining.array_stream import stream_uint8_npz
from pu_mining.arrays import images_to_uint8, read_uint8_image_arrays
from pu_mining.file_formats import (
    _ARCHIVE_KINDS,
    _IMAGE_KINDS,
    _KIND_NAMES,
    _ZIP_METHOD_NAMES,
    _ZIP_READABLE,
    _BoundedStream,
    _check_zip,
    _decompressing,
    _detect,
    _hidden_reason,
    _inside_link_target,
    _member_parts,
    _open_zip,
    _read_head,
    _read_idx_bytes,
    _read_regular_file,
    _read_tar_member,
    _read_zip_member,
    sniff,
)
from pu_mining.idx import parse_idx
from pu_mining.image_decode import (
    decode_image,
)
from pu_mining.image_types import (
    _TAR_BLOCK,
    IMAGE_EXTENSIONS,
    PIL_FORMATS,
    RATIO_CHECK_MIN_BYTES,
    ImageDecodeError,
    ImageRecord,
    OnError,
    ReadLimits,
    SkippedMember,
    UnsafeArchiveError,
    is_hidden,
)
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

TAR_MEMORY_BUDGET = 64 * 1024**2
"""Bytes of a compressed tar's early members (out of name order) kept in memory; more wait in a temporary file."""


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

    def _array_records(
        self, images: np.ndarray, labels: np.ndarray | None, first_index: int = 0
    ) -> Iterator[ImageRecord]:
        limits = self.limits
        if first_index + len(images) > limits.max_files:
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
            yield ImageRecord(self.source, f"index {first_index + index}", image, label)

    def _read_arrays(self) -> Iterator[ImageRecord]:
        if self.format == "npz":
            array_limits = dataclasses.replace(
                self.limits, max_file_bytes=self.limits.max_array_bytes or self.limits.max_file_bytes
            )
            with _open_zip(self.path, self.source) as archive:
                infos = _check_zip(archive, self.path, array_limits, self.source)
                if any(info.compress_type not in _ZIP_READABLE for info in infos):
                    raise UnsafeArchiveError(f"{self.source}: .npz members must be stored or deflated")
            chunks = stream_uint8_npz(self.path)
            if chunks is not None:
                yield from self._streamed_records(chunks)
                return
        images, labels = read_uint8_image_arrays(self.path, max_bytes=self.limits.max_total_bytes)
        yield from self._array_records(images, labels)

    def _streamed_records(self, chunks: Iterator[tuple[np.ndarray, np.ndarray | None]]) -> Iterator[ImageRecord]:
        offset = 0
        for images, labels in chunks:
            yield from self._array_records(images, labels, first_index=offset)
            offset += len(images)

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
                    # The name with NUL (which no member name holds) between its parts sorts as the parts' tuple
                    # does, in one string instead of a tuple of strings: 100,000 members cost 8 MiB, not 19.
                    members.append((name.replace("/", "\0"), info))
            members.sort(key=lambda item: item[0])
            total = 0
            for key, info in members:
                parts = tuple(key.split("\0"))
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
