"""The kinds of the pool's vector index and their parameters: which FAISS index for how many vectors.

FAISS (Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs", arXiv:1702.08734; Douze et al., "The
Faiss library", arXiv:2401.08281) with inner-product metric on unit vectors, i.e. cosine similarity
(:mod:`pu_mining.vector_index`). Three kinds:

| kind | FAISS index | search | chosen for N (:func:`choose_index_kind`) |
|---|---|---|---|
| ``"flat"`` | ``IndexFlatIP`` | exact, one BLAS product per query batch | up to :data:`FLAT_MAX_VECTORS` |
| ``"hnsw"`` | ``IndexHNSWFlat`` (Malkov & Yashunin, arXiv:1603.09320) | graph walk, ``ef_search`` | up to 2M |
| ``"ivf"`` | ``IndexIVFFlat`` (Jégou et al., TPAMI 2011) | ``nprobe`` of ``nlist`` cells | above 2M |

Thresholds (measurements on 2 cores in ``docs/pool_index.md``, ``bench/bench_faiss.py``): exact search over
50,000 x 1,280-d vectors is one BLAS product per query batch (about 1,000 queries/s at 100k vectors), needs no
training and no tuning, so pools up to :data:`FLAT_MAX_VECTORS` are searched exactly. Above that HNSW: the best
queries/s at a given recall (1M vectors: about 2,000 queries/s at recall@100 0.98), incremental adds without any
training and no drift as the pool grows; but it is slow to build (every insertion is a search: about 4 minutes for
1M on 2 cores), its links cost ``2 * M * 4`` bytes per vector on top of the vectors and only the vectors can be
memory-mapped. Past :data:`HNSW_MAX_VECTORS` IVF: it builds 3-5x faster, serves its inverted lists straight
from a memory-mapped file and costs only 8 bytes per vector for the ids.

Parameters:

- IVF: ``nlist = 4 * sqrt(N)`` cells (the FAISS guideline is 4-16 sqrt(N)), clipped to 16..65,536 and to at most
  ``N / 39`` (FAISS's minimum of 39 training points per centroid), where N is the first batch's size; k-means on
  at most :data:`IVF_TRAIN_POINTS_PER_CELL` points per cell, :data:`IVF_KMEANS_ITERATIONS` iterations. Default
  ``nprobe = 0.8 * sqrt(nlist)`` (:func:`default_nprobe`): recall@100 reached 0.95 at about ``0.7 * sqrt(nlist)``
  cells at both 100k and 1M vectors.
- HNSW: ``M = 32`` links per node, ``efConstruction = 64``, ``efSearch = 128`` (FAISS searches with
  ``max(efSearch, k)``): recall@100 0.98-0.99 at 1M vectors.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_REDUCED_DIM",
    "FLAT_MAX_VECTORS",
    "HNSW_MAX_VECTORS",
    "INDEX_KINDS",
    "IndexKind",
    "check_int",
    "choose_index_kind",
    "default_nlist",
    "default_nprobe",
]

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")

FLAT_MAX_VECTORS = 50_000
"""Up to this many vectors the index is exact (see the module docstring)."""
HNSW_MAX_VECTORS = 2_000_000
"""Up to this many vectors HNSW, above it IVF (memory and build time; see the module docstring)."""
DEFAULT_REDUCED_DIM = 256

MIN_NLIST = 16
MAX_NLIST = 65_536
IVF_MIN_POINTS_PER_CELL = 39
IVF_TRAIN_POINTS_PER_CELL = 64
IVF_KMEANS_ITERATIONS = 10
NPROBE_SQRT_FACTOR = 0.8
"""Default ``nprobe = 0.8 * sqrt(nlist)``, at least :data:`MIN_NPROBE` (see :func:`default_nprobe`)."""
MIN_NPROBE = 8
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 128


def choose_index_kind(n_vectors: int) -> IndexKind:
    """``"flat"`` up to :data:`FLAT_MAX_VECTORS`, ``"hnsw"`` up to :data:`HNSW_MAX_VECTORS`, else ``"ivf"``."""
    n_vectors = check_int(n_vectors, "n_vectors", low=0)
    if n_vectors <= FLAT_MAX_VECTORS:
        return "flat"
    if n_vectors <= HNSW_MAX_VECTORS:
        return "hnsw"
    return "ivf"


def default_nlist(n_vectors: int) -> int:
    """``4 * sqrt(N)`` IVF cells, clipped to 16..65,536 and to ``N / 39`` (at least 1)."""
    n_vectors = check_int(n_vectors, "n_vectors", low=1)
    nlist = min(MAX_NLIST, max(MIN_NLIST, round(4 * math.sqrt(n_vectors))))
    return max(1, min(nlist, n_vectors // IVF_MIN_POINTS_PER_CELL))


def default_nprobe(nlist: int) -> int:
    """``0.8 * sqrt(nlist)`` cells probed, at least 8 and at most ``nlist``.

    Measured (``docs/pool_index.md``): recall@100 = 0.95 needed about 24 of 1,265 cells at 100k vectors and about
    42 of 4,000 at 1M, i.e. ``~0.7 * sqrt(nlist)``; 0.8 leaves a margin (29 and 51 cells).
    """
    nlist = check_int(nlist, "nlist", low=1)
    return min(nlist, max(MIN_NPROBE, math.ceil(NPROBE_SQRT_FACTOR * math.sqrt(nlist))))


def check_int(value: object, what: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{what} must be in {low}..{high if high is not None else 'inf'}, got {value}")
    return int(value)
