"""Content hashes of files, read in bounded chunks (uploads, artefacts, weights files and pools all use them)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of the file at ``path``, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
