"""Tests for the AdderNet layer (compression/layers/adder.py; Chen et al., arXiv:1912.13200)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compression.layers._adder_torch_kernel as torch_kernel_module
from compression.layers.adder import (
    DEFAULT_ETA,
    AdderConv2d,
    adder_conv2d,
    adder_conv2d_reference,
    scale_adder_gradients_,
    set_adder_kernel,
)
from compression.op_counts import OpCounts

# (kernel, stride, padding, dilation): square and non-square kernels, strides, paddings, dilations.
GEOMETRIES = [
    ((3, 3), 1, 1, 1),
    ((1, 1), 1, 0, 1),
    ((2, 3), (2, 1), (0, 2), (1, 2)),
    ((3, 2), 3, (2, 1), (2, 1)),
    ((5, 5), 2, 2, 1),
    ((1, 4), (1, 3), (0, 1), 1),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def paper_gradients(
    x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor, stride, padding, dilation
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's eq. 5-6 by direct broadcast: dW = sum G (X - W), dX = fold(sum_o G clamp(W - X, -1, 1))."""
    out_channels, _, kernel_h, kernel_w = weight.shape
    geometry = {"dilation": dilation, "padding": padding, "stride": stride}
    columns = F.unfold(x, (kernel_h, kernel_w), **geometry)  # [N, K, L]
    x_minus_w = columns.unsqueeze(1) - weight.reshape(1, out_channels, -1, 1)  # [N, O, K, L]
    grad = grad_output.reshape(grad_output.shape[0], out_channels, 1, -1)
    grad_weight = (grad * x_minus_w).sum(dim=(0, 3)).view_as(weight)
    grad_columns = (grad * (-x_minus_w).clamp(-1, 1)).sum(dim=1)
    grad_input = F.fold(grad_columns, x.shape[2:], (kernel_h, kernel_w), **geometry)
    return grad_input, grad_weight


def relative_error(result: torch.Tensor, expected: torch.Tensor) -> float:
    return ((result - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def random_case(
    kernel, dtype=torch.float64, batch=2, in_channels=3, out_channels=4, size=(9, 11)
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, in_channels, *size, dtype=dtype)
    weight = torch.randn(out_channels, in_channels, *kernel, dtype=dtype) * 0.7
    return x, weight


# ----------------------------------------------------------------------------------------------- forward


def test_reference_matches_explicit_loops() -> None:
    x, weight = random_case((2, 3), batch=1, in_channels=2, out_channels=2, size=(4, 5))
    stride, padding, dilation = (2, 1), (1, 0), (1, 2)
    expected = adder_conv2d_reference(x, weight, stride, padding, dilation)
    padded = F.pad(x, (0, 0, 1, 1))
    for o in range(2):
        for ho in range(expected.shape[2]):
            for wo in range(expected.shape[3]):
                total = 0.0
                for c in range(2):
                    for i in range(2):
                        for j in range(3):
                            pixel = padded[0, c, ho * 2 + i, wo + 2 * j]
                            total += abs(pixel.item() - weight[o, c, i, j].item())
                assert expected[0, o, ho, wo].item() == pytest.approx(-total, abs=1e-12)


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(kernel, stride, padding, dilation, dtype) -> None:
    x, weight = random_case(kernel, dtype)
    expected = adder_conv2d_reference(x, weight, stride, padding, dilation)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    with torch.no_grad():  # inference path
        fast = adder_conv2d(x, weight, None, stride, padding, dilation)
    trained = adder_conv2d(x, weight.requires_grad_(), None, stride, padding, dilation)  # autograd path
    assert fast.shape == expected.shape
    assert relative_error(fast, expected) < tolerance
    assert relative_error(trained.detach(), expected) < tolerance


def test_forward_bias_and_memory_formats() -> None:
    layer = AdderConv2d(3, 5, 3, padding=1, bias=True).double()
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    expected = adder_conv2d_reference(x, layer.weight, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), expected)
    wide = torch.randn(2, 3, 8, 14, dtype=torch.float64)
    torch.testing.assert_close(layer(wide[:, :, :, ::2]), layer(wide[:, :, :, ::2].contiguous()))


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), GEOMETRIES)
def test_gradients_match_paper_formulas(kernel, stride, padding, dilation) -> None:
    x, weight = random_case(kernel)
    x.requires_grad_()
    weight.requires_grad_()
    out = adder_conv2d(x, weight, None, stride, padding, dilation)
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    expected_input, expected_weight = paper_gradients(
        x.detach(), weight.detach(), grad_output, stride, padding, dilation
    )
    assert relative_error(x.grad, expected_input) < 1e-5
    assert relative_error(weight.grad, expected_weight) < 1e-5


def test_gradient_signs_on_a_single_tap() -> None:
    # One input pixel x, one weight w, no padding: Y = -|x - w|, dY/dw = x - w, dY/dx = clamp(w - x, -1, 1).
    x = torch.tensor([[[[0.5]]]], dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[[[3.0]]]], dtype=torch.float64, requires_grad=True)
    adder_conv2d(x, weight).sum().backward()
    assert weight.grad.item() == pytest.approx(0.5 - 3.0)
    assert x.grad.item() == pytest.approx(1.0)  # clamp(3 - 0.5) = 1


@pytest.mark.parametrize(
    ("patch_chunk", "clamp_chunk"),
    [(1 << 20, 1 << 19), (200, 300), (30, 50), (1, 1)],  # whole images, row bands, row pieces, one position
)
def test_gradients_independent_of_chunking(monkeypatch, request, patch_chunk, clamp_chunk) -> None:
    monkeypatch.setattr(torch_kernel_module, "_CPU_PATCH_CHUNK_ELEMENTS", patch_chunk)
    monkeypatch.setattr(torch_kernel_module, "_CPU_CLAMP_CHUNK_ELEMENTS", clamp_chunk)
    previous = set_adder_kernel("torch")  # the chunking belongs to the PyTorch-operator kernel
    request.addfinalizer(lambda: set_adder_kernel(previous))
    kernel, stride, padding, dilation = (2, 3), (2, 1), (0, 2), (1, 2)
    x, weight = random_case(kernel, batch=3)
    x.requires_grad_()
    weight.requires_grad_()
    out = adder_conv2d(x, weight, None, stride, padding, dilation)
    torch.testing.assert_close(out, adder_conv2d_reference(x, weight, stride, padding, dilation))
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    expected_input, expected_weight = paper_gradients(
        x.detach(), weight.detach(), grad_output, stride, padding, dilation
    )
    assert relative_error(x.grad, expected_input) < 1e-5
    assert relative_error(weight.grad, expected_weight) < 1e-5


@pytest.mark.parametrize("needs", ["input", "weight"])
def test_gradient_for_one_argument_only(needs) -> None:
    x, weight = random_case((3, 3))
    (x if needs == "input" else weight).requires_grad_()
    out = adder_conv2d(x, weight, None, 1, 1)
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    expected_input, expected_weight = paper_gradients(x.detach(), weight.detach(), grad_output, 1, 1, 1)
    if needs == "input":
        assert weight.grad is None
        assert relative_error(x.grad, expected_input) < 1e-5
    else:
        assert x.grad is None
        assert relative_error(weight.grad, expected_weight) < 1e-5


def test_every_parameter_gets_a_gradient_in_a_small_net() -> None:
    net = nn.Sequential(
        AdderConv2d(3, 8, 3, padding=1, bias=True),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    x = torch.randn(4, 3, 10, 10, requires_grad=True)
    loss = F.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------- module surface


def test_module_geometry_parameters_and_repr() -> None:
    layer = AdderConv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2))
    assert layer.weight.shape == (6, 4, 3, 2)
    assert layer.bias is None
    geometry = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    assert geometry == ((3, 2), (2, 1), (1, 1), (1, 2))
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    # standard-normal templates, on the scale of the batch-normalised inputs they are compared with
    big = AdderConv2d(16, 32, 3)
    weights = big.weight.detach()
    assert abs(float(weights.std()) - 1) < 0.05 and abs(float(weights.mean())) < 0.05
    assert repr(layer) == (
        "AdderConv2d(4, 6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), bias=False)"
    )
    assert [name for name, _ in AdderConv2d(2, 2, 1, bias=True).named_parameters()] == ["weight", "bias"]


def test_from_conv2d_copies_weights_and_geometry() -> None:
    conv = nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), bias=True).double()
    layer = AdderConv2d.from_conv2d(conv)
    assert isinstance(layer, AdderConv2d)
    assert (layer.in_channels, layer.out_channels) == (3, 5)
    geometry = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    assert geometry == ((3, 2), (1, 2), (1, 0), (2, 1))
    assert layer.weight.dtype == torch.float64
    torch.testing.assert_close(layer.weight, conv.weight)
    torch.testing.assert_close(layer.bias, conv.bias)
    assert layer.weight.data_ptr() != conv.weight.data_ptr()  # a copy, not shared storage
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert layer(x).shape == conv(x).shape
    assert AdderConv2d.from_conv2d(nn.Conv2d(2, 2, 3, bias=False)).bias is None
    assert AdderConv2d.from_conv2d(nn.Conv2d(2, 2, 3, padding="same")).padding == (1, 1)


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda: AdderConv2d(4, 4, 3, groups=2), ValueError, "groups=2 is unsupported"),
        (lambda: AdderConv2d(4, 4, 0), ValueError, "kernel_size"),
        (lambda: AdderConv2d(4, 4, 3, stride=0), ValueError, "stride"),
        (lambda: AdderConv2d(4, 4, 3, padding=-1), ValueError, "padding"),
        (lambda: AdderConv2d(4, 4, 3, dilation=(1, 0)), ValueError, "dilation"),
        (lambda: AdderConv2d(4, 4, (3, 3, 3)), TypeError, "kernel_size"),
        (lambda: AdderConv2d(4, 4, 3.0), TypeError, "kernel_size"),
        (lambda: AdderConv2d(4, 4, 3, padding="same"), TypeError, "padding"),
        (lambda: AdderConv2d(0, 4, 3), ValueError, "in_channels"),
        (lambda: AdderConv2d.from_conv2d(nn.Linear(3, 3)), TypeError, "nn.Conv2d"),
        (lambda: AdderConv2d.from_conv2d(nn.Conv2d(4, 4, 3, groups=2)), ValueError, "groups"),
        (lambda: AdderConv2d.from_conv2d(nn.Conv2d(4, 4, 3, padding_mode="reflect")), ValueError, "zeros"),
        (lambda: AdderConv2d.from_conv2d(nn.Conv2d(4, 4, 2, padding="same")), ValueError, "asymmetric"),
    ],
)
def test_invalid_construction_raises(factory, error, message) -> None:
    with pytest.raises(error, match=message):
        factory()


def test_invalid_inputs_raise_with_expected_shape() -> None:
    layer = AdderConv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        layer(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        layer(torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        layer(torch.randn(2, 3, 2, 8))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bias must have shape \[4\]"):
        adder_conv2d(torch.randn(1, 3, 5, 5), layer.weight, torch.zeros(3))
    with pytest.raises(ValueError, match="weight must have shape"):
        adder_conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3))


def test_count_ops() -> None:
    layer = AdderConv2d(3, 4, (3, 2), stride=2, padding=1)
    x = torch.randn(2, 3, 9, 8)
    output = layer(x)
    macs = output.numel() * 3 * 3 * 2
    assert layer.count_ops((x,), output) == OpCounts(macs=macs, multiplications=0, additions=2 * macs)
    with_bias = AdderConv2d(3, 4, (3, 2), stride=2, padding=1, bias=True)
    expected = OpCounts(macs=macs, multiplications=0, additions=2 * macs + output.numel(), binary_ops=0)
    assert with_bias.count_ops((x,), with_bias(x)) == expected


# -------------------------------------------------------------------------------- adaptive learning rate


def test_scale_adder_gradients() -> None:
    used = nn.Sequential(AdderConv2d(3, 4, 3, bias=True), AdderConv2d(4, 5, 1), nn.Conv2d(5, 2, 1))
    net = nn.Sequential(*used, AdderConv2d(2, 2, 1))  # the last adder layer is not run: its grad stays None
    used(torch.randn(2, 3, 6, 6)).square().sum().backward()
    honest = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    assert net[3].weight.grad is None

    assert scale_adder_gradients_(net) == 2
    for layer in (net[0], net[1]):
        expected_norm = DEFAULT_ETA * math.sqrt(layer.weight.numel())
        assert layer.weight.grad.norm().item() == pytest.approx(expected_norm, rel=1e-6)
    scaled_first = net[0].weight.grad / honest["0.weight"]
    assert torch.allclose(scaled_first, scaled_first.flatten()[0].expand_as(scaled_first))  # direction kept
    torch.testing.assert_close(net[0].bias.grad, honest["0.bias"])  # biases untouched
    torch.testing.assert_close(net[2].weight.grad, honest["2.weight"])  # ordinary conv untouched
    assert net[3].weight.grad is None

    assert scale_adder_gradients_(net, eta=1.5) == 2
    assert net[1].weight.grad.norm().item() == pytest.approx(1.5 * math.sqrt(net[1].weight.numel()), rel=1e-6)

    net[1].weight.grad.zero_()
    assert scale_adder_gradients_(net) == 2
    assert torch.count_nonzero(net[1].weight.grad) == 0  # zero norm: stays zero, no NaN

    with pytest.raises(ValueError, match="eta"):
        scale_adder_gradients_(net, eta=0.0)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        scale_adder_gradients_([net])


def test_forward_backward_leave_grad_unscaled() -> None:
    # Without scale_adder_gradients_ the .grad is the honest gradient of the loss.
    layer = AdderConv2d(2, 3, 3).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    out = layer(x)
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    _, expected_weight = paper_gradients(x, layer.weight.detach(), grad_output, 1, 0, 1)
    assert relative_error(layer.weight.grad, expected_weight) < 1e-10


# ------------------------------------------------------------------------------------------------ export


def _calibrated_model() -> nn.Module:
    # momentum=None: cumulative running statistics, so three batches calibrate the BN fully.
    model = nn.Sequential(AdderConv2d(3, 8, 3, stride=2, padding=1, bias=True), nn.BatchNorm2d(8, momentum=None))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 12, 10))  # realistic running statistics -> outputs of order 1
    return model.eval()


@pytest.mark.parametrize("dynamo", [True, False])
@pytest.mark.filterwarnings("ignore:Constant folding:UserWarning")
def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path: Path, dynamo: bool) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = _calibrated_model()
    path = tmp_path / "adder.onnx"
    example = torch.randn(2, 3, 12, 10)
    if dynamo:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
        )
    else:
        with pytest.warns(DeprecationWarning):
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            )
    operators = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not operators & {"Conv", "Cdist", "Col2Im", "Im2Col"}, operators

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 12, 10)  # batch differs from the export example
    with torch.no_grad():
        expected = model(x).numpy()
    (result,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert result.shape == expected.shape
    assert abs(result - expected).max() <= 1e-4
