"""Binary channel search (compression/search/binary_widths.py; Shen et al., arXiv:1909.07378) on real
Fashion-MNIST images (tests/fashion_mnist.py): a searched student meets its budget, results are cached."""

from __future__ import annotations

import pytest
import torch

from compression import create_student
from compression.search.binary_widths import (
    BinaryBudget,
    BinaryCost,
    binary_cost,
    create_searched_student,
    search_binary_widths,
)
from compression.students import Budget
from compression.students.factory import measure
from tests.fashion_mnist import TASK_CLASSES, task_images

INPUT_SHAPE = (1, 28, 28)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_searched_student_meets_its_budget_and_is_cached(tmp_path) -> None:
    images, _ = task_images("train", 96)
    torch.manual_seed(0)
    teacher = create_student("plain", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=0.5).eval()
    mac_budget = Budget(measure(teacher, INPUT_SHAPE, "macs"), 0.25)
    default = create_student("binary", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, budget=mac_budget)
    budget = BinaryBudget.around(binary_cost(default, INPUT_SHAPE), 1.3, 1.3, 1.3)
    settings = {"population": 4, "generations": 2, "proxy_images": 64, "proxy_val_images": 32, "cache_dir": tmp_path}
    result = search_binary_widths(teacher, images, TASK_CLASSES, mac_budget, budget, **settings)

    assert not result.cached and result.search_s > 0
    assert result.candidates_trained >= 3
    assert len(result.history) == result.candidates_trained
    assert budget.allows(result.cost)
    for row in result.history:  # no candidate over the budget was trained
        assert budget.allows(BinaryCost(row["ops"], row["bytes"], row["macs"]))
    assert result.default_widths == tuple(stage[-1].conv2.out_channels for stage in default.stages)
    assert result.proxy_score == max(row["score"] for row in result.history)

    student = create_searched_student(result, TASK_CLASSES, INPUT_SHAPE)
    assert tuple(stage[-1].conv2.out_channels for stage in student.stages) == result.stage_widths
    assert binary_cost(student, INPUT_SHAPE) == result.cost
    assert budget.allows(binary_cost(student, INPUT_SHAPE))
    assert student(images[:2]).shape == (2, TASK_CLASSES)

    again = search_binary_widths(teacher, images, TASK_CLASSES, mac_budget, budget, **settings)
    assert again.cached and again.stage_widths == result.stage_widths and again.cost == result.cost


def test_budget_that_nothing_meets_and_bad_arguments(tmp_path) -> None:
    images, _ = task_images("train", 12)
    teacher = create_student("plain", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=0.5).eval()
    mac_budget = Budget(measure(teacher, INPUT_SHAPE, "macs"), 0.25)
    with pytest.raises(ValueError, match="no candidate within the budget"):
        search_binary_widths(
            teacher,
            images,
            TASK_CLASSES,
            mac_budget,
            BinaryBudget(1, 1),
            population=2,
            generations=1,
            cache_dir=tmp_path,
            proxy=lambda model: 0.0,
        )
    with pytest.raises(ValueError, match="binary ResNets"):
        search_binary_widths(teacher, images, TASK_CLASSES, mac_budget, architecture="ghost_resnet20")
    with pytest.raises(ValueError, match="max_ops"):
        BinaryBudget(0, 10)
