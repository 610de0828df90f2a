"""The files of the pool's vector index: the FAISS index and its JSON sidecar, written atomically, read back
memory-mapped where FAISS can.

``VectorIndex.save(path)`` (:func:`write_index_files`) writes the FAISS index to ``path`` and the metadata (kind,
dimensions, parameters, embedder fingerprint, training size, file size) to the JSON sidecar ``path + ".json"``, each
through a temporary file in the same folder and ``os.replace`` (atomic on POSIX; a reader that has memory-mapped the
old file keeps its own inode). The index is replaced before the sidecar, and ``load`` checks the sidecar against the
file (size, kind, dimensions, count), so a reader racing a writer gets a ValueError rather than mismatched metadata.
``VectorIndex.load(path, mmap=True)`` (:func:`read_index_files`) maps what FAISS can map, read-only (checked on FAISS
1.15.1):

| kind | read flags | what stays on disk |
|---|---|---|
| ``ivf`` | ``IO_FLAG_MMAP | IO_FLAG_READ_ONLY`` | inverted lists (vectors, ids): ``OnDiskInvertedLists`` |
| ``flat``, ``hnsw`` | ``IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY`` | the vectors (``IndexFlatCodes`` storage) |

HNSW links, ``IndexIDMap`` ids and the projection are always read into memory. ``IO_FLAG_MMAP`` alone reads flat
and HNSW indexes fully into memory, and combining it with ``IO_FLAG_MMAP_IFC`` fails for IVF ("mmap only supported
for File objects"), hence one flag per kind. A memory-mapped index is read-only: ``add`` raises a RuntimeError
instead of letting FAISS abort the whole process (it does, on a memory-mapped vector). ``mmap=False`` reads
everything into memory and allows adds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss

from compression.files import atomic_path, atomic_write_text
from pu_mining.index_kinds import INDEX_KINDS

__all__ = [
    "INDEX_FILE_FORMAT",
    "INDEX_FILE_VERSION",
    "read_index_files",
    "sidecar_path",
    "unwrap_index",
    "write_index_files",
]

INDEX_FILE_FORMAT = "condense-vector-index"
INDEX_FILE_VERSION = 1
_SIDECAR_SUFFIX = ".json"


def write_index_files(index: faiss.Index, path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Write ``index`` to ``path`` and ``metadata`` (with the index file's size) to ``path + ".json"``, each through
    a temporary file and ``os.replace``, the index first."""
    target = Path(path)
    with atomic_path(target) as temporary:
        faiss.write_index(index, str(temporary))
        size = temporary.stat().st_size
    meta = {**metadata, "index_bytes": size}
    atomic_write_text(sidecar_path(target), json.dumps(meta, indent=1, sort_keys=True))


def read_index_files(path: str | os.PathLike[str], mmap: bool) -> tuple[faiss.Index, dict[str, Any]]:
    """The FAISS index at ``path`` and its checked metadata; ``mmap=True`` maps it read-only where FAISS can (module
    docstring). ValueError for a missing or inconsistent file pair."""
    target = Path(path)
    sidecar = sidecar_path(target)
    if not target.is_file() or not sidecar.is_file():
        raise ValueError(f"{target} and its metadata {sidecar.name} must both exist")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"unreadable index metadata {sidecar}: {error}") from error
    if (
        not isinstance(meta, dict)
        or meta.get("format") != INDEX_FILE_FORMAT
        or meta.get("version") != INDEX_FILE_VERSION
    ):
        raise ValueError(f"{sidecar} is not a {INDEX_FILE_FORMAT} v{INDEX_FILE_VERSION} metadata file")
    kind = meta.get("kind")
    if kind not in INDEX_KINDS:
        raise ValueError(f"{sidecar}: unknown kind {kind!r}")
    if meta.get("index_bytes") != target.stat().st_size:
        raise ValueError(f"{target} does not match its metadata (size differs): was it replaced meanwhile?")
    flags = 0
    if mmap:
        flags = (faiss.IO_FLAG_MMAP if kind == "ivf" else faiss.IO_FLAG_MMAP_IFC) | faiss.IO_FLAG_READ_ONLY
    try:
        index = faiss.read_index(str(target), flags)
    except RuntimeError as error:
        raise ValueError(f"cannot read FAISS index {target}: {str(error).splitlines()[0]}") from error
    return index, meta


def unwrap_index(index: faiss.Index, kind: str, dim: int, index_dim: int) -> faiss.Index:
    """The core FAISS index under the optional ``IndexPreTransform`` and ``IndexIDMap``, checked against
    ``kind`` and the dimensions."""
    top = faiss.downcast_index(index)
    if int(top.d) != dim:
        raise ValueError(f"the FAISS index has dimension {top.d}, its metadata says {dim}")
    inner = top
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if isinstance(inner, faiss.IndexIDMap):
        inner = faiss.downcast_index(inner.index)
    expected = {"flat": faiss.IndexFlatIP, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}[kind]
    if not isinstance(inner, expected) or int(inner.d) != index_dim:
        raise ValueError(f"the FAISS index ({type(inner).__name__}, d={inner.d}) is not the {kind!r} its metadata says")
    if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("the FAISS index does not use the inner-product metric")
    return inner


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + _SIDECAR_SUFFIX)
