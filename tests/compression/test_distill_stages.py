"""Two-stage training (a full-precision twin first, then the binary / adder / LSQ student) and progressive binarisation
(compression/distill/stages.py and the trainer), on real Fashion-MNIST images (tests/fashion_mnist.py)."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from compression import create_student
from compression.distill import TransferSet, default_config, distill
from compression.distill.config import float_stage_config
from compression.distill.stages import float_twin, has_low_bit_layers, load_float_twin_
from compression.layers import AdderConv2d, BinaryConv2d
from compression.layers.lsq import LsqConv2d
from tests.fashion_mnist import TASK_CLASSES, task_images

INPUT_SHAPE = (1, 28, 28)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data() -> TransferSet:
    images, labels = task_images("train", 256)
    return TransferSet(images, labels)


def _student(family: str) -> nn.Module:
    torch.manual_seed(0)
    return create_student(family, num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=0.25)


@pytest.mark.parametrize("family", ["binary", "adder", "qnn4"])
def test_float_twin_has_the_same_shape_and_loads_back(family: str) -> None:
    student = _student(family)
    twin = float_twin(student)
    assert has_low_bit_layers(student) and not has_low_bit_layers(twin)
    layer_type = {"binary": BinaryConv2d, "adder": AdderConv2d, "qnn4": LsqConv2d}[family]
    low_bit = {name: m for name, m in student.named_modules() if isinstance(m, layer_type)}
    twin_modules = dict(twin.named_modules())
    for name, layer in low_bit.items():
        conv = twin_modules[name]
        assert type(conv) is nn.Conv2d
        assert conv.weight.shape == layer.weight.shape
        assert (conv.stride, conv.padding, conv.dilation) == (layer.stride, layer.padding, layer.dilation)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.normal_()
    kept = load_float_twin_(student, twin)
    twin_state = twin.state_dict()
    for name, tensor in student.state_dict().items():
        if name in kept:
            assert name not in twin_state or twin_state[name].shape != tensor.shape
            continue
        if family == "adder" and name.removesuffix(".weight") in low_bit:
            # the filter's shape at unit scale
            expected = twin_state[name] / twin_state[name].std()
            torch.testing.assert_close(tensor, expected)
        else:
            torch.testing.assert_close(tensor, twin_state[name])
    if family == "binary":
        assert any(name.endswith(".gate") for name in kept)  # the twin has no gates
    if family == "qnn4":  # the steps are the student's own, set again from the loaded weights on the first batch
        assert all(not bool(layer.initialised) for layer in low_bit.values())
        assert any(name.endswith(".weight_step") for name in kept)


def test_float_stage_config_uses_the_plain_recipe() -> None:
    config = default_config("binary", epochs=3, float_stage_epochs=2, binary_weight_delay=0.5, temperature=2.0)
    stage = float_stage_config(config)
    plain = default_config("plain")
    assert (stage.optimizer, stage.lr, stage.schedule) == (plain.optimizer, plain.lr, plain.schedule)
    assert (stage.epochs, stage.float_stage_epochs, stage.binary_weight_delay) == (2, 0, 0.0)
    assert stage.temperature == 2.0
    with pytest.raises(ValueError, match="binary_weight_delay"):
        default_config("binary", binary_weight_delay=1.0)
    with pytest.raises(ValueError, match="float_stage_epochs"):
        default_config("binary", float_stage_epochs=-1)


def test_two_stage_distillation_starts_the_student_from_the_trained_twin(data: TransferSet, monkeypatch) -> None:
    trainer = importlib.import_module("compression.distill.trainer")
    loaded: list[dict[str, torch.Tensor]] = []
    original = trainer.load_float_twin_

    def recording_load(student: nn.Module, twin: nn.Module) -> list[str]:
        kept = original(student, twin)
        loaded.append({name: value.detach().clone() for name, value in student.state_dict().items()})
        return kept

    monkeypatch.setattr(trainer, "load_float_twin_", recording_load)
    teacher = _student("plain").eval()
    student = _student("binary")
    initial = {name: value.detach().clone() for name, value in student.state_dict().items()}
    config = default_config(
        "binary", epochs=1, float_stage_epochs=1, batch_size=64, num_threads=1, checkpoint_every_s=None
    )
    result = distill(teacher, student, data, None, config)
    assert result.float_stage is not None
    twin = result.float_stage.student
    assert not has_low_bit_layers(twin)
    assert [record.epoch for record in result.float_stage.history] == [0, 1]
    assert [record.epoch for record in result.history] == [0, 1]
    # The binary stage starts from the *trained* twin: the latent weights it loaded are the twin's after its float
    # epoch, not the student's initial ones.
    assert len(loaded) == 1
    twin_state = twin.state_dict()
    conv_weights = [n for n, m in student.named_modules() if isinstance(m, BinaryConv2d)]
    assert conv_weights
    for name in conv_weights:
        torch.testing.assert_close(loaded[0][f"{name}.weight"], twin_state[f"{name}.weight"])
        assert not torch.equal(loaded[0][f"{name}.weight"], initial[f"{name}.weight"])
    assert all(m.binarize_weights for m in student.modules() if isinstance(m, BinaryConv2d))


def test_progressive_binarisation_trains_float_weights_first(data: TransferSet, monkeypatch) -> None:
    seen: list[bool] = []
    original = BinaryConv2d.forward

    def recording_forward(self: BinaryConv2d, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen.append(self.binarize_weights)
        return original(self, x)

    monkeypatch.setattr(BinaryConv2d, "forward", recording_forward)
    student = _student("binary")
    layers = sum(isinstance(m, BinaryConv2d) for m in student.modules())
    config = default_config(
        "binary", epochs=2, binary_weight_delay=0.5, batch_size=128, num_threads=1, checkpoint_every_s=None
    )
    distill(_student("plain").eval(), student, data, None, config)
    steps = len(data) // 128
    assert seen == [False] * (steps * layers) + [True] * (steps * layers)
    assert all(m.binarize_weights for m in student.modules() if isinstance(m, BinaryConv2d))
