"""The distillation trainer, its config and evaluation, on real Fashion-MNIST images (tests/fashion_mnist.py).

Every run uses one thread (``num_threads=1``): the machine is shared and small; that also keeps runs deterministic.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from compression import create_student
from compression.distill import (
    IGNORE_LABEL,
    DistillCancelled,
    DistillConfig,
    DistillProgress,
    TransferSet,
    as_transfer_set,
    default_config,
    distill,
    evaluate,
    infer_family,
)
from compression.distill.trainer import CHECKPOINT_FILE
from compression.teachers import Teacher
from tests.fashion_mnist import TASK_CLASSES, task_images

REPO_ROOT = Path(__file__).resolve().parents[2]
INPUT_SHAPE = (1, 28, 28)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data() -> dict[str, TransferSet]:
    train_images, train_labels = task_images("train", 1000)
    val_images, val_labels = task_images("test", 300)
    return {"train": TransferSet(train_images, train_labels), "val": TransferSet(val_images, val_labels)}


@pytest.fixture(scope="module")
def teacher(trained_teacher: Teacher) -> Teacher:
    """The suite's trained teacher (tests/teachers.py), loaded from TorchScript as an upload is."""
    return trained_teacher


def _student(family: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_student(family, num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=0.25)


def _config(family: str, **overrides) -> DistillConfig:
    settings = {"epochs": 2, "batch_size": 32, "num_threads": 1, "checkpoint_every_s": None, "augment": False}
    return default_config(family, **{**settings, **overrides})


# Two short epochs (2 x 512 / 16 = 64 steps) are not what the family defaults are tuned for; with these changes
# they are enough to move every family well away from its random start.
_SHORT_RUN_TRAIN_IMAGES = 512
_SHORT_RUN_OVERRIDES = {
    "ghost": {"batch_size": 16},
    "binary": {"batch_size": 16, "lr": 5e-3},
    "adder": {"batch_size": 16, "lr": 0.02, "temperature": 2.0, "float_stage_epochs": 0},  # the adder stage alone
}


@pytest.fixture(scope="module")
def family_runs(teacher: Teacher, data: dict[str, TransferSet]) -> dict[str, tuple]:
    runs = {}
    count = _SHORT_RUN_TRAIN_IMAGES
    train = TransferSet(data["train"].images[:count], data["train"].labels[:count])
    for family, overrides in _SHORT_RUN_OVERRIDES.items():
        events: list[DistillProgress] = []
        config = _config(family, **overrides)
        result = distill(teacher, _student(family), train, data["val"], config, on_progress=events.append)
        runs[family] = (result, events)
    return runs


# ------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("family", sorted(_SHORT_RUN_OVERRIDES))
def test_each_family_learns_to_agree_with_the_teacher(family, family_runs, teacher, data) -> None:
    result, _ = family_runs[family]
    initial = result.history[0]
    assert initial.epoch == 0 and initial.train_loss is None
    assert [record.epoch for record in result.history] == [0, 1, 2]
    assert result.stopped_reason == "completed" and result.global_step == 2 * (_SHORT_RUN_TRAIN_IMAGES // 16)
    # The returned student is the best state by validation accuracy, and it agrees with the teacher much more
    # often than the random initial student did.
    assert result.metric == "accuracy"
    final = evaluate(result.student, teacher, data["val"].images, data["val"].labels)
    assert final.student_accuracy == result.best_metric == max(r.val_metric for r in result.history)
    assert final.agreement > initial.val_agreement + 0.1, (family, initial.val_agreement, final.agreement)
    assert not result.student.training
    assert sum(result.class_weights) == pytest.approx(TASK_CLASSES, rel=1e-5)
    assert result.teacher_forward_s > 0 and result.train_s > 0 and result.wall_s >= result.train_s


def test_progress_events_carry_the_fields(family_runs) -> None:
    result, events = family_runs["ghost"]
    stages = [event.stage for event in events]
    assert stages[0] == "teacher_outputs" and stages[-1] == "done"
    assert {"teacher_outputs", "train", "validate", "done"} <= set(stages)
    train = [event for event in events if event.stage == "train"]
    assert 2 <= len(train) < result.global_step  # throttled to one every progress_interval_s
    for event in train:
        steps_per_epoch = _SHORT_RUN_TRAIN_IMAGES // 16
        assert event.epochs == 2 and event.steps_per_epoch == steps_per_epoch and 1 <= event.step <= steps_per_epoch
        assert event.epoch in (1, 2) and event.loss is not None and event.loss > 0
        assert event.samples_per_s is not None and event.samples_per_s > 0
        assert event.eta_s is not None and event.eta_s >= 0
    # Validation results reach the events; the first epoch's training events carry the initial validation.
    validated = [event for event in events if event.stage == "validate" and event.step == event.steps_per_epoch]
    assert [event.val_accuracy for event in validated] == [record.val_accuracy for record in result.history]
    assert all(event.val_agreement is not None for event in train)
    elapsed = [event.elapsed_s for event in events]
    assert elapsed == sorted(elapsed)
    # At least one event a second while training (steps take well under 0.5 s here).
    train_times = [event.elapsed_s for event in train]
    assert max(b - a for a, b in itertools.pairwise(train_times)) < 2.0
    assert events[-1].eta_s == 0


def test_time_budget_returns_the_best_student(teacher, data) -> None:
    train = TransferSet(data["train"].images[:320], data["train"].labels[:320])
    # The safety net alone: the schedule is not fitted to the budget (tests/compression/test_budget_fit.py).
    config = _config("ghost", epochs=500, time_budget_s=2.0, fit_schedule_to_budget=False)
    started = time.perf_counter()
    result = distill(teacher, _student("ghost"), train, data["val"], config)
    assert time.perf_counter() - started < 2.0 + 2.0
    assert result.stopped_reason == "time_budget"
    assert 1 <= result.global_step < 500 * 10
    best = max(reversed(result.history), key=lambda record: record.val_metric)  # ties: the later state
    assert result.best_metric == best.val_metric and result.best_epoch == best.epoch
    # The returned weights are the best state's, not the last ones.
    again = evaluate(result.student, teacher, data["val"].images, data["val"].labels)
    assert again.student_accuracy == result.best_metric
    assert result.evaluation is not None and result.evaluation.student_accuracy == result.best_metric


def test_exhausted_time_budget_still_returns_the_initial_student(teacher, data) -> None:
    student = _student("ghost")
    initial = {name: value.clone() for name, value in student.state_dict().items()}
    # The budget runs out before the teacher's outputs are complete: nothing was trained or evaluated.
    result = distill(teacher, student, data["train"], data["val"], _config("ghost", time_budget_s=1e-3))
    assert result.stopped_reason == "time_budget" and result.global_step == 0
    assert result.best_epoch == 0 and result.history == [] and result.evaluation is None
    assert all(torch.equal(value, initial[name]) for name, value in result.student.state_dict().items())


def test_cancel_from_the_progress_callback(teacher, data) -> None:
    student = _student("binary")
    initial = {name: value.clone() for name, value in student.state_dict().items()}

    def cancel_when_training(event: DistillProgress) -> None:
        if event.stage == "train":
            raise DistillCancelled

    dataset = torch.utils.data.TensorDataset(data["train"].images[:256], data["train"].labels[:256])
    result = distill(teacher, student, dataset, data["val"], _config("binary"), on_progress=cancel_when_training)
    assert result.stopped_reason == "cancelled" and result.global_step == 1
    # Only the initial student was evaluated: it is what comes back.
    assert result.best_epoch == 0
    assert all(torch.equal(value, initial[name]) for name, value in result.student.state_dict().items())


def test_cancel_during_validation_keeps_that_validation(teacher, data) -> None:
    def cancel_in_first_epoch_validation(event: DistillProgress) -> None:
        if event.stage == "validate" and event.epoch == 1:
            raise DistillCancelled

    train = TransferSet(data["train"].images[:256], data["train"].labels[:256])
    result = distill(
        teacher, _student("ghost"), train, data["val"], _config("ghost"), on_progress=cancel_in_first_epoch_validation
    )
    assert result.stopped_reason == "cancelled" and result.global_step == 256 // 32
    assert [record.epoch for record in result.history] == [0, 1]


def test_cancel_with_should_stop_and_callback_errors_propagate(teacher, data) -> None:
    polls = []

    def stop_after_three_polls() -> bool:
        polls.append(None)
        return len(polls) > 3

    train = (data["train"].images[:256], None)  # no labels: KD only
    result = distill(
        teacher, _student("ghost"), train, data["val"], _config("ghost"), should_stop=stop_after_three_polls
    )
    assert result.stopped_reason == "cancelled" and result.global_step < 3

    def broken(event: DistillProgress) -> None:
        raise RuntimeError("progress bar broke")

    with pytest.raises(RuntimeError, match="progress bar broke"):
        distill(teacher, _student("ghost"), train, data["val"], _config("ghost"), on_progress=broken)


class _ConstantStudent(nn.Module):
    """Predicts the same class for every image whatever its (gradient-free) parameter: every epoch validates alike."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.register_buffer("logits", torch.arange(TASK_CLASSES, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), -1) + 0.0 * self.unused


def test_ties_keep_the_later_state(teacher, data) -> None:
    config = _config("ghost", epochs=3)
    result = distill(teacher, _ConstantStudent(), data["train"].images[:64], data["val"], config)
    assert len({record.val_metric for record in result.history}) == 1
    assert result.best_epoch == 3


def test_monitoring_training_images_selects_by_agreement_even_with_labels(teacher, data) -> None:
    config = _config("ghost", epochs=1)
    train = TransferSet(data["train"].images[:320], data["train"].labels[:320])
    result = distill(teacher, _student("ghost"), train, None, config)
    # Labels of training images are fitted and saturate; agreement with the teacher still separates states.
    assert result.metric == "agreement"
    assert result.best_metric == max(record.val_agreement for record in result.history)


def test_without_validation_labels_selects_by_agreement(teacher, data) -> None:
    config = _config("ghost", epochs=1, robust=False, class_balanced=False, ce_weight=0.0)
    unlabelled_val = TransferSet(data["val"].images)
    result = distill(teacher, _student("ghost"), data["train"].images[:320], unlabelled_val, config)
    assert result.metric == "agreement"
    assert result.history[-1].val_accuracy is None and result.evaluation is not None
    assert result.evaluation.student_accuracy is None and result.evaluation.num_labelled == 0


# ---------------------------------------------------------------------------------- checkpoints and resume

_RESUME_JOB_SETUP = """
import time

import torch
from torch import nn

from compression import create_student
from compression.distill import TransferSet, default_config, distill
from tests.fashion_mnist import task_images

torch.set_num_threads(1)


def build():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 5)
    ).eval()

    def teacher(images):
        with torch.no_grad():
            return net(images) * 5

    images, labels = task_images("train", 300)
    labels = labels.clone()
    labels[100:] = -1  # the mined part of a transfer set has no labels
    val_images, val_labels = task_images("test", 100)
    torch.manual_seed(1)
    student = create_student("ghost", num_classes=5, input_shape=(1, 28, 28), width=0.25)
    config = default_config(
        "ghost", epochs=2, batch_size=32, seed=7, augment_padding=2, checkpoint_every_steps=3,
        checkpoint_every_s=None, num_threads=1, weight_average_epochs=0.5,
    )
    return teacher, student, TransferSet(images, labels), TransferSet(val_images, val_labels), config


def run_job(checkpoint_dir, output, pause_s):
    teacher, student, train, val, config = build()
    should_stop = (lambda: time.sleep(pause_s) or False) if pause_s else None
    result = distill(
        teacher, student, train, val, config, checkpoint_dir=checkpoint_dir or None, should_stop=should_stop
    )
    summary = {
        "state": result.student.state_dict(),
        "history": [[r.epoch, r.train_loss, r.val_metric, r.val_agreement] for r in result.history],
        "resumed_from_step": result.resumed_from_step,
        "global_step": result.global_step,
    }
    torch.save(summary, output)
"""

_RESUME_JOB_MAIN = """
import sys

run_job(sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


def _job(checkpoint_dir: str, output: Path, pause_s: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", _RESUME_JOB_SETUP + _RESUME_JOB_MAIN, checkpoint_dir, str(output), str(pause_s)]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env)


def test_sigkilled_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    # 1. The same run, with checkpoints every 3 steps, slowed down (0.05 s a step) and SIGKILLed right after its
    #    first checkpoint (18 steps in all: 300 // 32 = 9 an epoch). Its weight average is checkpointed too.
    checkpoint_dir = tmp_path / "checkpoints"
    killed = _job(str(checkpoint_dir), tmp_path / "killed.pt", 0.05)
    deadline = time.monotonic() + 120
    while not (checkpoint_dir / CHECKPOINT_FILE).exists():
        assert killed.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "killed.pt").exists()
    checkpoint = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert 3 <= checkpoint["global_step"] < 18 and not checkpoint["finished"]
    # 2. Started again with the same arguments, it resumes mid-run ...
    resumed = _job(str(checkpoint_dir), tmp_path / "resumed.pt", 0.0)
    # 3. ... and ends bitwise equal to an uninterrupted run (here, in this process, without checkpoints).
    job: dict = {}
    exec(_RESUME_JOB_SETUP, job)
    job["run_job"]("", tmp_path / "uninterrupted.pt", 0.0)
    assert resumed.wait(timeout=120) == 0
    expected = torch.load(tmp_path / "uninterrupted.pt", weights_only=True)
    found = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert expected["resumed_from_step"] is None and found["resumed_from_step"] == checkpoint["global_step"]
    assert found["global_step"] == expected["global_step"] == 18
    assert found["state"].keys() == expected["state"].keys()
    for name, value in expected["state"].items():
        assert torch.equal(found["state"][name], value), name
    assert found["history"] == expected["history"]

    # A finished run started again returns its result from the checkpoint, without training; a different run
    # pointed at the same folder is refused.
    teacher, student, train, val, config = job["build"]()
    again = distill(teacher, student, train, val, config, checkpoint_dir=checkpoint_dir)
    assert again.resumed_from_step == 18 and again.train_s > 0 and again.wall_s < 5
    for name, value in expected["state"].items():
        assert torch.equal(again.student.state_dict()[name], value), name
    with pytest.raises(ValueError, match=r"config\.lr"):
        distill(teacher, student, train, val, config.replace(lr=0.05), checkpoint_dir=checkpoint_dir)


# ----------------------------------------------------------------------------------------- config, data


def test_config_json_round_trip_and_validation() -> None:
    config = default_config("binary", epochs=3, time_budget_s=60.0, checkpoint_every_steps=50)
    assert DistillConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="learning_rate, warmup"):
        DistillConfig.from_dict({**config.to_dict(), "warmup": 1, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown DistillConfig field"):
        config.replace(nonsense=1)
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"optimizer": "rmsprop"}, {"schedule": "cyclic"}, {"momentum": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DistillConfig(**bad)
    with pytest.raises(ValueError, match="class_balanced"):
        DistillConfig(robust=True, class_balanced=False)
    with pytest.raises(AttributeError):
        config.lr = 1.0  # frozen


def test_family_defaults() -> None:
    for family in ("ghost", "plain", "adder", "slim", "qnn4", "qnn2"):
        config = default_config(family)
        assert (config.optimizer, config.lr, config.momentum, config.schedule) == ("sgd", 0.1, 0.9, "cosine")
        assert config.weight_decay == 5e-4
    binary = default_config("binary")
    assert (binary.optimizer, binary.lr, binary.weight_decay, binary.schedule) == ("adam", 2e-3, 0.0, "linear")
    assert default_config("adder_resnet20") == default_config("adder")
    # adder students start from a float twin trained for one epoch; binary ones do not (docs/results.md)
    assert default_config("adder").float_stage_epochs == 1 and binary.float_stage_epochs == 0
    assert infer_family(_student("adder")) == "adder" and infer_family(_student("binary")) == "binary"
    assert infer_family(_student("ghost")) == "ghost" and infer_family(nn.Linear(2, 2)) == "plain"


def test_transfer_set_forms() -> None:
    images = torch.rand(6, 1, 8, 8)
    labels = torch.tensor([0, 1, IGNORE_LABEL, 2, IGNORE_LABEL, 1])
    from_tuple = as_transfer_set((images, labels))
    assert from_tuple.has_labels and torch.equal(from_tuple.labels_or_ignore, labels)
    assert not as_transfer_set((images, None)).has_labels
    dataset = torch.utils.data.TensorDataset(images, labels)
    from_dataset = as_transfer_set(dataset)
    assert torch.equal(from_dataset.images, images) and torch.equal(from_dataset.labels, labels)
    with pytest.raises(ValueError, match="labels"):
        TransferSet(images, labels[:3])
    with pytest.raises(TypeError):
        as_transfer_set("images.npz")


def test_evaluate_counts_per_class() -> None:
    class Fixed:
        def __init__(self, classes: list[int]) -> None:
            self.logits = nn.functional.one_hot(torch.tensor(classes), 3).float()

        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            return self.logits[images[:, 0, 0, 0].long()]

    images = torch.arange(6).float().view(6, 1, 1, 1)  # the image is its index
    labels = torch.tensor([0, 0, 1, 1, 2, IGNORE_LABEL])
    student, teacher = Fixed([0, 1, 1, 1, 0, 2]), Fixed([0, 0, 1, 2, 2, 2])
    result = evaluate(student, teacher, images, labels, batch_size=4)
    assert result.num_samples == 6 and result.num_labelled == 5
    assert result.student_accuracy == pytest.approx(3 / 5) and result.teacher_accuracy == pytest.approx(4 / 5)
    assert result.agreement == pytest.approx(3 / 6)
    assert result.per_class_student_accuracy == [0.5, 1.0, 0.0]
    assert result.per_class_teacher_accuracy == [1.0, 0.5, 1.0]
    assert result.class_counts == [2, 2, 1] and result.teacher_class_counts == [2, 1, 3]
    unlabelled = evaluate(student, teacher, images, None).as_dict()
    assert unlabelled["student_accuracy"] is None and unlabelled["per_class_student_accuracy"] == [None] * 3


class _ClassCountingStudent(nn.Module):
    """A linear student whose images encode their teacher class in pixel (0, 0); counts the classes it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.seen_per_epoch: list[list[int]] = []
        self.steps_per_epoch = 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            if not self.seen_per_epoch or sum(self.seen_per_epoch[-1]) >= self.steps_per_epoch:
                self.seen_per_epoch.append([0, 0])
            classes = images[:, 0, 0, 0].round().long()
            counts = torch.bincount(classes, minlength=2).tolist()
            self.seen_per_epoch[-1] = [a + b for a, b in zip(self.seen_per_epoch[-1], counts, strict=True)]
        return self.linear(images.flatten(1))


def _imbalanced_run(**overrides) -> list[list[int]]:
    """Two epochs over 900 images of class 0 and 100 of class 1; the per-epoch class counts the student saw."""
    images = torch.zeros(1000, 1, 2, 2)
    images[900:, 0, 0, 0] = 1.0  # class 1
    images[:, 0, 1, 1] = torch.rand(1000)
    teacher_logits = torch.stack([1.0 - images[:, 0, 0, 0], images[:, 0, 0, 0]], dim=1) * 30.0  # confident
    student = _ClassCountingStudent()
    student.steps_per_epoch = 1000 // 50 * 50  # images per epoch
    config = DistillConfig(
        epochs=2, batch_size=50, checkpoint_every_s=None, ce_weight=0.0, augment=False, num_threads=1, **overrides
    )
    distill(lambda x: x, student, TransferSet(images, None, teacher_logits), None, config)
    return student.seen_per_epoch


def test_class_weights_by_sampling_balance_the_drawn_classes() -> None:
    by_loss = _imbalanced_run(class_weighting="loss")
    assert by_loss == [[900, 100], [900, 100]]  # every sample once per epoch; the weights act on the loss
    by_sampling = _imbalanced_run(class_weighting="sampling")
    assert by_sampling == [[500, 500], [500, 500]]  # drawn in proportion to the weights: half each
    deferred = _imbalanced_run(class_weighting="sampling", class_weight_delay=0.5)
    assert deferred == [[900, 100], [500, 500]]
    unweighted = _imbalanced_run(class_weighting="sampling", class_balanced=False, robust=False)
    assert unweighted == [[900, 100], [900, 100]]
    with pytest.raises(ValueError, match="class_weighting"):
        DistillConfig(class_weighting="oversample")
    with pytest.raises(ValueError, match="class_weight_delay"):
        DistillConfig(class_weight_delay=1.0)
