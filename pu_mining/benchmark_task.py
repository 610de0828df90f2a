"""The benchmark task of ../shared/BENCHMARK.md, defined once: Fashion-MNIST (Xiao et al., arXiv:1708.07747) classes
0-4 from the Debian package ``dataset-fashion-mnist``, 1x28x28 grayscale, 5 classes.

- **classes**: :data:`TASK_CLASS_NAMES` (T-shirt/top, Trouser, Pullover, Dress, Coat), labels 0-4;
- **train**: the 30,000 training images of classes 0-4, in file order;
- **positives** (what a user uploads): the first :data:`POSITIVES_PER_CLASS` (60) training images of each class in
  file order, 300 images (1 %): :func:`positive_indices`;
- **test**: the 5,000 test images of classes 0-4, in file order: the test set for every accuracy figure.

Two forms: numpy (:func:`task_split`: ``uint8`` ``[N, 28, 28]`` images as in the files, with their indices in the
file) and torch (:func:`task_tensors`, :func:`load_task`: ``float32`` ``[N, 1, 28, 28]`` in [0, 1], ``int64``
labels). The pools built around the task are in :mod:`pu_mining.benchmark_pool`. torch is imported only by the
torch form, so that the ``condense`` command line can read the numpy form without it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pu_mining.sources import FASHION_MNIST_CLASSES, fashion_mnist

if TYPE_CHECKING:
    import torch

__all__ = [
    "INPUT_SHAPE",
    "POSITIVES_PER_CLASS",
    "TASK_CLASSES",
    "TASK_CLASS_NAMES",
    "BenchmarkTask",
    "LabelledImages",
    "first_per_class",
    "images_to_tensor",
    "load_task",
    "per_class_indices",
    "positive_indices",
    "task_images",
    "task_split",
    "task_tensors",
]

TASK_CLASSES = 5
TASK_CLASS_NAMES: tuple[str, ...] = FASHION_MNIST_CLASSES[:TASK_CLASSES]
"""The task's class names in label order: T-shirt/top, Trouser, Pullover, Dress, Coat."""
INPUT_SHAPE = (1, 28, 28)
POSITIVES_PER_CLASS = 60


def task_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, labels, file_index)`` of the task's classes in ``split`` ("train": 30,000, "test": 5,000), in file
    order: ``uint8`` ``[N, 28, 28]`` images, ``int64`` labels 0-4 and each image's index in the Fashion-MNIST file."""
    images, labels = fashion_mnist(split)
    keep = np.flatnonzero(labels < TASK_CLASSES)
    return images[keep], labels[keep], keep


def per_class_indices(labels: np.ndarray, count: int, start: int = 0) -> list[np.ndarray]:
    """For each task class ``k`` in label order, the indices into ``labels`` of its images ``start`` to
    ``start + count - 1`` in file order; ValueError if some class has fewer than ``start + count``."""
    chosen = [np.flatnonzero(labels == k)[start : start + count] for k in range(TASK_CLASSES)]
    for k, indices in enumerate(chosen):
        if len(indices) != count:
            raise ValueError(
                f"class {k} ({TASK_CLASS_NAMES[k]}) has fewer than {start + count} images, needed for images "
                f"{start}-{start + count - 1} of each class"
            )
    return chosen


def first_per_class(labels: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """:func:`per_class_indices` of all task classes together, sorted (file order)."""
    return np.sort(np.concatenate(per_class_indices(labels, count, start)))


def positive_indices(labels: np.ndarray) -> np.ndarray:
    """The positives' indices into ``labels`` (training labels, of the whole file or of :func:`task_split`): the
    first :data:`POSITIVES_PER_CLASS` images of each task class, sorted (file order)."""
    return first_per_class(labels, POSITIVES_PER_CLASS)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8`` ``[N, 28, 28]`` images as the ``float32`` ``[N, 1, 28, 28]`` tensor in [0, 1] models take."""
    import torch

    return torch.from_numpy(images).float().div_(255).unsqueeze(1)


@dataclass(frozen=True)
class LabelledImages:
    """``images`` ``float32`` ``[N, 1, 28, 28]`` in [0, 1] and their ``int64`` ``labels``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BenchmarkTask:
    """The task's training images, positives (with ``positive_indices`` into ``train``) and test images."""

    train: LabelledImages
    positives: LabelledImages
    positive_indices: np.ndarray
    test: LabelledImages


@functools.cache
def task_tensors(split: str) -> LabelledImages:
    """:func:`task_split` as tensors (cached: callers must not modify them in place)."""
    import torch

    images, labels, _ = task_split(split)
    return LabelledImages(images_to_tensor(images), torch.from_numpy(labels))


def task_images(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images and labels of the task's classes in ``split`` (train/test), as tensors."""
    data = task_tensors(split)
    return data.images[:count], data.labels[:count]


@functools.cache
def load_task() -> BenchmarkTask:
    """The whole task as tensors (cached)."""
    train, test = task_tensors("train"), task_tensors("test")
    indices = positive_indices(train.labels.numpy())
    positives = LabelledImages(train.images[indices], train.labels[indices])
    return BenchmarkTask(train, positives, indices, test)
