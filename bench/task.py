"""The benchmark task of ../shared/BENCHMARK.md: Fashion-MNIST classes 0-4, 1x28x28, 5 classes.

- ``train``: the 30,000 training images of classes 0-4 (file order);
- ``positives``: the first 60 training images of each class in file order (300, 1 %): what a user uploads;
- ``test``: the 5,000 test images of classes 0-4, the test set for every accuracy figure.

Images are float32 tensors in [0, 1], shape [N, 1, 28, 28]; labels int64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from pu_mining.sources import fashion_mnist

TASK_CLASSES = 5
INPUT_SHAPE = (1, 28, 28)
POSITIVES_PER_CLASS = 60


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BenchmarkTask:
    train: LabelledImages
    positives: LabelledImages
    positive_indices: np.ndarray  # indices into ``train``
    test: LabelledImages


def _task_split(split: str) -> tuple[LabelledImages, np.ndarray]:
    images, labels = fashion_mnist(split)
    keep = np.flatnonzero(labels < TASK_CLASSES)
    x = torch.from_numpy(images[keep]).float().div_(255).unsqueeze(1)
    return LabelledImages(x, torch.from_numpy(labels[keep])), keep


@functools.cache
def load_task() -> BenchmarkTask:
    train, _ = _task_split("train")
    test, _ = _task_split("test")
    labels = train.labels.numpy()
    positive_indices = np.concatenate([np.flatnonzero(labels == k)[:POSITIVES_PER_CLASS] for k in range(TASK_CLASSES)])
    positive_indices.sort()
    positives = LabelledImages(train.images[positive_indices], train.labels[positive_indices])
    return BenchmarkTask(train, positives, positive_indices, test)
