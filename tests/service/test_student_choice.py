"""How the pipeline turns options into a student (:mod:`service.pipeline.student_choice`): the latency budget each
option combination means, the bit-ops budget of QNN students, and the binary channel search with its record and
its reuse when a job resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compression import load_teacher
from compression.metrics.bitops import count_bit_ops
from compression.students.latency_sizing import DEFAULT_LATENCY_RATIO
from service.options import JobOptions
from service.pipeline.student_choice import QNN_BIT_OPS_DIVISOR, choose_student, distill_family, latency_budget
from tests.fashion_mnist import task_images


class _Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_Teacher().eval()), str(path))
    return load_teacher(path, input_shape=(1, 28, 28))


@pytest.mark.parametrize(
    ("options", "ratio", "ms", "batches"),
    [
        ({"latency_ratio": 0.5}, 0.5, None, (1, 32)),
        ({"latency_ms": 2.0}, None, 2.0, (1,)),
        ({"latency_ms": 9.0, "latency_batch": 32}, None, 9.0, (32,)),
        ({"student": "auto"}, DEFAULT_LATENCY_RATIO, None, (1, 32)),
        ({"student": "slim", "latency_ratio": 0.3, "latency_batch": 8}, 0.3, None, (8,)),
    ],
)
def test_latency_budget_of_the_options(options, ratio, ms, batches) -> None:
    budget = latency_budget(JobOptions.from_dict(options))
    assert (budget.ratio, budget.ms, budget.batch_sizes) == (ratio, ms, batches)


def test_no_latency_budget_without_latency_options() -> None:
    assert latency_budget(JobOptions.from_dict({"student": "slim"})) is None


def test_qnn_student_gets_an_int8_students_bit_ops(teacher, tmp_path: Path) -> None:
    options = JobOptions.from_dict({"student": "qnn2", "budget_ratio": 0.5})
    macs = 2_000_000
    student, sizing = choose_student(teacher, options, macs, torch.zeros(0, 1, 28, 28), tmp_path, tmp_path)
    assert sizing["budget"] == "bitops" and distill_family(options, sizing) == "qnn2"
    assert count_bit_ops(student, (1, 28, 28)) <= macs * 32 * 32 * 0.5 / QNN_BIT_OPS_DIVISOR


@pytest.mark.slow
def test_binary_search_is_recorded_and_reused_on_resume(teacher, tmp_path: Path) -> None:
    options = JobOptions.from_dict({"student": "binary", "search": True, "seed": 3})
    images, _ = task_images("train", 240)
    macs = 4_000_000
    student, sizing = choose_student(teacher, options, macs, images, tmp_path / "work", tmp_path / "cache")
    search = sizing["search"]
    widths = [stage[0].bn2.num_features for stage in student.stages]
    assert widths == list(search["stage_widths"]) == sizing["build"]["kwargs"]["stage_widths"]
    assert search["candidates_trained"] >= 2 and "binary channel search" in sizing["reason"]
    cost, budget = search["cost"], search["budget"]
    assert cost["ops"] <= budget["max_ops"] and cost["bytes"] <= budget["max_bytes"]
    # a resumed job rebuilds the same student from the saved choice, without searching again
    again, saved = choose_student(teacher, options, macs, images[:0], tmp_path / "work", tmp_path / "cache")
    assert saved == sizing and [stage[0].bn2.num_features for stage in again.stages] == widths


def test_submit_and_compress_share_the_student_option_flags() -> None:
    from service.cli.main import build_parser
    from service.cli.option_flags import student_option_values

    flags = ["--selection", "dfnd", "--latency-ms", "3", "--latency-batch", "8", "--quantize", "int8", "--search"]
    submit = build_parser().parse_args(["submit", "--teacher", "t.pt", "--class-names", "a,b", *flags])
    compress = build_parser().parse_args(["compress", "--teacher", "t.pt", "--out", "o", *flags])
    assert submit.positives is None and compress.positives is None  # the no-labels mode
    expected = {
        "selection": "dfnd", "latency_ms": 3.0, "latency_batch": 8, "quantize": "int8", "search": True,
    }  # fmt: skip
    assert student_option_values(compress) == expected
    assert student_option_values(submit) == {**expected, "class_names": ["a", "b"]}
    both = ["compress", "--teacher", "t", "--out", "o", "--latency-ms", "3", "--latency-ratio", "1"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(both)


def test_small_transfer_sets_train_with_smaller_batches() -> None:
    from service.pipeline.stages import MIN_BATCH_SIZE, MIN_STEPS_PER_EPOCH, batch_size_for

    assert batch_size_for(30_000, 128) == 128  # plenty of steps: unchanged
    assert batch_size_for(400, 128) == 25 and MIN_STEPS_PER_EPOCH == 400 // 25  # 3 steps an epoch -> 16
    assert batch_size_for(100, 128) == MIN_BATCH_SIZE  # never below the floor
    assert batch_size_for(2_048, 128) == 128 and batch_size_for(2_047, 128) == 127


class _TinyTeacher(nn.Module):
    """A teacher no student can beat by 2.5x: one 4-channel convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=4)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.slow
def test_the_default_student_of_a_tiny_teacher_is_the_smallest_slim_one(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_TinyTeacher().eval()), str(path))
    tiny = load_teacher(path, input_shape=(1, 28, 28))
    images = torch.zeros(0, 1, 28, 28)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    student, sizing = choose_student(tiny, JobOptions.from_dict({}), 10_000, images, tmp_path / "a", tmp_path)
    assert sizing["family"] == "slim" and "no student reaches the default budget" in sizing["reason"]
    assert isinstance(student, nn.Module)
    with pytest.raises(ValueError, match="no student fits the latency budget"):  # a budget the user set holds
        choose_student(tiny, JobOptions.from_dict({"latency_ratio": 0.4}), 10_000, images, tmp_path / "b", tmp_path)
