"""Blob store URLs: :func:`open_blob_store` opens the store a URL names with the backend registered for its scheme
(:func:`register_blob_backend`): a plain path or ``file:`` for a local folder, ``s3:`` for a bucket."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from storage.blobs.interface import BlobStore
from storage.blobs.local import LocalBlobStore
from storage.blobs.s3 import S3BlobStore

__all__ = ["BlobBackend", "open_blob_store", "register_blob_backend"]


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
