"""Writing a pool's shards during ingest (:meth:`pu_mining.pool.PoolStore.ingest`): opening each source, resizing,
embedding in batches, flushing shard files; a local file source is read with its arrays streamed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pu_mining.embedder import Embedder
from pu_mining.image_files import ImageRecord, ReadLimits, iter_images
from pu_mining.pool_types import (
    _EMBED_BATCH,
    _ROOT,
    PoolConfig,
    RecordSource,
    ShardInfo,
    _npy_bytes,
    _npz_bytes,
)

if TYPE_CHECKING:  # the store creates the writers
    from pu_mining.pool import PoolStore


def _open_source(
    source: str | os.PathLike[str] | RecordSource, limits: ReadLimits | None
) -> tuple[str, Iterator[ImageRecord], Any]:
    if isinstance(source, RecordSource):
        if not isinstance(source.name, str) or not source.name:
            raise ValueError("a RecordSource needs a non-empty name")
        return source.name, iter(source.records), None
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"a source must be a path or a RecordSource, got {type(source).__name__}")
    limits = limits or ReadLimits()
    if limits.max_array_bytes is None:  # local files of an administrator: arrays are streamed, not refused
        limits = dataclasses.replace(limits, max_array_bytes=limits.max_total_bytes)
    reader = iter_images(source, limits, on_error="skip")
    return Path(source).name or str(source), reader, reader


class _ShardWriter:
    """Buffers converted images, embeds them in batches and writes full shards under the new version."""

    def __init__(
        self, store: PoolStore, name: str, version: int, config: PoolConfig, embedder: Embedder, first_id: int
    ) -> None:
        self._store = store
        self._prefix = f"{_ROOT}/{name}/v{version:06d}"
        self._config = config
        self._embedder = embedder
        self._next_id = first_id
        self._pixels: list[np.ndarray] = []
        self._hashes: list[str] = []
        self._names: list[str] = []
        self._sources: list[str] = []
        self._embedded: list[np.ndarray] = []
        self._pending = 0
        self._shards: list[ShardInfo] = []

    def add(self, pixels: torch.Tensor, digest: str, item_name: str, source: str) -> None:
        array = pixels.mul(255).round_().clamp_(0, 255).to(torch.uint8).numpy()
        self._pixels.append(array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0)))
        self._hashes.append(digest)
        self._names.append(item_name)
        self._sources.append(source)
        self._pending += 1
        if self._pending >= _EMBED_BATCH:
            self._embed()
        if len(self._pixels) >= self._config.shard_size:
            self._flush()

    def _embed(self) -> None:
        if self._pending:
            batch = np.stack(self._pixels[len(self._pixels) - self._pending :])
            self._embedded.append(self._embedder(batch))
            self._pending = 0

    def _flush(self) -> None:
        if not self._pixels:
            return
        self._embed()
        prefix = f"{self._prefix}/shard-{len(self._shards):05d}"
        count = len(self._pixels)
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._store.blobs.put_bytes(prefix + ".images.npy", _npy_bytes(np.stack(self._pixels)))
        self._store.blobs.put_bytes(prefix + ".embeddings.npy", _npy_bytes(np.concatenate(self._embedded)))
        self._store.blobs.put_bytes(
            prefix + ".meta.npz",
            _npz_bytes(
                ids=ids,
                hashes=np.array(self._hashes, dtype="<U64"),
                names=np.array(self._names, dtype=str),
                sources=np.array(self._sources, dtype=str),
            ),
        )
        self._shards.append(ShardInfo(prefix=prefix, first_id=self._next_id, count=count))
        self._next_id += count
        self._pixels, self._hashes, self._names, self._sources, self._embedded = [], [], [], [], []

    def close(self) -> list[ShardInfo]:
        self._flush()
        return self._shards
