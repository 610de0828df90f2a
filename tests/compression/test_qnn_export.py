"""LSQ low-bit students: quantization grid, bit-ops counting and QDQ ONNX export run in ONNX Runtime on real images."""

from __future__ import annotations

import onnx
import pytest
import torch

from compression import create_student, profile
from compression.layers.lsq import LsqConv2d, quant_range
from compression.metrics.bitops import count_bit_ops
from compression.students import Budget
from tests.fashion_mnist import task_images

INPUT = (1, 28, 28)


def _briefly_trained(family: str, width: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_student(family, num_classes=5, input_shape=INPUT, width=width)
    x, y = task_images("train", 256)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for start in range(0, 256, 64):
        loss = torch.nn.functional.cross_entropy(model(x[start : start + 64]), y[start : start + 64])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.mark.parametrize("bits", [2, 4])
def test_lsq_layer_uses_only_bits_wide_integers(bits: int) -> None:
    layer = LsqConv2d(8, 4, 3, 1, 1, weight_bits=bits, activation_bits=bits)
    layer.train()
    layer(torch.rand(2, 8, 6, 6))  # initialises the steps
    low, high = quant_range(bits, signed=True)
    levels = layer.quantized_weight() / layer.weight_step
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.min() >= low and levels.max() <= high
    assert len(torch.unique(levels.round())) <= 2**bits


def test_only_integer_padding_converts_to_lsq() -> None:
    layer = LsqConv2d.from_conv2d(torch.nn.Conv2d(4, 8, 3, padding=1), bits=2)
    assert (layer.padding, layer.weight_bits, layer.activation_bits) == ((1, 1), 2, 2)
    with pytest.raises(ValueError, match="integer padding"):
        LsqConv2d.from_conv2d(torch.nn.Conv2d(4, 8, 3, padding="same"))


def test_bit_ops_budget_widens_lower_bit_students() -> None:
    teacher = create_student("resnet20", num_classes=5, input_shape=INPUT, width=2.0)
    budget = Budget(count_bit_ops(teacher, INPUT), 1 / 64, "bitops")
    four = create_student("qnn4", num_classes=5, input_shape=INPUT, budget=budget)
    two = create_student("qnn2", num_classes=5, input_shape=INPUT, budget=budget)
    assert count_bit_ops(four, INPUT) <= budget.limit and count_bit_ops(two, INPUT) <= budget.limit
    widths = [stage[0].bn2.num_features for stage in four.stages], [stage[0].bn2.num_features for stage in two.stages]
    assert widths[1][-1] > widths[0][-1] > 64  # wider than ResNet-20's 64, and wider still at 2 bits


@pytest.mark.parametrize("family", ["qnn4", "qnn2"])
def test_qnn_student_exports_to_qdq_onnx_that_onnx_runtime_runs_on_real_images(family: str, tmp_path) -> None:
    model = _briefly_trained(family, width=0.5)
    images, _ = task_images("test", 24)
    result = profile(
        model,
        INPUT,
        onnx_path=tmp_path / "qnn.onnx",
        latency=False,
        atol=1e-3,
        sample_inputs=[images[:8], images[8:]],
    )
    assert result.verification is not None and result.verification.passed
    assert result.verification.num_samples == 24
    ops = {node.op_type for node in onnx.load(str(tmp_path / "qnn.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    bits = 4 if family == "qnn4" else 2
    low_bit = [layer for layer in result.ops.layers if layer.counts.bit_ops]
    assert low_bit and all(layer.counts.bit_ops == layer.counts.macs * bits * bits for layer in low_bit)
    float_macs = result.macs - sum(layer.counts.macs for layer in low_bit)
    assert result.bit_ops == sum(layer.counts.bit_ops for layer in low_bit) + float_macs * 32 * 32
