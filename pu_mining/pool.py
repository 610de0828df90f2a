"""Named unlabelled pools in blob storage: ingest, deduplicate, embed, index, read back.

A pool is what PU mining searches (Xu et al., "Positive-Unlabeled Compression on the Cloud", NeurIPS 2019,
arXiv:1909.09757: the cloud keeps a large unlabelled set and finds in it the images that belong to a user's task).
Each item keeps an id, its source and member name, a content hash, a resized copy of its pixels and an embedding
from the pool embedder (:mod:`pu_mining.embedder`); the embeddings are indexed with FAISS
(:mod:`pu_mining.vector_index`).

Layout under ``pools/NAME/`` in a :class:`~storage.BlobStore` (every blob is written once and never changed)::

    manifest.json                        the pool's current state; written last, atomically
    v000003/shard-00000.images.npy       uint8 [n, S, S] (1 channel) or [n, S, S, 3]
    v000003/shard-00000.embeddings.npy   float32 [n, dim], unit rows
    v000003/shard-00000.meta.npz         ids, content hashes, member names, source numbers (no pickles)
    v000003/index.faiss (+ .json)        the FAISS index over every item, for this version

- **Ids** are consecutive from 0 in ingest order (id = position in the pool), so they double as row numbers.
- **Exact duplicates** are stored once: the content hash is the SHA-256 of the decoded pixels and their shape (the
  same picture saved as PNG and as BMP is one item; a re-encoded JPEG is not). A duplicate of an item already in
  the pool, or of one earlier in the same ingest, is counted and skipped.
- **Pixels** are stored at the pool's ``image_size`` and ``channels`` (chosen when the pool is created): centre-
  cropped to square when the aspect ratio is off by more than 1.25, resized with antialiasing, RGB -> luma or
  grey -> RGB as needed (:func:`pu_mining.positives.fit_image`'s rules; images it refuses, such as ones that would
  need more than 8x upscaling, are skipped with the reason).
- **Crash safety**: an ingest writes its shards and index under a new version folder and then replaces
  ``manifest.json``; until that last write the pool is unchanged for every reader, and an interrupted ingest
  leaves only unreferenced blobs, which the next ingest deletes. The manifest's version is checked again right
  before it is replaced: two ingests into one pool at the same time make the later one fail (no lost items).
- **Incremental**: a new ingest adds shards and adds the new embeddings to a copy of the existing FAISS index
  (:meth:`~pu_mining.vector_index.VectorIndex.add`, no retraining). The index is rebuilt from the stored
  embeddings only when the pool's size calls for another index kind
  (:func:`~pu_mining.vector_index.choose_index_kind`) or the index advises a retrain.
- **Readers** (:class:`Pool`) memory-map the shard arrays and the index on a local store; on S3 they download a
  version's files once into a local cache folder (blobs of a version never change, so the cache needs no
  invalidation).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pu_mining.embedder import Embedder
from pu_mining.image_files import ReadLimits
from pu_mining.pool_shards import (
    _open_source,
    _ShardWriter,
)
from pu_mining.pool_types import (
    _ROOT,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SHARD_SIZE,
    IngestReport,
    PoolConfig,
    PoolManifest,
    PoolNotFoundError,
    ProgressCallback,
    RecordSource,
    ShardInfo,
    check_pool_name,
    content_hash,
)
from pu_mining.positives import fit_image
from pu_mining.vector_index import VectorIndex, build_index, choose_index_kind
from storage import BlobNotFoundError, BlobStore

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_SHARD_SIZE",
    "IngestReport",
    "Pool",
    "PoolConfig",
    "PoolManifest",
    "PoolNotFoundError",
    "PoolStore",
    "RecordSource",
    "ShardInfo",
    "content_hash",
]


class Pool:
    """Read access to one version of a pool (see the module docstring); made by :meth:`PoolStore.open`."""

    def __init__(self, store: PoolStore, manifest: PoolManifest) -> None:
        self._store = store
        self.manifest = manifest
        self._shard_images: list[np.ndarray] | None = None
        self._meta: list[dict[str, np.ndarray]] | None = None
        self._index: VectorIndex | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        return f"Pool({self.name!r}, version={self.version}, items={len(self)}, index={self.manifest.index_kind})"

    def _images(self) -> list[np.ndarray]:
        if self._shard_images is None:
            self._shard_images = [
                np.load(self._store.local_file(shard.prefix + ".images.npy"), mmap_mode="r", allow_pickle=False)
                for shard in self.manifest.shards
            ]
        return self._shard_images

    def _metadata(self) -> list[dict[str, np.ndarray]]:
        if self._meta is None:
            self._meta = []
            for shard in self.manifest.shards:
                with np.load(self._store.local_file(shard.prefix + ".meta.npz"), allow_pickle=False) as data:
                    self._meta.append({key: data[key] for key in data.files})
        return self._meta

    def _locate(self, ids: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"item ids must be in [0, {len(self)}); got {ids.min()}..{ids.max()}")
        starts = np.array([shard.first_id for shard in self.manifest.shards], dtype=np.int64)
        shard_of = np.searchsorted(starts, ids, side="right") - 1
        return ids, shard_of, ids - starts[shard_of] if ids.size else ids

    def images(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Stored copies of ``ids``: ``uint8`` ``[n, S, S]`` (grey pools) or ``[n, S, S, 3]``, in the order given."""
        ids, shard_of, offset = self._locate(ids)
        size, channels = self.manifest.config.image_size, self.manifest.config.channels
        shape = (len(ids), size, size) if channels == 1 else (len(ids), size, size, 3)
        output = np.empty(shape, dtype=np.uint8)
        shards = self._images()
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            output[where] = shards[shard][offset[where]]
        return output

    def image_tensor(self, ids: np.ndarray | Sequence[int]) -> torch.Tensor:
        """Stored copies of ``ids`` as float32 ``[n, C, S, S]`` in [0, 1] (what teachers and students take)."""
        pixels = torch.from_numpy(self.images(ids)).float().div_(255)
        return pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2).contiguous()

    def _column(self, key: str, ids: np.ndarray | Sequence[int] | None) -> np.ndarray:
        metadata = self._metadata()
        whole = np.concatenate([shard[key] for shard in metadata]) if metadata else np.empty(0)
        if ids is None:
            return whole
        found, _, _ = self._locate(ids)
        return whole[found]

    def names(self, ids: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Each item's ``source:member`` name (all items when ``ids`` is None)."""
        return self._column("names", ids)

    def hashes(self, ids: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Each item's content hash (:func:`content_hash`)."""
        return self._column("hashes", ids)

    def embeddings(self, ids: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Stored embeddings (``float32`` ``[n, dim]``, unit rows) of ``ids`` or of every item."""
        shards = [
            np.load(self._store.local_file(shard.prefix + ".embeddings.npy"), mmap_mode="r", allow_pickle=False)
            for shard in self.manifest.shards
        ]
        if ids is None:
            if not shards:
                return np.empty((0, self.manifest.embedding_dim), dtype=np.float32)
            return np.concatenate(shards).astype(np.float32, copy=False)
        ids, shard_of, offset = self._locate(ids)
        output = np.empty((len(ids), self.manifest.embedding_dim), dtype=np.float32)
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            output[where] = shards[shard][offset[where]]
        return output

    def index(self) -> VectorIndex:
        """The pool's FAISS index, memory-mapped read-only (loaded once per :class:`Pool`)."""
        if self._index is None:
            if self.manifest.index_key is None:
                raise ValueError(f"pool {self.name!r} is empty: it has no index")
            path = self._store.local_file(self.manifest.index_key)
            self._store.local_file(self.manifest.index_key + ".json")
            self._index = VectorIndex.load(path, mmap=True)
        return self._index

    def load_embedder(self, num_threads: int | None = None) -> Embedder:
        """The pool's embedder, checked to produce vectors comparable with the stored ones."""
        embedder = self.manifest.config.load_embedder(num_threads)
        if embedder.fingerprint != self.manifest.embedder_fingerprint:
            raise ValueError(
                f"pool {self.name!r} was embedded with {self.manifest.embedder_fingerprint!r}; this installation's "
                f"embedder is {embedder.fingerprint!r}: re-ingest the pool"
            )
        return embedder


class PoolStore:
    """The pools kept in one blob store; ``cache_dir`` holds local copies of remote (S3) pool files."""

    def __init__(self, blobs: BlobStore, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(blobs, BlobStore):
            raise TypeError(f"blobs must be a storage.BlobStore, got {type(blobs).__name__}")
        self.blobs = blobs
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "condense-pools"

    # ------------------------------------------------------------------ reading

    def _manifest_key(self, name: str) -> str:
        return f"{_ROOT}/{check_pool_name(name)}/manifest.json"

    def manifest(self, name: str) -> PoolManifest:
        """The current manifest of pool ``name``; :class:`PoolNotFoundError` if there is none."""
        try:
            data = json.loads(self.blobs.get_bytes(self._manifest_key(name)))
        except BlobNotFoundError:
            raise PoolNotFoundError(name) from None
        return PoolManifest.from_dict(data)

    def list(self) -> list[PoolManifest]:
        """Every pool's manifest, by name."""
        manifests = []
        for info in self.blobs.list(f"{_ROOT}/"):
            parts = info.key.split("/")
            if len(parts) == 3 and parts[2] == "manifest.json":
                with contextlib.suppress(PoolNotFoundError, ValueError):
                    manifests.append(self.manifest(parts[1]))
        return sorted(manifests, key=lambda manifest: manifest.name)

    def open(self, name: str) -> Pool:
        """Read access to pool ``name`` at its current version."""
        return Pool(self, self.manifest(name))

    def local_file(self, key: str) -> Path:
        """A local path holding blob ``key``: the blob itself on a local store, else a cached download."""
        path = self.blobs.local_path(key)
        if path is not None:
            return path
        cached = self.cache_dir.joinpath(*key.split("/"))
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            self.blobs.download(key, cached)
        return cached

    def delete(self, name: str) -> int:
        """Remove pool ``name`` and all its files; returns the number of blobs deleted."""
        self.manifest(name)
        deleted = self.blobs.delete_prefix(f"{_ROOT}/{name}/")
        shutil.rmtree(self.cache_dir / _ROOT / name, ignore_errors=True)
        return deleted

    # ------------------------------------------------------------------ ingest

    def ingest(
        self,
        name: str,
        sources: Sequence[str | os.PathLike[str] | RecordSource],
        *,
        config: PoolConfig | None = None,
        embedder: Embedder | None = None,
        limits: ReadLimits | None = None,
        on_progress: ProgressCallback | None = None,
        num_threads: int | None = None,
    ) -> IngestReport:
        """Add the images of ``sources`` to pool ``name``, creating it with ``config`` if it does not exist.

        ``sources``: paths (folders, zip/tar archives, ``.npy``/``.npz``, IDX, image files; read with
        :func:`pu_mining.image_files.iter_images`, hostile archives refused) or :class:`RecordSource` objects.
        Unreadable members and images that cannot be stored safely are skipped and listed in the report. ``config``
        for an existing pool must equal its own (or be None). ``embedder`` overrides loading the configured one
        (it must have the same fingerprint). Progress: ``on_progress({"stage": "ingest", "done", "added",
        "duplicates", "skipped", "source", "images_per_second"})`` about once a second.
        """
        check_pool_name(name)
        if not sources:
            raise ValueError("give at least one source to ingest")
        started = time.monotonic()
        try:
            previous: PoolManifest | None = self.manifest(name)
        except PoolNotFoundError:
            previous = None
        if previous is not None and config is not None and config != previous.config:
            raise ValueError(
                f"pool {name!r} exists with {asdict(previous.config)}; its configuration cannot change "
                f"(got {asdict(config)})"
            )
        config = previous.config if previous is not None else (config or PoolConfig())
        embedder = embedder if embedder is not None else config.load_embedder(num_threads)
        if previous is not None and embedder.fingerprint != previous.embedder_fingerprint:
            raise ValueError(
                f"embedder {embedder.fingerprint!r} differs from pool {name!r}'s {previous.embedder_fingerprint!r}"
            )
        self._remove_unreferenced(name, previous)
        version = (previous.version if previous is not None else 0) + 1
        report = IngestReport(pool=name, version=version)
        writer = _ShardWriter(self, name, version, config, embedder, first_id=previous.count if previous else 0)
        known = set() if previous is None else set(self.open(name).hashes().tolist())
        last_report = 0.0

        def progress(source: str, force: bool = False) -> None:
            nonlocal last_report
            now = time.monotonic()
            if on_progress is not None and (force or now - last_report >= 1.0):
                last_report = now
                elapsed = max(now - started, 1e-9)
                on_progress(
                    {
                        "stage": "ingest",
                        "source": source,
                        "done": report.added + report.duplicates + len(report.skipped),
                        "added": report.added,
                        "duplicates": report.duplicates,
                        "skipped": len(report.skipped),
                        "images_per_second": (report.added + report.duplicates) / elapsed,
                    }
                )

        for source in sources:
            source_name, records, reader = _open_source(source, limits)
            added_before = report.added
            for record in records:
                item_name = f"{source_name}:{record.name}"
                digest = content_hash(record.image)
                if digest in known:
                    report.duplicates += 1
                    continue
                try:
                    pixels = fit_image(record.image, (config.channels, config.image_size, config.image_size), item_name)
                except ValueError as error:
                    report.skipped.append(str(error))
                    continue
                known.add(digest)
                writer.add(pixels, digest, item_name, source_name)
                report.added += 1
                progress(source_name)
            if reader is not None:
                report.skipped.extend(f"{source_name}:{skipped}" for skipped in reader.skipped)
            report.sources[source_name] = report.sources.get(source_name, 0) + report.added - added_before
            progress(source_name, force=True)
        shards = writer.close()
        if previous is None and report.added == 0:
            raise ValueError(
                f"no images to ingest into the new pool {name!r}: {report.skipped[:5] or 'all duplicates'}"
            )
        manifest = self._commit(name, previous, version, config, embedder, shards, report)
        report.index_kind = manifest.index_kind
        report.seconds = time.monotonic() - started
        return report

    def _remove_unreferenced(self, name: str, manifest: PoolManifest | None) -> None:
        """Delete what an interrupted ingest left behind: blobs of the pool no manifest refers to."""
        referenced = {self._manifest_key(name)}
        if manifest is not None:
            for shard in manifest.shards:
                referenced.update(shard.prefix + suffix for suffix in (".images.npy", ".embeddings.npy", ".meta.npz"))
            if manifest.index_key is not None:
                referenced.update({manifest.index_key, manifest.index_key + ".json"})
        for info in list(self.blobs.list(f"{_ROOT}/{name}/")):
            if info.key not in referenced:
                self.blobs.delete(info.key)

    def _commit(
        self,
        name: str,
        previous: PoolManifest | None,
        version: int,
        config: PoolConfig,
        embedder: Embedder,
        new_shards: builtins.list[ShardInfo],
        report: IngestReport,
    ) -> PoolManifest:
        shards = (previous.shards if previous is not None else ()) + tuple(new_shards)
        count = sum(shard.count for shard in shards)
        index_key, index_kind, index_bytes = (
            (previous.index_key, previous.index_kind, previous.index_bytes) if previous else (None, None, 0)
        )
        if new_shards:
            index_key, index_kind, index_bytes, report.index_rebuilt = self._update_index(
                name, previous, version, embedder, new_shards, shards, count
            )
        sources = dict(previous.sources) if previous is not None else {}
        for source, added in report.sources.items():
            if added:
                sources[source] = sources.get(source, 0) + added
        now = time.time()
        data_bytes = sum(info.size for info in self.blobs.list(f"{_ROOT}/{name}/v"))
        manifest = PoolManifest(
            name=name,
            version=version,
            config=config,
            embedder_fingerprint=embedder.fingerprint,
            embedding_dim=embedder.dim,
            count=count,
            shards=shards,
            sources=sources,
            duplicates_skipped=(previous.duplicates_skipped if previous else 0) + report.duplicates,
            index_key=index_key,
            index_kind=index_kind,
            index_bytes=index_bytes,
            bytes_on_disk=data_bytes,
            created_at=previous.created_at if previous else now,
            updated_at=now,
        )
        try:
            current: PoolManifest | None = self.manifest(name)
        except PoolNotFoundError:
            current = None
        if (current.version if current else 0) != (previous.version if previous else 0):
            raise RuntimeError(f"pool {name!r} changed during this ingest (another ingest committed first); retry")
        self.blobs.put_bytes(self._manifest_key(name), json.dumps(manifest.as_dict(), indent=1).encode())
        if previous is not None and previous.index_key not in (None, index_key):
            self.blobs.delete(previous.index_key)
            self.blobs.delete(previous.index_key + ".json")
        return manifest

    def _update_index(
        self,
        name: str,
        previous: PoolManifest | None,
        version: int,
        embedder: Embedder,
        new_shards: builtins.list[ShardInfo],
        shards: tuple[ShardInfo, ...],
        count: int,
    ) -> tuple[str, str, int, bool]:
        kind = choose_index_kind(count)
        index: VectorIndex | None = None
        if previous is not None and previous.index_key is not None and previous.index_kind == kind:
            index = VectorIndex.load(self._fetch_index(previous.index_key), mmap=False)
            new = np.concatenate([self._shard_embeddings(shard) for shard in new_shards])
            if index.retrain_advice(new) is None:
                index.add(new, np.arange(previous.count, count, dtype=np.int64), fingerprint=embedder.fingerprint)
            else:
                index = None
        rebuilt = index is None
        if index is None:
            vectors = np.concatenate([self._shard_embeddings(shard) for shard in shards])
            index = build_index(vectors, np.arange(count, dtype=np.int64), kind, fingerprint=embedder.fingerprint)
        key = f"{_ROOT}/{name}/v{version:06d}/index.faiss"
        with tempfile.TemporaryDirectory(prefix="condense-index-") as folder:
            path = Path(folder) / "index.faiss"
            index.save(path)
            self.blobs.put_file(key, path)
            self.blobs.put_file(key + ".json", Path(str(path) + ".json"))
            size = path.stat().st_size
        return key, kind, size, rebuilt

    def _fetch_index(self, key: str) -> Path:
        self.local_file(key + ".json")
        return self.local_file(key)

    def _shard_embeddings(self, shard: ShardInfo) -> np.ndarray:
        return np.load(self.local_file(shard.prefix + ".embeddings.npy"), allow_pickle=False)
