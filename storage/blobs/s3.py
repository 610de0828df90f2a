"""The S3 blob store.

:class:`S3BlobStore` -- objects in an S3 bucket (AWS, MinIO, Ceph, ...) through boto3, optionally
below a key prefix. Large uploads are multipart (boto3's transfer manager), :meth:`open_write`
spools to a temporary file (in memory up to 8 MiB, then on disk) and uploads only when the block
succeeds, so memory stays bounded whatever the size and nothing is visible after an error.
:meth:`BlobStore.open_read` returns the object's HTTP body wrapped as a buffered, read-only,
*non-seekable* binary file; use :meth:`BlobStore.download` when seeking is needed (zip archives).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from storage.blobs.interface import COPY_CHUNK, BlobInfo, BlobNotFoundError, BlobStore
from storage.blobs.keys import check_bytes, check_expiry, check_parts, validate_key, validate_prefix
from storage.files import atomic_write

__all__ = ["S3BlobStore"]

logger = logging.getLogger(__name__)

_SPOOL_BYTES = 8 * 1024 * 1024  # open_write on S3: in memory up to this size, then a disk file
_MULTIPART_THRESHOLD = 8 * 1024 * 1024
_DELETE_BATCH = 1000  # S3 DeleteObjects limit
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
            check_parts(prefix, "S3 key prefix", allow_trailing_slash=False)
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
        checked = check_bytes(data)
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
        return io.BufferedReader(_S3BodyReader(self._get(key)), buffer_size=COPY_CHUNK)

    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        with self.open_read(key) as source, atomic_write(path) as handle:
            shutil.copyfileobj(source, handle, COPY_CHUNK)

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
        expires_s = check_expiry(expires_s)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_s
        )
