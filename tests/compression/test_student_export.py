"""ONNX parity of every family's student: ghost and adder to 1e-4, binary (trained) with identical top-1."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
import torch.nn.functional as F

from compression import create_student, deploy_, export_onnx
from compression.layers import BinaryConv2d
from tests.fashion_mnist import task_images


@pytest.mark.parametrize(("name", "input_shape"), [("ghost", (1, 28, 28)), ("adder", (3, 32, 32))])
def test_float_students_match_onnx_runtime(tmp_path, name: str, input_shape: tuple[int, int, int]) -> None:
    model = create_student(name, num_classes=5, input_shape=input_shape, width=0.5)
    # Non-trivial batch-norm statistics, so the exported graph is checked on more than identity BNs.
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *input_shape))
    result = export_onnx(model.eval(), tmp_path / "s.onnx", torch.randn(2, *input_shape), atol=1e-4)
    assert result.verification.passed
    assert result.verification.max_abs_diff <= 1e-4
    assert len(set(result.verification.batch_sizes)) >= 2  # dynamic batch exercised


def _train_briefly(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def test_trained_binary_student_has_identical_top1_in_onnx_runtime(tmp_path) -> None:
    x, y = task_images("train", 2000)
    test_x, test_y = task_images("test", 600)
    model = create_student("binary", num_classes=5, input_shape=(1, 28, 28), width=0.5)
    _train_briefly(model, x, y, epochs=1)
    deploy_(model)
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.4  # it learned something (chance is 0.2), so top-1 margins are real
    result = export_onnx(
        model,
        tmp_path / "binary.onnx",
        test_x[:2],
        sample_inputs=[test_x[:300], test_x[300:]],
        atol=float("inf"),
        min_top1_agreement=1.0,
    )
    assert result.verification.top1_agreement == 1.0
    assert result.verification.num_samples == 600
    # The file ships 1-bit weights: each binary layer's signs stay packed 8 to a byte (uint8) in the graph.
    graph = onnx.load(result.path).graph
    packed = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.UINT8}
    binary_layers = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(packed) == len(binary_layers)
    assert sum(math.prod(i.dims) for i in packed.values()) == sum(
        math.ceil(m.weight.numel() / 8) for m in binary_layers
    )
    float_weights = sum(4 * m.weight.numel() for m in binary_layers)
    assert result.file_bytes < float_weights  # smaller than the float32 weights alone
    assert not any(node.metadata_props for node in graph.node)  # no debug stack traces in a shipped file
