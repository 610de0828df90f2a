"""Format detection and the low-level readers of :mod:`pu_mining.image_files`: sniffing, safe opening of files,
member paths, IDX, and the zip / tar checks against bombs, links and lying headers (limits:
:class:`pu_mining.image_types.ReadLimits`).
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import math
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, cast

from pu_mining.image_types import (
    _TAR_BLOCK,
    RATIO_CHECK_MIN_BYTES,
    InputFormat,
    ReadLimits,
    UnsafeArchiveError,
)

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
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
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
