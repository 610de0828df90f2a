"""The mining step's types: its settings (:class:`MiningConfig`), what it found (:class:`MiningResult` with its
:class:`MiningReport`) and the scored candidates one selection is cut from (:class:`ScoredPool`).
:mod:`pu_mining.miner` does the work."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pu_mining.candidates import Candidates
from pu_mining.nnpu import PriorMethod
from pu_mining.pool import Pool
from pu_mining.selection import SELECTIONS

__all__ = ["MiningCancelled", "MiningConfig", "MiningReport", "MiningResult", "ScoredPool"]


class MiningCancelled(RuntimeError):  # noqa: N818  (a request, not an error)
    """``should_stop()`` turned true during :func:`mine`."""


@dataclass(frozen=True)
class MiningConfig:
    """Settings of :func:`mine`; see the module docstring for what each step does."""

    candidate_budget: int | None = None
    selection_budget: int | None = None
    prior: float | None = None
    prior_method: PriorMethod = "elkan_noto"
    holdout_fraction: float = 0.2
    epochs: int = 10
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 256
    duplicate_threshold: float = 0.99
    seed: int = 0
    num_threads: int | None = None
    selection: str = "default"
    min_selection: int | None = None
    """The fewest items the ``default`` selection takes: PU members first, then the next-ranked candidates
    (:func:`pu_mining.selection.rank`); None: the members only."""
    embedding_stage: bool = True
    """Give the PU classifier the pool embedder's vector as one more feature stage next to the teacher's stages
    (measured: docs/results.md, "Measured: mining both regimes"): a teacher that never saw the pool's look-alike
    classes separates them poorly by its own stages alone."""

    def __post_init__(self) -> None:
        if not isinstance(self.embedding_stage, bool):
            raise TypeError(f"embedding_stage must be a bool, got {type(self.embedding_stage).__name__}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        for name in ("candidate_budget", "selection_budget", "min_selection"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.prior is not None and not (isinstance(self.prior, int | float) and 0.0 < self.prior < 1.0):
            raise ValueError(f"prior must be in (0, 1) or None, got {self.prior!r}")
        if not (isinstance(self.holdout_fraction, int | float) and 0.0 <= self.holdout_fraction < 0.5):
            raise ValueError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction!r}")
        if not (isinstance(self.duplicate_threshold, int | float) and 0.0 < self.duplicate_threshold <= 1.0):
            raise ValueError(f"duplicate_threshold must be in (0, 1], got {self.duplicate_threshold!r}")
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or (name == "learning_rate" and value == 0):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'learning_rate' else 'non-negative'} "
                    f"number, got {value!r}"
                )


@dataclass
class MiningReport:
    """What :func:`mine` did, for people (``report.html``) and machines (``report.json``).

    ``selected``: the transfer set (training) size; ``evaluation``: the held-back set's size, of which
    ``evaluation_from_selection`` came from the selection itself; ``class_histogram`` / ``evaluation_classes``:
    the teacher-predicted class make-up of each; ``holdout_recall``: the held-out positives' estimate of the share
    of the pool's task images the selection (training + held back) holds, ``holdout_recall_interval`` its 95 %
    Wilson interval over the ``holdout`` positives (a few dozen positives leave it wide); None without positives."""

    pool: str
    pool_version: int
    pool_items: int
    positives_used: int
    candidates: int
    candidate_budget: int
    selected: int
    prior: float
    prior_estimated: bool
    prior_method: str | None
    holdout: int
    holdout_recall: float | None
    duplicates_of_positives: int
    duplicates_within_selection: int
    capped_by_budget: int
    score_histogram: dict[str, list[float]]
    class_histogram: dict[str, int]
    training: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)
    selection: str = "default"
    labels_used: bool = True
    candidate_probe: int = 0
    candidate_queries: int = 0
    evaluation: int = 0
    evaluation_from_selection: int = 0
    evaluation_classes: dict[str, int] = field(default_factory=dict)
    min_selection: int | None = None
    filled: int = 0
    """Items of the selection below the PU threshold, taken to reach ``min_selection`` (``default`` only)."""
    holdout_recall_interval: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MiningResult:
    """The transfer set: pool ``ids`` (best first) with their ranking ``scores`` (PU score; for ``dfnd`` minus
    the teacher's self-cross-entropy; 0 for ``random``) and ``teacher_classes`` (-1 for ``random`` items outside the
    candidates, which the teacher did not see); ``evaluation_ids`` /
    ``evaluation_teacher_classes``: the held-back evaluation set (never in ``ids``); every candidate's id and
    score (``candidate_ids``, ``candidate_scores``: PU scores, or minus the self-cross-entropy without labels);
    the :class:`MiningReport`."""

    ids: np.ndarray
    scores: np.ndarray
    teacher_classes: np.ndarray
    candidate_ids: np.ndarray
    candidate_scores: np.ndarray
    report: MiningReport
    evaluation_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    evaluation_teacher_classes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def selection(self) -> str:
        """The strategy that chose ``ids``."""
        return self.report.selection

    def thumbnail_grid(self, pool: Pool, class_names: list[str], per_class: int = 10) -> bytes:
        """A PNG: one row per teacher class, its best-scoring selected items left to right (grey for none)."""
        from PIL import Image

        size = pool.manifest.config.image_size
        rows = max(1, len(class_names))
        canvas = np.full((rows * (size + 2), per_class * (size + 2), 3), 48, dtype=np.uint8)
        for row in range(rows):
            chosen = self.ids[self.teacher_classes == row][:per_class]
            if len(chosen) == 0:
                continue
            images = pool.images(chosen)
            if images.ndim == 3:
                images = np.repeat(images[..., None], 3, axis=3)
            for column, image in enumerate(images):
                top, left = row * (size + 2) + 1, column * (size + 2) + 1
                canvas[top : top + size, left : left + size] = image
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="PNG")
        return buffer.getvalue()


@dataclass
class ScoredPool:
    """Everything :func:`select` needs, from one :func:`score_pool` pass: the candidates (sorted ids) with their
    PU ``scores`` (None without positives) and teacher ``logits``; the held-out positives' PU scores, teacher
    classes and candidate reach; the positives' embeddings (for near-duplicates); the prior and training log."""

    pool: Pool
    candidates: Candidates
    scores: np.ndarray | None
    logits: torch.Tensor
    class_names: list[str]
    positive_embeddings: np.ndarray | None
    positives_used: int
    held_out_scores: np.ndarray | None
    held_out_classes: np.ndarray | None
    held_out_reach: np.ndarray | None
    prior: float
    prior_estimated: bool
    prior_method: str | None
    candidate_budget: int
    training: list[dict[str, Any]]
    seconds: dict[str, float]
    duplicate_threshold: float
    seed: int

    @property
    def candidate_ids(self) -> np.ndarray:
        return self.candidates.ids
