"""The local-folder blob store.

:class:`LocalBlobStore` -- files under a root folder (the embedded default). A blob's key is its
path below the root. Writes go to a temporary file in the destination folder, are ``fsync``\\ ed and
renamed over the final name (``os.replace``), so readers see either the old blob, the new one or
none -- never a partial file. Temporary files carry a backslash in their name, which no valid key
can contain, so they never show up in :meth:`BlobStore.list`. :meth:`BlobStore.local_path` returns
the real file, so a FAISS index can be memory-mapped in place. Deleting the last blob of a folder
removes the empty folders up to the root, so "folders" exist only while they hold blobs, as on S3.
One difference to S3 remains: a key cannot be both a blob and a folder (``a`` and ``a/b``); storing
the second raises :class:`ValueError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage.blobs.interface import COPY_CHUNK, BlobInfo, BlobNotFoundError, BlobStore
from storage.blobs.keys import check_bytes, check_expiry, validate_key, validate_prefix
from storage.files import atomic_write, commit, discard, open_temporary

__all__ = ["LocalBlobStore"]

# Temporary files of LocalBlobStore end with a backslash: no valid key contains one, so they can never
# collide with a blob and list() skips them (it only yields names that are valid keys).
_TMP_SUFFIX = ".tmp\\"


class LocalBlobStore(BlobStore):
    """Blobs as files below ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a path, got {type(root).__name__}")
        if str(root) == "":
            raise ValueError("root must not be empty")
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"blob store root {self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _existing_file(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFoundError(key)
        return path

    def _make_parent(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ValueError(f"cannot store {key!r}: a part of it is already a blob") from exc
        if path.is_dir():
            raise ValueError(f"cannot store {key!r}: it is a folder of other blobs")

    @contextlib.contextmanager
    def _writer(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        # A concurrent delete() may remove the freshly made, still empty folder before the temporary
        # file is created in it; make it again a few times.
        for attempt in range(5):
            self._make_parent(key, path)
            try:
                tmp, handle = open_temporary(path, suffix=_TMP_SUFFIX)
            except FileNotFoundError:
                if attempt == 4:
                    raise
                continue
            break
        try:
            yield handle
            if handle.closed:
                raise ValueError("the file was closed inside the 'with' block; nothing was stored")
            commit(tmp, handle, path)
        except BaseException:
            discard(tmp, handle)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        checked = check_bytes(data)
        with self._writer(key) as handle:
            handle.write(checked)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as source, self._writer(key) as handle:
            shutil.copyfileobj(source, handle, COPY_CHUNK)

    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        validate_key(key)
        return self._writer(key)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as handle:
            return handle.read()

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFoundError(key) from None

    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        with self.open_read(key) as source, atomic_write(path) as handle:
            shutil.copyfileobj(source, handle, COPY_CHUNK)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFoundError(key) from None
        if not stat.S_ISREG(info.st_mode):
            raise BlobNotFoundError(key)
        return info.st_size

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        prefix = validate_prefix(prefix)
        folder, _, _name_start = prefix.rpartition("/")
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        return self._walk(base, f"{folder}/" if folder else "", prefix)

    def _walk(self, folder: Path, key_prefix: str, match: str) -> Iterator[BlobInfo]:
        """Yield the blobs below ``folder`` (whose keys start with ``key_prefix``) matching ``match``.

        Sorted without collecting everything: a folder ``d`` holds exactly the keys starting with
        ``d/``, so ordering the entries by ``name`` (files) and ``name + "/"`` (folders) orders their keys.
        """
        try:
            with os.scandir(folder) as scan:
                entries = []
                for entry in scan:
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((entry.name + "/", entry, True))
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((entry.name, entry, False))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda item: item[0])
        for sort_name, entry, is_dir in entries:
            key = key_prefix + sort_name
            # prune: the entry's keys all start with `key`; skip unless they can match the prefix
            if not (key.startswith(match) or match.startswith(key)):
                continue
            if is_dir:
                yield from self._walk(Path(entry.path), key, match)
                continue
            try:
                validate_key(key)
            except ValueError:
                continue  # a temporary file of an ongoing write, or a foreign file
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # deleted meanwhile
            yield BlobInfo(key, size)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a folder of other blobs, not a blob
        self._prune(path.parent)

    def _prune(self, folder: Path) -> None:
        """Remove now-empty folders from ``folder`` up to (not including) the root."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or gone already)
            folder = folder.parent

    def _delete_prefix(self, prefix: str) -> int:
        count = 0
        for info in list(self.list(prefix)):
            path = self._path(info.key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            count += 1
            self._prune(path.parent)
        return count

    def local_path(self, key: str) -> Path | None:
        return self._existing_file(key)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        validate_key(key)
        check_expiry(expires_s)
        return None
