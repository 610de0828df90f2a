"""Blob storage: named byte strings in a local folder or an S3-compatible bucket, behind one interface.

A *key* is a relative, ``/``-separated name such as ``jobs/0f3a.../teacher.onnx``. Every method
validates its key (:func:`validate_key`) and raises :class:`ValueError` saying what is wrong with it:
it must be a non-empty string of printable characters, at most :data:`MAX_KEY_BYTES` bytes in UTF-8,
with no leading ``/``, no empty part (``a//b``, trailing ``/``), no ``.`` or ``..`` part, no backslash
and no NUL. The rules are the same for every backend, so a key that works on a laptop works on S3.

Backends:

- :class:`LocalBlobStore` -- files under a root folder (the embedded default; :mod:`storage.blobs.local`).
- :class:`S3BlobStore` -- objects in an S3 bucket (AWS, MinIO, Ceph, ...) through boto3, optionally below a
  key prefix (:mod:`storage.blobs.s3`).

Missing blobs raise :class:`BlobNotFoundError`, a subclass of both :class:`FileNotFoundError` (it is a
missing file, and callers that handle files already catch it) and :class:`KeyError` (it is a missing
key, as in a mapping). :meth:`BlobStore.delete` of a missing key is not an error. Other backend
failures propagate unchanged (``OSError`` for local files, ``botocore.exceptions.BotoCoreError`` /
``ClientError`` for S3).

:func:`open_blob_store` builds a store from a URL: ``file:///abs/path`` or a plain path for a local
store, ``s3://bucket/optional/prefix`` for S3 (endpoint from ``?endpoint_url=``, the caller's
``s3_endpoint_url`` or boto3's ``AWS_ENDPOINT_URL``; credentials the usual boto3 way); each scheme's backend is
registered with :func:`register_blob_backend` (:mod:`storage.blobs.urls`).
"""

from storage.blobs.interface import BlobInfo, BlobNotFoundError, BlobStore
from storage.blobs.keys import MAX_KEY_BYTES, MAX_PRESIGN_SECONDS, validate_key, validate_prefix
from storage.blobs.local import LocalBlobStore
from storage.blobs.s3 import S3BlobStore
from storage.blobs.urls import BlobBackend, open_blob_store, register_blob_backend

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PRESIGN_SECONDS",
    "BlobBackend",
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
