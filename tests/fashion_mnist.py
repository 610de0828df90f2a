"""Real images for tests: the benchmark task's Fashion-MNIST classes 0-4 (Debian package dataset-fashion-mnist).

scripts/test.sh installs the package; a missing file is a failed test, not a skip.
"""

from __future__ import annotations

import functools

import torch

from pu_mining.sources import fashion_mnist

TASK_CLASSES = 5


@functools.cache
def _load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fashion_mnist(split)
    keep = labels < TASK_CLASSES
    x = torch.from_numpy(images[keep]).float().div_(255).unsqueeze(1)
    return x, torch.from_numpy(labels[keep])


def task_images(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images (1x28x28, in [0, 1]) and labels of classes 0-4 from ``split`` (train/test)."""
    x, y = _load(split)
    return x[:count], y[:count]
