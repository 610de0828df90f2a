"""Atomic file output for writers that need a path (``torch.save``, ``np.save``, ONNX exporters, FAISS).

:func:`atomic_path` yields a fresh hidden path next to the destination. The caller writes the file there by any means;
when the block ends without an exception the file is fsynced and renamed over the destination (``os.replace``), and
the folder is fsynced, so a reader sees the old file, the new one or none -- never half of one. On an exception the
temporary file (and any sidecar named in ``sidecar_suffixes``, such as an exporter's ``.data`` file) is removed and
the destination is untouched. :func:`atomic_write_text` is the common case of a small text file.

This is the compression layer's one atomic-write helper (it imports nothing of the product's other packages);
``storage.files`` is the storage layer's, with a file-handle interface for streams.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text"]


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    destination: str | os.PathLike[str], *, suffix: str = ".tmp", sidecar_suffixes: Sequence[str] = ()
) -> Iterator[Path]:
    """A temporary path next to ``destination``; renamed over it when the block ends without an exception.

    ``suffix`` ends the temporary name (some writers choose a format by it, e.g. ``.tmp.onnx``). Raises
    :class:`FileNotFoundError` when the block ends normally but wrote nothing at the path.
    """
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")
    try:
        yield temporary
        if not temporary.is_file():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        for leftover in (temporary, *(temporary.with_name(temporary.name + s) for s in sidecar_suffixes)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    _fsync_folder(target.parent)


def atomic_write_text(destination: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``destination`` atomically (see :func:`atomic_path`)."""
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")
