"""Blob storage: named byte strings in a local folder or an S3-compatible bucket, behind one interface.

A *key* is a relative, ``/``-separated name such as ``jobs/0f3a.../teacher.onnx``. Every method
validates its key (:func:`validate_key`) and raises :class:`ValueError` saying what is wrong with it:
it must be a non-empty string of printable characters, at most :data:`MAX_KEY_BYTES` bytes in UTF-8,
with no leading ``/``, no empty part (``a//b``, trailing ``/``), no ``.`` or ``..`` part, no backslash
and no NUL. The rules are the same for every backend, so a key that works on a laptop works on S3.

Backends:

- :class:`LocalBlobStore` -- files under a root folder (the embedded default). A blob's key is its
  path below the root. Writes go to a temporary file in the destination folder, are ``fsync``\\ ed and
  renamed over the final name (``os.replace``), so readers see either the old blob, the new one or
  none -- never a partial file. Temporary files carry a backslash in their name, which no valid key
  can contain, so they never show up in :meth:`BlobStore.list`. :meth:`BlobStore.local_path` returns
  the real file, so a FAISS index can be memory-mapped in place. Deleting the last blob of a folder
  removes the empty folders up to the root, so "folders" exist only while they hold blobs, as on S3.
  One difference to S3 remains: a key cannot be both a blob and a folder (``a`` and ``a/b``); storing
  the second raises :class:`ValueError`.
- :class:`S3BlobStore` -- objects in an S3 bucket (AWS, MinIO, Ceph, ...) through boto3, optionally
  below a key prefix. Large uploads are multipart (boto3's transfer manager), :meth:`open_write`
  spools to a temporary file (in memory up to 8 MiB, then on disk) and uploads only when the block
  succeeds, so memory stays bounded whatever the size and nothing is visible after an error.
  :meth:`BlobStore.open_read` returns the object's HTTP body wrapped as a buffered, read-only,
  *non-seekable* binary file; use :meth:`BlobStore.download` when seeking is needed (zip archives).

Missing blobs raise :class:`BlobNotFoundError`, a subclass of both :class:`FileNotFoundError` (it is a
missing file, and callers that handle files already catch it) and :class:`KeyError` (it is a missing
key, as in a mapping). :meth:`BlobStore.delete` of a missing key is not an error. Other backend
failures propagate unchanged (``OSError`` for local files, ``botocore.exceptions.BotoCoreError`` /
``ClientError`` for S3).

:func:`open_blob_store` builds a store from a URL: ``file:///abs/path`` or a plain path for a local
store, ``s3://bucket/optional/prefix`` for S3 (endpoint from ``?endpoint_url=``, the caller's
``s3_endpoint_url`` or boto3's ``AWS_ENDPOINT_URL``; credentials the usual boto3 way); each scheme's backend is
registered with :func:`register_blob_backend`.
"""

from __future__ import annotations

import abc
import contextlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from storage.files import atomic_write, commit, discard, open_temporary

__all__ = [
    "MAX_KEY_BYTES",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "open_blob_store",
    "register_blob_backend",
    "validate_key",
    "validate_prefix",
]

logger = logging.getLogger(__name__)

#: Longest key accepted, in UTF-8 bytes (S3's own limit; 1024 ASCII characters).
MAX_KEY_BYTES = 1024
#: Longest presigned URL lifetime: seven days, the most SigV4 allows.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_COPY_CHUNK = 1024 * 1024
_SPOOL_BYTES = 8 * 1024 * 1024  # open_write on S3: in memory up to this size, then a disk file
_MULTIPART_THRESHOLD = 8 * 1024 * 1024
_DELETE_BATCH = 1000  # S3 DeleteObjects limit
# Temporary files of LocalBlobStore end with a backslash: no valid key contains one, so they can never
# collide with a blob and list() skips them (it only yields names that are valid keys).
_TMP_SUFFIX = ".tmp\\"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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


# --------------------------------------------------------------------------------------------------
# key validation


def _check_parts(text: str, what: str, *, allow_trailing_slash: bool) -> None:
    if "\x00" in text:
        raise ValueError(f"{what} {text!r} contains a NUL character")
    if "\\" in text:
        raise ValueError(f"{what} {text!r} contains a backslash; use '/' to separate parts")
    if not text.isprintable():
        raise ValueError(f"{what} {text!r} contains non-printable characters")
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"{what} is longer than {MAX_KEY_BYTES} bytes in UTF-8")
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} starts with '/'; keys are relative")
    parts = text.split("/")
    if allow_trailing_slash and len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        if part == "":
            raise ValueError(f"{what} {text!r} has an empty part ('//' or a trailing '/')")
        if part in (".", ".."):
            raise ValueError(f"{what} {text!r} has a {part!r} part")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid blob key; raise :class:`ValueError` (``TypeError``) saying why not."""
    if not isinstance(key, str):
        raise TypeError(f"a blob key must be a str, got {type(key).__name__}")
    if key == "":
        raise ValueError("a blob key must not be empty")
    _check_parts(key, "blob key", allow_trailing_slash=False)
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid listing prefix (``""``, a key, or a key followed by ``/``).

    Prefixes match keys as strings, as on S3: ``"runs/a"`` matches ``runs/a``, ``runs/ab`` and
    ``runs/a/x``; ``"runs/a/"`` only the keys inside the folder ``runs/a``.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"a blob prefix must be a str, got {type(prefix).__name__}")
    if prefix:
        _check_parts(prefix, "blob prefix", allow_trailing_slash=True)
    return prefix


def _check_expiry(expires_s: object) -> int:
    if isinstance(expires_s, bool) or not isinstance(expires_s, int):
        raise TypeError(f"expires_s must be an int number of seconds, got {type(expires_s).__name__}")
    if not 1 <= expires_s <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires_s must be between 1 and {MAX_PRESIGN_SECONDS} seconds, got {expires_s}")
    return expires_s


def _check_bytes(data: object) -> bytes | bytearray | memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------------
# the interface


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


# --------------------------------------------------------------------------------------------------
# local folder


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
        checked = _check_bytes(data)
        with self._writer(key) as handle:
            handle.write(checked)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as source, self._writer(key) as handle:
            shutil.copyfileobj(source, handle, _COPY_CHUNK)

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
            shutil.copyfileobj(source, handle, _COPY_CHUNK)

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
        _check_expiry(expires_s)
        return None


# --------------------------------------------------------------------------------------------------
# S3


class _S3BodyReader(io.RawIOBase):
    """A boto3 ``StreamingBody`` as a raw, read-only, non-seekable binary stream."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


def _is_not_found(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return False  # a configuration error, not a missing blob
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


class S3BlobStore(BlobStore):
    """Blobs as objects of an S3 bucket, below an optional key ``prefix``.

    ``client`` is a ready boto3 S3 client (tests, custom sessions); otherwise one is made with
    ``endpoint_url`` (MinIO, Ceph, ...; path-style addressing is used with a custom endpoint) and
    ``region``, credentials coming from the usual boto3 chain (environment, config files, roles).
    The bucket must exist.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        prefix = prefix.strip("/")
        if prefix:
            _check_parts(prefix, "S3 key prefix", allow_trailing_slash=False)
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            import boto3
            from botocore.config import Config

            s3_options = {"addressing_style": "path"} if endpoint_url else {}
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region or None,
                config=Config(signature_version="s3v4", s3=s3_options, retries={"mode": "standard"}),
            )
        self.client = client
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD, max_concurrency=4)

    #: Keys per ListObjectsV2 page (S3's maximum; tests lower it to exercise pagination).
    _page_size = 1000

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        checked = _check_bytes(data)
        full = self._full(key)
        if len(checked) <= _MULTIPART_THRESHOLD:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=bytes(checked))
        else:
            self.client.upload_fileobj(io.BytesIO(checked), self.bucket, full, Config=self._transfer)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        full = self._full(key)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        self.client.upload_file(str(path), self.bucket, full, Config=self._transfer)

    @contextlib.contextmanager
    def _writer(self, full: str) -> Iterator[BinaryIO]:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, prefix="condense-blob-") as spool:
            yield spool  # type: ignore[misc]
            if spool.closed:
                raise ValueError("the file was closed inside the 'with' block; nothing was stored")
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, full, Config=self._transfer)

    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._writer(self._full(key))

    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except Exception as exc:
            if _is_not_found(exc):
                raise BlobNotFoundError(key) from None
            raise

    def get_bytes(self, key: str) -> bytes:
        body = self._get(key)
        try:
            return body.read()
        finally:
            body.close()

    def open_read(self, key: str) -> BinaryIO:
        return io.BufferedReader(_S3BodyReader(self._get(key)), buffer_size=_COPY_CHUNK)

    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        with self.open_read(key) as source, atomic_write(path) as handle:
            shutil.copyfileobj(source, handle, _COPY_CHUNK)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise BlobNotFoundError(key)
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        prefix = validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[BlobInfo]:
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=root + prefix, PaginationConfig={"PageSize": self._page_size}
        )
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"][len(root) :]
                try:
                    validate_key(key)
                except ValueError:
                    logger.debug("skipping S3 object %r: not a valid blob key", item["Key"])
                    continue
                yield BlobInfo(key, int(item["Size"]))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if not _is_not_found(exc):
                raise

    def _delete_prefix(self, prefix: str) -> int:
        count = 0
        batch: list[str] = []

        def flush() -> int:
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self._full(k)} for k in batch], "Quiet": True}
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"S3 refused to delete {len(errors)} objects, e.g. {first.get('Key')!r}: {first}")
            done = len(batch)
            batch.clear()
            return done

        for info in self._list(prefix):
            batch.append(info.key)
            if len(batch) == _DELETE_BATCH:
                count += flush()
        if batch:
            count += flush()
        return count

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        expires_s = _check_expiry(expires_s)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_s
        )


# --------------------------------------------------------------------------------------------------
# URLs


BlobBackend = Callable[[str, SplitResult, Mapping[str, Any]], "BlobStore"]
"""Opens the store a URL names: ``(url, its parts, the caller's options)``."""

_BACKENDS: dict[str, BlobBackend] = {}


def register_blob_backend(scheme: str, backend: BlobBackend) -> None:
    """Make :func:`open_blob_store` open URLs of ``scheme`` (lower case; ``""`` is a plain path) with ``backend``."""
    if not isinstance(scheme, str) or scheme != scheme.lower():
        raise ValueError(f"a URL scheme must be a lower-case str, got {scheme!r}")
    if not callable(backend):
        raise TypeError("backend must be callable")
    _BACKENDS[scheme] = backend


def _open_path(url: str, parts: SplitResult, options: Mapping[str, Any]) -> BlobStore:
    return LocalBlobStore(url)


def _open_file_url(url: str, parts: SplitResult, options: Mapping[str, Any]) -> BlobStore:
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file URL {url!r} names a host; use file:///absolute/path")
    if parts.query or parts.fragment:
        raise ValueError(f"file URL {url!r} must not have a query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError(f"file URL {url!r} must hold an absolute path: file:///absolute/path")
    return LocalBlobStore(path)


def _open_s3_url(url: str, parts: SplitResult, options: Mapping[str, Any]) -> BlobStore:
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"S3 URL {url!r} has no bucket: use s3://bucket/optional/prefix")
    if parts.fragment:
        raise ValueError(f"S3 URL {url!r} must not have a fragment")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - {"endpoint_url", "region"})
    if unknown:
        raise ValueError(f"S3 URL {url!r}: unknown query parameters {unknown}; known: endpoint_url, region")
    for name, values in query.items():
        if len(values) != 1 or not values[0]:
            raise ValueError(f"S3 URL {url!r}: query parameter {name!r} needs exactly one non-empty value")
    endpoint = query.get("endpoint_url", [None])[0] or options.get("s3_endpoint_url") or None
    region = query.get("region", [None])[0]
    return S3BlobStore(bucket, prefix=unquote(parts.path).strip("/"), endpoint_url=endpoint, region=region)


register_blob_backend("", _open_path)
register_blob_backend("file", _open_file_url)
register_blob_backend("s3", _open_s3_url)


def open_blob_store(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    """Open the blob store that ``url`` names, with the backend registered for its scheme.

    - ``file:///abs/path`` or a plain path (``/data/blobs``, ``./blobs``, ``~/blobs``): a
      :class:`LocalBlobStore` there (a relative path whose first part contains ``:`` must start with ``./``).
    - ``s3://bucket`` or ``s3://bucket/key/prefix``: an :class:`S3BlobStore`. Query parameters
      ``endpoint_url`` and ``region`` are accepted; without ``endpoint_url``, ``s3_endpoint_url`` (the service
      passes ``CONDENSE_S3_ENDPOINT_URL`` from its settings), else boto3's own configuration
      (``AWS_ENDPOINT_URL``), else AWS itself.

    More schemes: :func:`register_blob_backend`.
    """
    if not isinstance(url, str):
        raise TypeError(f"a blob store URL must be a str, got {type(url).__name__}")
    if not url.strip():
        raise ValueError("a blob store URL must not be empty")
    parts = urlsplit(url)
    backend = _BACKENDS.get(parts.scheme.lower())
    if backend is None:
        known = ", ".join(f"{scheme}:" for scheme in sorted(_BACKENDS) if scheme)
        raise ValueError(
            f"unknown blob store URL scheme {parts.scheme!r} in {url!r}: use one of {known} or a plain path "
            "(start a relative path containing ':' with './')"
        )
    return backend(url, parts, {"s3_endpoint_url": s3_endpoint_url})
