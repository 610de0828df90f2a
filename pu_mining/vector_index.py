"""The pool's vector index: cosine nearest neighbours of L2-normalised embeddings, with FAISS.

FAISS (Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs", arXiv:1702.08734; Douze et al., "The
Faiss library", arXiv:2401.08281) with inner-product metric on unit vectors, i.e. cosine similarity. Three kinds
(``flat``, ``hnsw``, ``ivf``), chosen by the number of vectors, and their parameters: :mod:`pu_mining.index_kinds`.

**Dimension reduction** (``reduce_dim``): embeddings are 1,280-d (EfficientNet-Lite0); ``build_index`` projects them
to :data:`DEFAULT_REDUCED_DIM` = 256 dimensions for the approximate kinds (``reduce_dim="auto"``), which makes
search about 5x cheaper and the index 5x smaller. The projection is the top-``k`` right singular vectors of the first
batch *without centering* (truncated SVD): it keeps the directions that carry the most energy of the vectors
themselves, so the inner product of two projected vectors ``<Pq, Px> = q^T P^T P x`` approximates their cosine
(centering, as in PCA, would make the ranking depend on each vector's dot product with the mean). The price: on the
real benchmark pool the 256-d projection keeps 93 % of the vectors' energy and 93 % of each query's exact 1,280-d
top-100 (the lost neighbours are near-ties), on the 1M benchmark set 87 %; see
``docs/pool_index.md``. The projection is a FAISS ``LinearTransform`` inside an ``IndexPreTransform``: it is saved in
the index file and applied to added vectors and queries automatically, so :attr:`VectorIndex.dim` stays the
embedder's dimension and callers never see the reduced vectors (:attr:`VectorIndex.index_dim` reports it). Scores
of a reduced index are those projected inner products, slightly below the true cosines. ``flat`` keeps the full
dimension by default: it is the exact reference.

**Incremental adds**: ``add`` never rebuilds. The projection and the IVF coarse quantizer are trained once, on the
first batch (a sample of it), and reused for every later batch; HNSW inserts into its graph; flat appends. A
retrain (build a new index from all vectors) is advisable when the index has grown well past the batch it was
trained on or when later batches come from a different distribution (new image sources): the cells then get
unbalanced and too large, so queries scan more vectors at the same ``nprobe`` and recall can drop for the new
regions. :meth:`VectorIndex.retrain_advice` checks both (growth over :data:`RETRAIN_GROWTH`, IVF list imbalance over
:data:`RETRAIN_IMBALANCE`, projection energy on recent batches) and says why.

**Files**: :meth:`VectorIndex.save` writes the FAISS index and a JSON sidecar, each atomically;
:meth:`VectorIndex.load` checks one against the other and memory-maps what FAISS can, read-only
(:mod:`pu_mining.index_files`). A memory-mapped index is read-only: ``add`` raises a RuntimeError instead of
letting FAISS abort the whole process. ``mmap=False`` reads everything into memory and allows adds.

Threads: FAISS uses OpenMP; set ``faiss.omp_set_num_threads(n)`` for the process. A ``VectorIndex`` is not safe to
``add`` to while another thread searches it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from pu_mining.index_files import (
    INDEX_FILE_FORMAT,
    INDEX_FILE_VERSION,
    read_index_files,
    unwrap_index,
    write_index_files,
)
from pu_mining.index_kinds import (
    DEFAULT_REDUCED_DIM,
    FLAT_MAX_VECTORS,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    HNSW_MAX_VECTORS,
    INDEX_KINDS,
    IVF_KMEANS_ITERATIONS,
    IVF_TRAIN_POINTS_PER_CELL,
    MAX_NLIST,
    IndexKind,
    check_int,
    choose_index_kind,
    default_nlist,
    default_nprobe,
)

__all__ = [
    "DEFAULT_REDUCED_DIM",
    "FLAT_MAX_VECTORS",
    "HNSW_MAX_VECTORS",
    "INDEX_KINDS",
    "VectorIndex",
    "build_index",
    "choose_index_kind",
    "default_nlist",
    "default_nprobe",
]

PROJECTION_SAMPLE = 100_000
"""Rows of the first batch the projection is computed from (a deterministic random sample beyond that)."""

RETRAIN_GROWTH = 4.0
RETRAIN_IMBALANCE = 3.0
RETRAIN_ENERGY_DROP = 0.05

NORM_TOLERANCE = 1e-2
"""Rows must have L2 norm 1 within this tolerance (the index is cosine)."""


def _check_vectors(vectors: object, dim: int, what: str = "vectors") -> np.ndarray:
    """A float ``[n, dim]`` array of finite, L2-normalised rows -> contiguous float32; ValueError otherwise."""
    if not isinstance(vectors, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(vectors).__name__}")
    if vectors.dtype.kind != "f":
        raise ValueError(f"{what} must be floating point (float32), got dtype {vectors.dtype}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must have shape [n, {dim}], got {vectors.shape}")
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    if len(array):
        norms = np.linalg.norm(array, axis=1)
        worst = float(np.abs(norms - 1.0).max())
        if worst > NORM_TOLERANCE:
            norm = norms[np.abs(norms - 1.0).argmax()]
            raise ValueError(f"{what} must be L2-normalised rows (cosine index); a row has norm {norm:.4g}")
    return array


def _check_ids(ids: object, n: int) -> np.ndarray:
    if not isinstance(ids, np.ndarray):
        raise ValueError(f"ids must be a numpy int64 array, got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers (int64), got dtype {ids.dtype}")
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
    if n and (ids.min() < 0 or (ids.dtype.kind == "u" and ids.max() > np.iinfo(np.int64).max)):
        raise ValueError("ids must be non-negative int64 values (-1 marks a missing result)")
    result = ids.astype(np.int64)
    if len(np.unique(result)) != n:
        raise ValueError("ids must be unique within a batch")
    return result


def _projection(sample: np.ndarray, reduced: int) -> tuple[np.ndarray, float]:
    """Top-``reduced`` right singular vectors of ``sample`` (uncentered) as a ``[reduced, dim]`` matrix, and the
    share of the sample's energy they keep."""
    gram = sample.astype(np.float64).T @ sample.astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:reduced]
    energy = float(eigenvalues[order].sum() / max(eigenvalues.sum(), 1e-30))
    return np.ascontiguousarray(eigenvectors[:, order].T, dtype=np.float32), energy


# --------------------------------------------------------------------------------------------------------- index


class VectorIndex:
    """A cosine (inner-product on unit vectors) FAISS index of ``kind`` ``"flat"``, ``"ivf"`` or ``"hnsw"``.

    Create an empty one and ``add`` batches, or use :func:`build_index`. The first ``add`` trains the projection
    (``reduce_dim``) and the IVF quantizer (``nlist`` cells; default from the batch's size, :func:`default_nlist`).

    Args:
        dim: the vectors' dimension (the embedder's).
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        reduce_dim: project to this many dimensions inside the index (``None``: no projection).
        nlist, nprobe: IVF cells and cells searched (defaults :func:`default_nlist`, :func:`default_nprobe`).
        m, ef_construction, ef_search: HNSW links per node, construction and search beam widths.
        fingerprint: the embedder's :attr:`~pu_mining.embedder.Embedder.fingerprint`, kept in the metadata; adds
            and searches that pass another one are refused.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        *,
        reduce_dim: int | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
        fingerprint: str | None = None,
    ) -> None:
        self._dim = check_int(dim, "dim", low=1)
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        if reduce_dim is not None:
            reduce_dim = check_int(reduce_dim, "reduce_dim", low=1, high=self._dim)
            if reduce_dim == self._dim:
                reduce_dim = None
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a string or None, got {type(fingerprint).__name__}")
        if kind != "ivf" and (nlist is not None or nprobe is not None):
            raise ValueError(f"nlist / nprobe apply to kind 'ivf', not {kind!r}")
        self._kind: IndexKind = kind  # type: ignore[assignment]
        self._reduce_dim = reduce_dim
        self._fingerprint = fingerprint
        self._params: dict[str, Any] = {}
        if kind == "ivf":
            self._params["nlist"] = None if nlist is None else check_int(nlist, "nlist", low=1, high=MAX_NLIST)
            self._params["nprobe"] = None if nprobe is None else check_int(nprobe, "nprobe", low=1)
            if self._params["nlist"] is not None and self._params["nprobe"] is not None:
                self._params["nprobe"] = min(self._params["nprobe"], self._params["nlist"])
        elif kind == "hnsw":
            self._params["m"] = check_int(m, "m", low=2, high=512)
            self._params["ef_construction"] = check_int(ef_construction, "ef_construction", low=1)
            self._params["ef_search"] = check_int(ef_search, "ef_search", low=1)
        self._trained_on = 0
        self._energy: float | None = None
        self._read_only = False
        self._index: faiss.Index | None = None
        self._core: Any = None  # the kind's own faiss index (IVF, HNSW or flat: attributes differ by kind)
        self._keep: list[Any] = []  # python references to the sub-indexes the wrappers point to
        if kind != "ivf" and reduce_dim is None:
            self._assemble(None)  # nothing to train: build now

    # ------------------------------------------------------------------ properties

    @property
    def kind(self) -> IndexKind:
        return self._kind

    @property
    def dim(self) -> int:
        """Dimension of the vectors added and queried (before any projection)."""
        return self._dim

    @property
    def index_dim(self) -> int:
        """Dimension the index stores: ``reduce_dim`` if set, else :attr:`dim`."""
        return self._reduce_dim or self._dim

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    @property
    def read_only(self) -> bool:
        """True for an index loaded with ``mmap=True``."""
        return self._read_only

    @property
    def params(self) -> dict[str, Any]:
        """The kind's parameters (``nlist``/``nprobe`` or ``m``/``ef_construction``/``ef_search``) and
        ``reduce_dim``; ``None`` for values not fixed until the first ``add``."""
        return {**self._params, "reduce_dim": self._reduce_dim}

    @property
    def faiss_index(self) -> faiss.Index | None:
        """The underlying FAISS index (``None`` before the first ``add`` of an index that needs training)."""
        return self._index

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self._kind!r}, dim={self._dim}, index_dim={self.index_dim}, ntotal={self.ntotal}, "
            f"params={self._params})"
        )

    # ------------------------------------------------------------------ building

    def _assemble(self, first_batch: np.ndarray | None) -> None:
        """Create the FAISS index; train the projection and the IVF quantizer on ``first_batch``."""
        index_dim = self.index_dim
        transform = None
        if self._reduce_dim is not None:
            if first_batch is None:
                raise ValueError("the projection needs a first batch to be trained on")
            sample = first_batch
            if len(sample) > PROJECTION_SAMPLE:
                rows = np.sort(np.random.default_rng(0).choice(len(sample), PROJECTION_SAMPLE, replace=False))
                sample = sample[rows]
            matrix, self._energy = _projection(sample, self._reduce_dim)
            transform = faiss.LinearTransform(self._dim, self._reduce_dim, False)
            faiss.copy_array_to_vector(matrix.ravel(), transform.A)
            transform.is_trained = True
        core: Any  # IndexFlatIP, IndexHNSWFlat or IndexIVFFlat
        if self._kind == "flat":
            core = faiss.IndexFlatIP(index_dim)
            top: faiss.Index = faiss.IndexIDMap(core)
        elif self._kind == "hnsw":
            core = faiss.IndexHNSWFlat(index_dim, self._params["m"], faiss.METRIC_INNER_PRODUCT)
            core.hnsw.efConstruction = self._params["ef_construction"]
            core.hnsw.efSearch = self._params["ef_search"]
            top = faiss.IndexIDMap(core)
        else:
            if first_batch is None:
                raise ValueError("an IVF index needs a first batch to train its quantizer on")
            nlist = self._params["nlist"] or default_nlist(len(first_batch))
            if len(first_batch) < nlist:
                raise ValueError(f"an IVF index with nlist={nlist} needs at least {nlist} vectors in its first batch")
            self._params["nlist"] = nlist
            self._params["nprobe"] = min(nlist, self._params["nprobe"] or default_nprobe(nlist))
            quantizer = faiss.IndexFlatIP(index_dim)
            core = faiss.IndexIVFFlat(quantizer, index_dim, nlist, faiss.METRIC_INNER_PRODUCT)
            core.cp.niter = IVF_KMEANS_ITERATIONS
            core.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_CELL
            core.nprobe = self._params["nprobe"]
            self._keep.append(quantizer)
            top = core
        self._keep.append(core)
        if transform is not None:
            self._keep.extend([top, transform])
            top = faiss.IndexPreTransform(transform, top)
        if not top.is_trained:
            if first_batch is None:
                raise ValueError("the index needs a first batch to be trained on")
            train = first_batch
            limit = self._params.get("nlist", 1) * IVF_TRAIN_POINTS_PER_CELL
            if len(train) > limit:
                rows = np.sort(np.random.default_rng(1).choice(len(train), limit, replace=False))
                train = train[rows]
            top.train(np.ascontiguousarray(train))
        self._index, self._core = top, core
        self._trained_on = 0 if first_batch is None else len(first_batch)

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None, *, fingerprint: str | None = None) -> np.ndarray:
        """Add L2-normalised ``[n, dim]`` vectors with int64 ``ids`` (default: consecutive from :attr:`ntotal`).

        Never rebuilds: the first call trains what needs training; later calls reuse it (see the module
        docstring for when a retrain pays off). Returns the ids used. ValueError for bad input or a fingerprint
        other than the index's; RuntimeError for a read-only (memory-mapped) index.
        """
        if self._read_only:
            raise RuntimeError("this index was loaded memory-mapped (read-only); load it with mmap=False to add")
        self._check_fingerprint(fingerprint)
        array = _check_vectors(vectors, self._dim)
        n = len(array)
        ids = np.arange(self.ntotal, self.ntotal + n, dtype=np.int64) if ids is None else _check_ids(ids, n)
        if n == 0:
            return ids
        if self._index is None:
            self._assemble(array)  # trains on this first batch
        elif self._trained_on == 0:
            self._trained_on = n  # flat / hnsw without projection: nothing trained, the first batch's size
        index = self._index
        if index is None:  # pragma: no cover - _assemble always builds it
            raise RuntimeError("the FAISS index was not built")
        index.add_with_ids(array, ids)
        return ids

    def _check_fingerprint(self, fingerprint: str | None) -> None:
        if fingerprint is not None and self._fingerprint is not None and fingerprint != self._fingerprint:
            raise ValueError(
                f"embedder fingerprint {fingerprint!r} differs from the index's {self._fingerprint!r}: "
                "the vectors are not comparable"
            )

    # ------------------------------------------------------------------ search

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set IVF's ``nprobe`` (1..nlist) or HNSW's ``ef_search``; ValueError for the other kind's parameter."""
        if nprobe is not None:
            if self._kind != "ivf":
                raise ValueError(f"nprobe applies to kind 'ivf', not {self._kind!r}")
            high = self._params["nlist"] or MAX_NLIST
            self._params["nprobe"] = check_int(nprobe, "nprobe", low=1, high=high)
            if self._core is not None:
                self._core.nprobe = self._params["nprobe"]
        if ef_search is not None:
            if self._kind != "hnsw":
                raise ValueError(f"ef_search applies to kind 'hnsw', not {self._kind!r}")
            self._params["ef_search"] = check_int(ef_search, "ef_search", low=1)
            if self._core is not None:
                self._core.hnsw.efSearch = self._params["ef_search"]

    def search(self, queries: np.ndarray, k: int, *, fingerprint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar vectors of each L2-normalised query: ``(scores float32 [nq, k], ids int64
        [nq, k])``, best first. Scores are cosines (projected inner products for a reduced index). Where fewer
        than ``k`` results exist the id is -1 and the score ``-inf``."""
        self._check_fingerprint(fingerprint)
        array = _check_vectors(queries, self._dim, "queries")
        k = check_int(k, "k", low=1)
        if self._index is None or self.ntotal == 0 or len(array) == 0:
            return np.full((len(array), k), -np.inf, dtype=np.float32), np.full((len(array), k), -1, dtype=np.int64)
        scores, ids = self._index.search(array, k)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids

    # ------------------------------------------------------------------ maintenance

    def retrain_advice(self, recent: np.ndarray | None = None) -> str | None:
        """Why a rebuild from all vectors would pay off, or ``None``.

        Checks growth since training (over :data:`RETRAIN_GROWTH` x the training batch: ``nlist`` is then too
        small for the size), IVF list imbalance (FAISS ``imbalance_factor`` over :data:`RETRAIN_IMBALANCE`: the
        cells no longer fit the data) and, given a sample of ``recent`` vectors, whether the projection keeps
        clearly less of their energy than of the training batch's (new kinds of images).
        """
        reasons = []
        trained = self._trained_on
        if self._index is not None and (self._kind == "ivf" or self._reduce_dim is not None) and trained:
            if self.ntotal > RETRAIN_GROWTH * trained:
                reasons.append(f"the index grew from {trained:,} to {self.ntotal:,} vectors since it was trained")
            if self._kind == "ivf" and self.ntotal and not self._read_only:
                imbalance = float(self._core.invlists.imbalance_factor())
                if imbalance > RETRAIN_IMBALANCE:
                    reasons.append(f"IVF lists are unbalanced (imbalance factor {imbalance:.2f})")
        if recent is not None and self._reduce_dim is not None and self._energy is not None:
            array = _check_vectors(recent, self._dim, "recent")
            if len(array):
                projected = self._projected(array)
                energy = float((projected**2).sum() / (array**2).sum())
                if energy < self._energy - RETRAIN_ENERGY_DROP:
                    reasons.append(
                        f"the projection keeps {energy:.0%} of the recent vectors' energy "
                        f"against {self._energy:.0%} of the training batch's"
                    )
        return "; ".join(reasons) or None

    def _projected(self, array: np.ndarray) -> np.ndarray:
        wrapped: Any = faiss.downcast_index(self._index) if self._reduce_dim and self._index is not None else None
        transform = wrapped.chain.at(0) if wrapped is not None else None
        if transform is None:
            return array
        return faiss.downcast_VectorTransform(transform).apply(array)

    # ------------------------------------------------------------------ files

    def metadata(self) -> dict[str, Any]:
        return {
            "format": INDEX_FILE_FORMAT,
            "version": INDEX_FILE_VERSION,
            "kind": self._kind,
            "dim": self._dim,
            "index_dim": self.index_dim,
            "ntotal": self.ntotal,
            "params": self.params,
            "fingerprint": self._fingerprint,
            "trained_on": self._trained_on,
            "projection_energy": self._energy,
            "faiss_version": faiss.__version__,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` and its metadata to ``path + ".json"``, each atomically
        (:func:`~pu_mining.index_files.write_index_files`).

        RuntimeError for a memory-mapped index: FAISS writes memory-mapped IVF lists as a reference to the file
        they map, not as data."""
        if self._index is None:
            raise ValueError("nothing to save: the index has not been built (add vectors first)")
        if self._read_only:  # FAISS would write a memory-mapped IVF as a reference to the file it maps
            raise RuntimeError("this index was loaded memory-mapped (read-only); load it with mmap=False to save it")
        write_index_files(self._index, path, self.metadata())

    @classmethod
    def load(cls, path: str | os.PathLike[str], mmap: bool = True) -> VectorIndex:
        """Read an index written by :meth:`save`. ``mmap=True`` maps it read-only where FAISS can
        (:mod:`pu_mining.index_files`); ValueError for a missing or inconsistent file pair."""
        index, meta = read_index_files(path, mmap)
        kind = meta["kind"]
        params = dict(meta.get("params") or {})
        reduce_dim = params.pop("reduce_dim", None)
        self = cls.__new__(cls)
        self._dim = int(meta["dim"])
        self._kind = kind
        self._reduce_dim = reduce_dim
        self._fingerprint = meta.get("fingerprint")
        self._params = params
        self._trained_on = int(meta.get("trained_on") or 0)
        self._energy = meta.get("projection_energy")
        self._read_only = bool(mmap)
        self._keep = []
        self._index = index
        self._core = unwrap_index(index, kind, self._dim, self.index_dim)
        if int(index.ntotal) != meta.get("ntotal"):
            raise ValueError(f"{Path(path)} holds {index.ntotal} vectors, its metadata says {meta.get('ntotal')}")
        if kind == "ivf":
            self._core.nprobe = int(params["nprobe"])
        elif kind == "hnsw":
            self._core.hnsw.efSearch = int(params["ef_search"])
        return self


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray | None = None,
    kind: str = "auto",
    *,
    reduce_dim: int | Literal["auto"] | None = "auto",
    fingerprint: str | None = None,
    **params: Any,
) -> VectorIndex:
    """Build a :class:`VectorIndex` over ``vectors`` (L2-normalised ``[n, dim]``) in one call.

    ``kind="auto"`` picks :func:`choose_index_kind` of ``n``. ``reduce_dim="auto"`` projects to
    :data:`DEFAULT_REDUCED_DIM` dimensions for ``ivf``/``hnsw`` when ``dim`` is larger, and keeps ``flat`` exact;
    an int forces that dimension, ``None`` none. ``params``: ``nlist``, ``nprobe`` (ivf), ``m``,
    ``ef_construction``, ``ef_search`` (hnsw).
    """
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-d numpy array, got {getattr(vectors, 'shape', type(vectors).__name__)}")
    if kind == "auto":
        kind = choose_index_kind(len(vectors))
    if reduce_dim == "auto":
        dim = vectors.shape[1]
        reduce_dim = DEFAULT_REDUCED_DIM if kind != "flat" and dim > DEFAULT_REDUCED_DIM else None
    allowed = {"ivf": {"nlist", "nprobe"}, "hnsw": {"m", "ef_construction", "ef_search"}}.get(kind, set())
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"parameters {sorted(unknown)} do not apply to kind {kind!r}")
    index = VectorIndex(vectors.shape[1], kind, reduce_dim=reduce_dim, fingerprint=fingerprint, **params)
    index.add(vectors, ids)
    return index
