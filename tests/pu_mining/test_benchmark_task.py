"""The benchmark task (pu_mining.benchmark_task) and every form built on it agree with ../shared/BENCHMARK.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pu_mining.benchmark_task import (
    POSITIVES_PER_CLASS,
    TASK_CLASS_NAMES,
    TASK_CLASSES,
    first_per_class,
    load_task,
    per_class_indices,
    positive_indices,
    task_images,
    task_split,
)
from pu_mining.sources import fashion_mnist
from service.cli.example import CLASS_FOLDERS


def test_task_sizes_names_and_file_order() -> None:
    assert TASK_CLASS_NAMES == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
    assert len(CLASS_FOLDERS) == TASK_CLASSES
    train_images, train_labels, train_index = task_split("train")
    test_images, test_labels, test_index = task_split("test")
    assert (len(train_labels), len(test_labels)) == (30_000, 5_000)
    assert train_images.dtype == np.uint8 and train_images.shape[1:] == (28, 28)
    assert set(np.unique(test_labels)) == set(range(TASK_CLASSES))
    assert np.all(np.diff(train_index) > 0) and np.all(np.diff(test_index) > 0)  # file order
    file_images, file_labels = fashion_mnist("test")
    assert np.array_equal(test_images, file_images[test_index]) and np.array_equal(test_labels, file_labels[test_index])


def test_positives_are_the_first_60_of_each_class_in_file_order() -> None:
    task = load_task()
    _, file_labels = fashion_mnist("train")
    in_file = positive_indices(file_labels)
    assert len(in_file) == TASK_CLASSES * POSITIVES_PER_CLASS == len(task.positives)
    for k in range(TASK_CLASSES):
        first = np.flatnonzero(file_labels == k)[:POSITIVES_PER_CLASS]
        assert np.array_equal(in_file[file_labels[in_file] == k], first)
    # The same 300 images whether counted in the whole file or among the task's training images.
    _, _, train_index = task_split("train")
    assert np.array_equal(train_index[task.positive_indices], in_file)
    assert torch.equal(task.positives.images, task.train.images[task.positive_indices])
    assert task.positives.images.dtype == torch.float32 and float(task.positives.images.max()) <= 1.0


def test_images_after_the_positives_and_short_classes() -> None:
    labels = np.array([0, 1, 0, 2, 3, 4, 0, 1, 2, 3, 4, 9])
    assert [list(i) for i in per_class_indices(labels, 1, start=1)] == [[2], [7], [8], [9], [10]]
    assert list(first_per_class(labels, 1, start=1)) == [2, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="class 1 \\(Trouser\\) has fewer than 3"):
        first_per_class(labels, 2, start=1)


def test_task_images_are_the_first_of_the_split() -> None:
    images, labels = task_images("test", 7)
    assert images.shape == (7, 1, 28, 28) and torch.equal(labels, load_task().test.labels[:7])
