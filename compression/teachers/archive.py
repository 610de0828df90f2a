"""Reading an uploaded teacher file once, and opening it as a zip archive.

To load a teacher, the file is read once into memory (after a size check, default limit 2 GiB:
:data:`DEFAULT_MAX_TEACHER_BYTES`) into an :class:`Upload`: format detection, validation, hashing and loading all use
those same bytes (:func:`read_upload`). To check an upload in the web process, it is memory-mapped instead
(:func:`map_upload`), so the check costs little memory whatever the file's size. Zip
archives are opened both by :mod:`zipfile` (CRC check, duplicate names, uncompressed-size limit) and by
torch's own reader, and must list the same members, so both readers see the same archive
(:class:`Archive`). Which members each format may contain is checked by
:mod:`compression.teachers.torchscript` and :mod:`compression.teachers.torch_export`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compression.teachers.errors import EXPORT_INSTRUCTIONS, TeacherLoadError, describe_exception

__all__ = [
    "DEFAULT_MAX_TEACHER_BYTES",
    "Archive",
    "Upload",
    "check_max_bytes",
    "map_upload",
    "open_archive",
    "read_upload",
]

DEFAULT_MAX_TEACHER_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Upload:
    """A teacher file: its path, its content (bytes read once, or a read-only memory map) and its SHA-256."""

    path: Path
    data: bytes | mmap.mmap
    sha256: str

    @property
    def mapped(self) -> bool:
        return isinstance(self.data, mmap.mmap)

    def fail(self, reason: str) -> TeacherLoadError:
        return TeacherLoadError(self.path, reason)


def check_max_bytes(max_bytes: object) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    return max_bytes


def _checked_file(path: object, max_bytes: int) -> Path:
    """``path`` as a Path after the checks both readers share: a regular, non-empty file within ``max_bytes``."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    file = Path(path)
    try:
        info = file.stat()
    except FileNotFoundError:
        raise TeacherLoadError(file, "no such file") from None
    except OSError as exc:
        raise TeacherLoadError(file, f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise TeacherLoadError(file, "it is a directory, not a model file")
    if not stat.S_ISREG(info.st_mode):
        raise TeacherLoadError(file, "it is not a regular file")
    if info.st_size == 0:
        raise TeacherLoadError(file, "the file is empty")
    if info.st_size > max_bytes:
        raise TeacherLoadError(file, f"the file is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
    return file


def read_upload(path: object, max_bytes: int) -> Upload:
    """The file read once into memory (for loading: every later step uses these same bytes)."""
    file = _checked_file(path, max_bytes)
    try:
        with file.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise TeacherLoadError(file, f"cannot read it ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew since stat()
        raise TeacherLoadError(file, f"the file is over the {max_bytes:,}-byte limit")
    if not data:
        raise TeacherLoadError(file, "the file is empty")
    return Upload(path=file, data=data, sha256=hashlib.sha256(data).hexdigest())


@contextlib.contextmanager
def map_upload(path: object, max_bytes: int) -> Iterator[Upload]:
    """The file memory-mapped, not read (for checking an upload in the web process: bounded memory whatever its size).

    Only the pages a check touches are read: the first bytes, a zip's directory and small members, an ONNX file's
    structure (:func:`compression.teachers.onnx_skeleton.onnx_skeleton`). The hash is computed in 1 MiB reads. The
    map is closed when the block ends; what :func:`compression.teachers.detect.detect` returned stays usable.
    """
    file = _checked_file(path, max_bytes)
    try:
        with file.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise TeacherLoadError(file, f"cannot read it ({describe_exception(exc)})") from None
    try:
        if len(data) > max_bytes:  # grew since stat()
            raise TeacherLoadError(file, f"the file is over the {max_bytes:,}-byte limit")
        yield Upload(path=file, data=data, sha256=digest)
    finally:
        data.close()


@dataclass(frozen=True)
class Archive:
    """A validated zip archive: its members relative to the single root folder, read through torch's reader."""

    members: frozenset[str]
    reader: Any  # torch._C.PyTorchFileReader

    def read(self, name: str) -> bytes:
        return bytes(self.reader.get_record(name))


def open_archive(upload: Upload, max_bytes: int) -> Archive:
    try:
        with zipfile.ZipFile(upload.path if upload.mapped else io.BytesIO(upload.data)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise upload.fail("the zip archive lists a member twice (ambiguous; refused)")
            declared = sum(info.file_size for info in infos)
            if declared > max_bytes:
                raise upload.fail(f"the zip archive unpacks to {declared:,} bytes, over the {max_bytes:,}-byte limit")
            bad_member = archive.testzip()
    except TeacherLoadError:
        raise
    except Exception as exc:
        raise upload.fail(f"corrupt or truncated zip archive ({describe_exception(exc)})") from None
    if bad_member is not None:
        raise upload.fail(f"corrupt zip archive: member {bad_member!r} fails its CRC check")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise upload.fail(
            "a zip archive, but not one written by PyTorch (its members are not all inside one folder)\n"
            + EXPORT_INSTRUCTIONS
        )
    root = roots.pop() + "/"
    relative = frozenset(name[len(root) :] for name in names if not name.endswith("/"))
    try:
        source = str(upload.path) if upload.mapped else io.BytesIO(upload.data)
        reader = torch._C.PyTorchFileReader(source)
        torch_view = frozenset(reader.get_all_records())
    except Exception as exc:
        raise upload.fail(f"corrupt zip archive: PyTorch cannot open it ({describe_exception(exc)})") from None
    if torch_view != relative:
        raise upload.fail("the zip archive's members read differently by PyTorch and by zipfile (refused)")
    return Archive(members=relative, reader=reader)
