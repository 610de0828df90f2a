"""The moving average of a student's weights (compression/distill/weight_average.py) and the trainer's use of it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression import create_student
from compression.distill import TransferSet, default_config, distill
from compression.distill.weight_average import WeightAverage
from compression.teachers import Teacher
from tests.fashion_mnist import TASK_CLASSES, task_images


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_the_average_follows_the_weights_with_the_step_decays() -> None:
    model = _net()
    average = WeightAverage(model, horizon_steps=4)  # decay 0.75 once the warm-up (1 + t) / (10 + t) exceeds it
    expected = {name: value.clone() for name, value in model.state_dict().items()}
    decays = []
    for step in range(30):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * (step + 1))
            model[1].running_mean.add_(1.0)
        model[1].num_batches_tracked += 1
        decay = average.step_decay()
        decays.append(decay)
        average.update(model)
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                expected[name] = decay * expected[name] + (1 - decay) * value
            else:
                expected[name] = value.clone()
    assert decays[0] == pytest.approx(0.1) and decays[-1] == pytest.approx(0.75)
    assert decays == sorted(decays)
    for name, value in expected.items():
        assert torch.allclose(average.average[name], value, atol=1e-5), name
    assert int(average.average["1.num_batches_tracked"]) == 30
    # The average lags behind weights that keep moving: it is not a copy of the last state.
    assert not torch.allclose(average.average["0.weight"], model.state_dict()["0.weight"])


def test_applied_swaps_the_average_in_and_the_own_weights_back() -> None:
    model = _net()
    average = WeightAverage(model, horizon_steps=10)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    own = model[0].weight.detach().clone()
    with average.applied(model):
        assert torch.equal(model[0].weight, average.average["0.weight"])
        assert not torch.equal(model[0].weight, own)
    assert torch.equal(model[0].weight, own)
    with pytest.raises(RuntimeError, match="inside"), average.applied(model):
        raise RuntimeError("inside")
    assert torch.equal(model[0].weight, own)  # restored after an error too


def test_bad_horizon_and_a_foreign_saved_state_are_refused() -> None:
    for bad in (0, 0.5, float("nan"), True, "4"):
        with pytest.raises(ValueError, match="horizon_steps"):
            WeightAverage(_net(), horizon_steps=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        WeightAverage(object(), horizon_steps=4)  # type: ignore[arg-type]
    average = WeightAverage(_net(), horizon_steps=4)
    other = WeightAverage(nn.Linear(3, 2), horizon_steps=4)
    with pytest.raises(ValueError, match="does not match"):
        average.load_state_dict(other.state_dict())
    copy = WeightAverage(_net(), horizon_steps=4)
    copy.load_state_dict(average.state_dict())
    assert copy.updates == average.updates


def test_a_run_with_weight_averaging_trains_alike_and_returns_the_average(trained_teacher: Teacher) -> None:
    images, labels = task_images("train", 320)
    val_images, val_labels = task_images("test", 200)
    train, val = TransferSet(images, labels), TransferSet(val_images, val_labels)

    def run(**overrides):
        torch.manual_seed(0)
        student = create_student("ghost", num_classes=TASK_CLASSES, input_shape=(1, 28, 28), width=0.25)
        config = default_config(
            "ghost", epochs=2, batch_size=32, num_threads=1, checkpoint_every_s=None, seed=3, **overrides
        )
        return distill(trained_teacher, student, train, val, config)

    plain, averaged = run(), run(weight_average_epochs=0.5)
    # The average only watches: the training steps (and so their losses) are the same.
    assert [r.train_loss for r in averaged.history] == [r.train_loss for r in plain.history]
    # What is validated and returned is the average, which differs from the last weights.
    assert [r.val_agreement for r in averaged.history[1:]] != [r.val_agreement for r in plain.history[1:]]
    returned, last = averaged.student.state_dict(), plain.student.state_dict()
    assert any(not torch.equal(returned[name], last[name]) for name in returned if returned[name].is_floating_point())
    with pytest.raises(ValueError, match="weight_average_epochs"):
        default_config("ghost", weight_average_epochs=-1.0)
