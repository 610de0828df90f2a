"""Atomic file writes: the one way Condense writes a file that others may read while it is being written.

:func:`atomic_write` yields a new temporary file next to the destination (hidden, a name of its own); when the block
ends without an exception the file is flushed, fsynced and renamed over the destination (``os.replace``; with
``overwrite=False`` linked into place, failing with :class:`FileExistsError` when the destination exists), and the
folder is fsynced. A reader sees the old file, the new one or none -- never half of one. On an exception the
temporary file is removed and the destination is untouched. ``mode`` sets the permissions the file is created with
(before the process umask; ``0o600`` for secrets, which are never readable by others, not even briefly).
:func:`open_temporary`, :func:`commit` and :func:`discard` are the three steps, for writers that manage them
themselves (the local blob store retries the first step).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "commit", "discard", "open_temporary"]


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_temporary(dest: Path, *, mode: int = 0o666, suffix: str = ".tmp") -> tuple[Path, BinaryIO]:
    """A new hidden temporary file next to ``dest``, open for writing: ``(its path, its handle)``."""
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}{suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    return tmp, os.fdopen(fd, "wb")


def commit(tmp: Path, handle: BinaryIO, dest: Path, *, overwrite: bool = True) -> None:
    """Flush, fsync and close ``handle``, then put ``tmp`` in place of ``dest`` (see the module docstring)."""
    if handle.closed:
        raise ValueError("the file was closed inside the 'with' block; nothing was stored")
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    if overwrite:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    fsync_dir(dest.parent)


def discard(tmp: Path, handle: IO[bytes] | None) -> None:
    """Close ``handle`` and remove ``tmp`` (after a failed write)."""
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, mode: int = 0o666, overwrite: bool = True, suffix: str = ".tmp"
) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the block exits without an exception."""
    dest = Path(path)
    tmp, handle = open_temporary(dest, mode=mode, suffix=suffix)
    try:
        yield handle
        commit(tmp, handle, dest, overwrite=overwrite)
    except BaseException:
        discard(tmp, handle)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o666, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, mode=mode, overwrite=overwrite) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o666, overwrite: bool = True) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, overwrite=overwrite)
