"""The blob store interface: :class:`BlobStore`, what it lists (:class:`BlobInfo`) and what a missing blob raises
(:class:`BlobNotFoundError`). The contract is described in :mod:`storage.blobs`."""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.blobs.keys import validate_prefix

__all__ = ["COPY_CHUNK", "BlobInfo", "BlobNotFoundError", "BlobStore"]

#: Bytes per read when a backend copies a stream.
COPY_CHUNK = 1024 * 1024


class BlobNotFoundError(FileNotFoundError, KeyError):
    """No blob is stored under ``key``. Both a :class:`FileNotFoundError` and a :class:`KeyError`."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no blob stored under key {key!r}")
        self.key = key

    def __str__(self) -> str:  # KeyError would quote the message; keep OSError's plain text
        return str(self.args[0])


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob: its key (relative to the store) and its size in bytes."""

    key: str
    size: int


class BlobStore(abc.ABC):
    """Named byte strings ("blobs") under ``/``-separated keys. See the module docstring."""

    # writing -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any blob there."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Store the content of the file ``path`` under ``key`` (streamed; S3: multipart when large)."""

    @abc.abstractmethod
    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """Context manager yielding a writable binary file; the blob appears when the block succeeds.

        If the block raises, nothing is stored (any previous blob under ``key`` stays as it was). Do not
        close the file yourself; doing so makes the context manager raise :class:`ValueError`.
        """

    # reading -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the whole blob (for small blobs; stream big ones with :meth:`open_read`)."""

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """Open the blob for reading as a binary file (a context manager; close it when done)."""

    @abc.abstractmethod
    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        """Copy the blob to the file ``path`` atomically (a temporary file renamed into place)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Size of the blob in bytes."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Yield the blobs whose key starts with ``prefix`` (as a string), sorted by key."""

    # deleting ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the blob under ``key``; a missing blob is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with ``prefix``; return how many were deleted.

        An empty prefix is refused (:class:`ValueError`): wiping a whole store takes an explicit loop.
        """
        prefix = validate_prefix(prefix)
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix; it will not delete every blob")
        return self._delete_prefix(prefix)

    @abc.abstractmethod
    def _delete_prefix(self, prefix: str) -> int: ...

    # locations -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The blob's real file (local stores; raises :class:`BlobNotFoundError` if missing), else ``None``."""

    @abc.abstractmethod
    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A URL that downloads the blob for ``expires_s`` seconds without credentials (S3), else ``None``.

        The URL is signed locally: no request is made, so a missing blob gives a URL that answers 404.
        """

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release resources (nothing for the built-in backends)."""

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
