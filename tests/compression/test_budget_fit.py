"""Fitting the learning-rate schedule to a run's time budget (compression/distill/budget_fit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression import create_student
from compression.distill import TransferSet, default_config, distill
from compression.distill.budget_fit import BUDGET_SHARE, affordable_epochs
from compression.teachers import Teacher
from tests.fashion_mnist import TASK_CLASSES, task_images


def test_affordable_epochs_counts_steps_and_validations_and_keeps_its_bounds() -> None:
    common = {"step_s": 0.1, "validation_s": 1.0, "steps_per_epoch": 10}  # 2 s an epoch
    # From the start: 0.9 x 21 s = 18.9 s buys 9 epochs.
    assert affordable_epochs(remaining_s=21.0, global_step=0, epoch=0, requested=200, **common) == 9
    # Half an epoch and one epoch already behind (25 steps, 1 validation = 3.5 s of the schedule) count too.
    assert affordable_epochs(remaining_s=21.0, global_step=25, epoch=2, requested=200, **common) == 11
    assert affordable_epochs(remaining_s=21.0, global_step=0, epoch=0, requested=4, **common) == 4  # never longer
    assert affordable_epochs(remaining_s=0.5, global_step=3, epoch=0, requested=200, **common) == 1  # never < 1
    assert affordable_epochs(remaining_s=-5.0, global_step=30, epoch=3, requested=200, **common) == 4
    assert BUDGET_SHARE < 1
    with pytest.raises(ValueError, match="steps_per_epoch"):
        affordable_epochs(remaining_s=1.0, step_s=0.1, validation_s=0.0, steps_per_epoch=0, global_step=0, epoch=0,
                          requested=1)  # fmt: skip


@pytest.fixture(scope="module")
def data() -> dict[str, TransferSet]:
    images, labels = task_images("train", 640)
    val_images, val_labels = task_images("test", 200)
    return {"train": TransferSet(images, labels), "val": TransferSet(val_images, val_labels)}


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_student("ghost", num_classes=TASK_CLASSES, input_shape=(1, 28, 28), width=0.25)


def _config(**overrides):
    settings = {"batch_size": 32, "num_threads": 1, "checkpoint_every_s": None, "augment": False}
    return default_config("ghost", **{**settings, **overrides})


def test_a_budgeted_run_shortens_its_schedule_and_ends_annealed(trained_teacher: Teacher, data) -> None:
    config = _config(epochs=500, time_budget_s=6.0, fit_schedule_to_budget=True)
    result = distill(trained_teacher, _student(), data["train"], data["val"], config)
    epochs_run = [record.epoch for record in result.history if not record.partial]
    # 500 epochs would take minutes: the schedule was cut to what 6 s afford and (load allowing) run to its end,
    # where the learning rate is near zero, instead of stopping inside the 25-epoch warm-up near its start.
    assert 2 <= max(epochs_run) < 100
    last_lr = result.history[-1].lr
    assert last_lr < 0.2 * config.lr
    assert result.stopped_reason in ("completed", "time_budget")
    # Without fitting, the same budget stops inside the warm-up: the rate is still rising and small.
    unfitted = distill(
        trained_teacher, _student(), data["train"], data["val"], config.replace(fit_schedule_to_budget=False)
    )
    assert unfitted.stopped_reason == "time_budget"
    unfitted_lrs = [record.lr for record in unfitted.history[1:]]
    assert unfitted_lrs == sorted(unfitted_lrs) and unfitted_lrs[-1] > last_lr
    # A budget the requested schedule fits in keeps it, and the timed steps leave no trace: the result is the one
    # of the same run without a budget, to the bit.
    short = distill(
        trained_teacher,
        _student(),
        data["train"],
        data["val"],
        _config(epochs=2, time_budget_s=600.0, fit_schedule_to_budget=True),
    )
    plain = distill(trained_teacher, _student(), data["train"], data["val"], _config(epochs=2))
    assert short.stopped_reason == "completed" and short.history[-1].epoch == 2
    assert [r.train_loss for r in short.history] == [r.train_loss for r in plain.history]
    for name, value in plain.student.state_dict().items():
        assert torch.equal(short.student.state_dict()[name], value), name


def test_a_resumed_run_keeps_its_fitted_schedule(trained_teacher: Teacher, data, tmp_path: Path) -> None:
    config = _config(epochs=500, time_budget_s=10.0, checkpoint_every_steps=5, fit_schedule_to_budget=True)
    steps = {"n": 0}

    def stop_after_40_steps() -> bool:
        steps["n"] += 1
        return steps["n"] > 40

    first = distill(
        trained_teacher, _student(), data["train"], data["val"], config, checkpoint_dir=tmp_path,
        should_stop=stop_after_40_steps,
    )  # fmt: skip
    assert first.stopped_reason == "cancelled"
    saved = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    fitted = saved["fitted_epochs"]
    assert fitted is not None and 2 <= fitted < 500
    # Started again with the same (requested) config: the fingerprint matches and the fitted length is kept.
    resumed = distill(trained_teacher, _student(), data["train"], data["val"], config, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == saved["global_step"]
    assert max(record.epoch for record in resumed.history) <= fitted
    assert resumed.stopped_reason == "time_budget" or resumed.history[-1].epoch == fitted


def test_a_budgeted_two_stage_run_keeps_its_float_epoch_and_fits_the_rest(trained_teacher: Teacher, data) -> None:
    torch.manual_seed(0)
    student = create_student("adder", num_classes=TASK_CLASSES, input_shape=(1, 28, 28), width=0.25)
    config = default_config(
        "adder",
        batch_size=32,
        num_threads=1,
        checkpoint_every_s=None,
        augment=False,
        time_budget_s=16.0,
        fit_schedule_to_budget=True,
    )
    assert config.epochs == 200 and config.float_stage_epochs == 1
    result = distill(trained_teacher, student, data["train"], data["val"], config)
    # The full-precision twin gets a quarter of the budget, not 1/201 of it: its epoch completes ...
    assert result.float_stage is not None and result.float_stage.stopped_reason == "completed"
    assert [record.epoch for record in result.float_stage.history] == [0, 1]
    # ... and the adder stage fits its schedule into the rest and ends near a zero rate.
    assert 1 <= max(record.epoch for record in result.history) < 200
    assert result.history[-1].lr < 0.2 * config.lr
