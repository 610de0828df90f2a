"""Where Condense keeps bytes and rows: blob storage (:mod:`storage.blobs`) and job metadata (:mod:`storage.metadata`).

Both come as one interface with an embedded default and a scale-out backend, chosen by URL:

- :func:`open_blob_store`: ``file:///data/blobs`` (or a plain path) or ``s3://bucket/prefix``;
- :func:`open_metadata_store`: ``sqlite:///data/condense.db`` or ``postgresql://user@host:5432/condense``.

This package knows nothing of Flask, PyTorch or the other Condense packages.
"""

from storage.access import JobLimitError, UploadClaimedError, WebSession
from storage.blobs import (
    MAX_KEY_BYTES,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    open_blob_store,
    validate_key,
    validate_prefix,
)
from storage.metadata import (
    FINAL_STATUSES,
    JOB_STATUSES,
    ROLES,
    SCHEMA_VERSION,
    TOKEN_PREFIX,
    ApiToken,
    Artifact,
    Job,
    JobEvent,
    JobNotFoundError,
    MetadataSchemaError,
    MetadataStore,
    User,
    hash_token,
    open_metadata_store,
)

__all__ = [
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "MAX_KEY_BYTES",
    "ROLES",
    "SCHEMA_VERSION",
    "TOKEN_PREFIX",
    "ApiToken",
    "Artifact",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "Job",
    "JobEvent",
    "JobLimitError",
    "JobNotFoundError",
    "LocalBlobStore",
    "MetadataSchemaError",
    "MetadataStore",
    "S3BlobStore",
    "UploadClaimedError",
    "User",
    "WebSession",
    "hash_token",
    "open_blob_store",
    "open_metadata_store",
    "validate_key",
    "validate_prefix",
]
