"""MACs of models known only as graphs (compression/metrics/graph_ops.py) against the layer-walking counter."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from compression import count_ops, create_student, load_teacher
from compression.metrics.graph_ops import onnx_macs, teacher_macs, torch_macs

SHAPE = (1, 28, 28)


def _export_onnx(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(2, *SHAPE),), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}}
        )
    return path


@pytest.mark.parametrize("name", ["resnet20", "ghost_resnet20", "vgg16"])
def test_graph_counts_equal_the_layer_counts(name: str, tmp_path: Path) -> None:
    model = create_student(name, num_classes=5, input_shape=SHAPE, width=0.5).eval()
    expected = count_ops(model, SHAPE).total.macs
    assert expected > 0
    assert torch_macs(model, SHAPE) == expected
    if not name.startswith("ghost"):  # GhostModule is not TorchScript-able (a user's teacher would be)
        assert torch_macs(torch.jit.script(model), SHAPE) == expected
    assert onnx_macs(str(_export_onnx(model, tmp_path / "m.onnx")), SHAPE) == expected


def test_teacher_macs_for_each_format(tmp_path: Path) -> None:
    model = create_student("resnet20", num_classes=5, input_shape=SHAPE, width=0.5).eval()
    expected = count_ops(model, SHAPE).total.macs
    scripted = tmp_path / "t.pt"
    torch.jit.save(torch.jit.script(model), str(scripted))
    assert teacher_macs(load_teacher(scripted, input_shape=SHAPE)) == expected
    onnx_file = _export_onnx(model, tmp_path / "t.onnx")
    assert teacher_macs(load_teacher(onnx_file)) == expected


def test_onnx_macs_needs_one_image_input(tmp_path: Path) -> None:
    class TwoInputs(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    path = tmp_path / "two.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoInputs(), (torch.zeros(1, *SHAPE), torch.zeros(1, *SHAPE)), str(path), dynamo=False)
    with pytest.raises(ValueError, match="one image input"):
        onnx_macs(str(path), SHAPE)
