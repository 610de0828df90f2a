"""The records of a pool (:mod:`pu_mining.pool`): its settings, manifest, shards, ingest report, name rules."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pu_mining.embedder import DEFAULT_EMBEDDER, DEFAULT_RESOLUTION, Embedder, load_embedder
from pu_mining.image_files import ImageRecord

DEFAULT_IMAGE_SIZE = 32
"""Side of the stored square copies: enough for CIFAR- and MNIST-sized teachers; larger teachers upscale."""
DEFAULT_SHARD_SIZE = 8192
"""Items per shard: a shard of 32x32 RGB copies is 24 MiB, small enough to fetch and map one at a time."""
_EMBED_BATCH = 256
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MANIFEST_FORMAT = 1
_ROOT = "pools"

ProgressCallback = Callable[[dict[str, Any]], None]


class PoolNotFoundError(ValueError, KeyError):
    """No pool of that name (a ValueError for callers that report bad input, a KeyError for lookups)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no pool named {self.name!r}"


def check_pool_name(name: object) -> str:
    """``name`` if it is a valid pool name (it becomes a blob-key folder), else a ValueError saying the rule."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"pool name must be 1-63 characters of lowercase letters, digits, '-' or '_', starting with a letter "
            f"or digit; got {name!r}"
        )
    return name


def content_hash(image: np.ndarray) -> str:
    """SHA-256 (hex) of a decoded ``uint8`` image's shape and pixels: equal exactly for identical pictures."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PoolConfig:
    """What a pool is made of, fixed when it is created.

    ``image_size`` / ``channels``: the stored copies (1 = grey, 3 = RGB); ``embedder`` / ``embedder_resolution`` /
    ``embedder_weights``: the pool embedder (:func:`pu_mining.embedder.load_embedder`); ``shard_size``: items per
    shard.
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    channels: int = 1
    embedder: str = DEFAULT_EMBEDDER
    embedder_resolution: int = DEFAULT_RESOLUTION
    embedder_weights: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE

    def __post_init__(self) -> None:
        for name, low, high in (("image_size", 8, 512), ("embedder_resolution", 16, 1024), ("shard_size", 1, 1 << 20)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.embedder, str) or not self.embedder:
            raise ValueError(f"embedder must be a non-empty string, got {self.embedder!r}")
        if self.embedder_weights is not None and not isinstance(self.embedder_weights, str):
            raise TypeError("embedder_weights must be a path string or None")

    def load_embedder(self, num_threads: int | None = None) -> Embedder:
        return load_embedder(self.embedder, self.embedder_resolution, self.embedder_weights, num_threads=num_threads)


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its key prefix (``.../shard-00000``), first id and item count."""

    prefix: str
    first_id: int
    count: int


@dataclass(frozen=True)
class PoolManifest:
    """A pool's state at one version (``manifest.json``)."""

    name: str
    version: int
    config: PoolConfig
    embedder_fingerprint: str
    embedding_dim: int
    count: int
    shards: tuple[ShardInfo, ...]
    sources: dict[str, int]
    duplicates_skipped: int
    index_key: str | None
    index_kind: str | None
    index_bytes: int
    bytes_on_disk: int
    created_at: float
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``condense pool show`` and ``GET /pools`` print)."""
        data = asdict(self)
        data["shards"] = [asdict(shard) for shard in self.shards]
        data["format"] = _MANIFEST_FORMAT
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolManifest:
        if data.get("format") != _MANIFEST_FORMAT:
            raise ValueError(f"pool manifest format {data.get('format')!r} is not {_MANIFEST_FORMAT}")
        fields = dict(data)
        fields.pop("format")
        fields["config"] = PoolConfig(**fields["config"])
        fields["shards"] = tuple(ShardInfo(**shard) for shard in fields["shards"])
        return cls(**fields)


@dataclass(frozen=True)
class RecordSource:
    """Images that do not come from a file: ``name`` (recorded as each item's source) and the records."""

    name: str
    records: Iterable[ImageRecord]


@dataclass
class IngestReport:
    """What one ingest did."""

    pool: str
    version: int
    added: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    index_kind: str | None = None
    index_rebuilt: bool = False

    @property
    def images_per_second(self) -> float:
        return (self.added + self.duplicates) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
    return buffer.getvalue()
