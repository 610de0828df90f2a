"""int8 post-training quantization of an exported student, verified in ONNX Runtime on real Fashion-MNIST images."""

from __future__ import annotations

import functools

import onnx
import pytest
import torch

from compression import create_student
from compression.export import export_onnx
from compression.export.int8 import quantize_int8
from tests.fashion_mnist import task_images

INPUT = (1, 28, 28)

pytestmark = pytest.mark.slow  # every test uses the float student file, trained for two epochs on 3,000 images


@functools.cache
def _trained_student_file(folder: str) -> str:
    torch.manual_seed(0)
    model = create_student("slim_vgg", num_classes=5, input_shape=INPUT, width=0.5, depth=1, stem_stride=2)
    x, y = task_images("train", 3000)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(2):
        for start in range(0, len(x), 100):
            loss = torch.nn.functional.cross_entropy(model(x[start : start + 100]), y[start : start + 100])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    path = f"{folder}/student.onnx"
    export_onnx(model.eval(), path, x[:2])
    return path


@pytest.fixture(scope="module")
def float_file(tmp_path_factory) -> str:
    return _trained_student_file(str(tmp_path_factory.mktemp("int8")))


def test_int8_student_agrees_with_float_on_held_out_images(float_file: str, tmp_path) -> None:
    calibration, _ = task_images("train", 128)
    test_x, test_y = task_images("test", 400)
    result = quantize_int8(
        float_file,
        tmp_path / "student.int8.onnx",
        calibration.numpy(),
        test_x.numpy(),
        test_y.numpy(),
        max_loss=0.02,
        latency_batch_sizes=(1,),
    )
    assert result.float_accuracy is not None and result.float_accuracy > 0.7  # a trained student, not a constant
    assert result.kept == "int8" and not result.exceeded
    assert result.num_images == 400 and result.top1_agreement >= 0.95
    low, high = result.agreement_interval
    assert low <= result.top1_agreement <= high and high - low < 0.1
    ops = {node.op_type for node in onnx.load(result.int8_path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert result.int8_bytes < result.float_bytes / 2  # int8 weights
    assert set(result.latency_ms) == {"float", "int8"} and result.speedup(1) is not None
    assert "agrees with float" in result.describe()
    assert result.loss_interval is not None and result.loss_interval[0] <= result.loss <= result.loss_interval[1]


def test_int8_loss_over_the_limit_keeps_the_float_file(float_file: str, tmp_path) -> None:
    # Calibrating on blank images gives every activation a range of zero: the int8 model is broken.
    blank = torch.zeros(64, *INPUT)
    test_x, test_y = task_images("test", 300)
    target = tmp_path / "broken.int8.onnx"
    result = quantize_int8(
        float_file, target, blank.numpy(), test_x.numpy(), test_y.numpy(), max_loss=0.01, latency_batch_sizes=()
    )
    assert result.exceeded and result.kept == "float" and result.int8_path is None
    assert not target.exists()
    assert result.loss > 0.01 and "float file is kept" in result.describe()


def test_bad_inputs_are_rejected(float_file: str, tmp_path) -> None:
    images = torch.zeros(4, *INPUT).numpy()
    with pytest.raises(TypeError):
        quantize_int8(float_file, tmp_path / "q.onnx", [1, 2], images)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        quantize_int8(float_file, tmp_path / "q.onnx", images, images, max_loss=2.0)
    with pytest.raises(FileNotFoundError):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", images, images)
