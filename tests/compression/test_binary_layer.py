"""BinaryConv2d (BBG, arXiv:1909.12117): forward/backward, gate, conversion, deploy, ONNX, costs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.layers.binary import (
    BinaryConv2d,
    binarize_activation,
    binarize_weight,
    pack_sign_bits,
    sign_pm1,
    unpack_sign_bits,
)
from compression.op_counts import OpCounts

# ----------------------------------------------------------------------------- reference definitions


def _ref_sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))


def _ref_forward(layer: BinaryConv2d, x: torch.Tensor) -> torch.Tensor:
    """The layer written out directly: centre, sign (sign(0)=+1), scale, conv, plus gate * x, plus bias."""
    w = layer.weight.detach()
    centred = w - w.mean(dim=(1, 2, 3), keepdim=True)
    scale = centred.abs().mean(dim=(1, 2, 3), keepdim=True)
    wb = scale * _ref_sign(centred)
    xb = _ref_sign(x) if layer.binarize_input else x
    out = F.conv2d(xb, wb, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    if layer.gate is not None:
        out = out + layer.gate.detach().view(1, -1, 1, 1) * x
    if layer.bias is not None:
        out = out + layer.bias.detach().view(1, -1, 1, 1)
    return out


def _with_zeros(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[::5] = 0.0  # exact zeros must binarise to +1
    return x


CONFIGS = [
    # (in, out, kernel, stride, padding, dilation, groups, bias)
    (4, 4, 3, 1, 1, 1, 1, False),
    (4, 4, 3, 1, 1, 1, 2, True),
    (4, 6, 3, 2, 1, 1, 1, True),
    (6, 6, 1, 1, 0, 1, 3, False),
    (3, 3, 3, 1, 2, 2, 1, False),
    (4, 4, (3, 1), 1, (1, 0), 1, 1, True),
]


def _make(cfg: tuple, **kwargs: object) -> BinaryConv2d:
    cin, cout, k, s, p, d, g, b = cfg
    layer = BinaryConv2d(cin, cout, k, s, p, d, g, b, **kwargs)
    if layer.gate is not None:
        with torch.no_grad():
            layer.gate.uniform_(-1.0, 1.0)  # non-trivial gate (default init is 0)
    return layer


# ----------------------------------------------------------------------------- forward


def test_sign_pm1_maps_zero_to_plus_one() -> None:
    t = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert sign_pm1(t).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("binarize_input", [True, False])
def test_forward_equals_direct_definition(cfg: tuple, binarize_input: bool) -> None:
    torch.manual_seed(0)
    layer = _make(cfg, binarize_input=binarize_input)
    x = _with_zeros(torch.randn(2, cfg[0], 7, 6))
    torch.testing.assert_close(layer(x), _ref_forward(layer, x), rtol=1e-6, atol=1e-6)


def test_hand_computed_example() -> None:
    """1x1 conv, 2 -> 2 channels, every number worked out by hand (see the comments)."""
    layer = BinaryConv2d(2, 2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 1.0], [-2.0, 0.0]]).view(2, 2, 1, 1))
        layer.gate.copy_(torch.tensor([0.5, 0.25]))
    # centred rows: [1, -1] and [-1, 1]; both scales 1; binary rows [1, -1] and [-1, 1]
    x = torch.tensor([0.5, -2.0]).view(1, 2, 1, 1).requires_grad_(True)
    y = layer(x)  # sign(x) = [1, -1]; conv = [2, -2]; gate*x = [0.25, -0.5]
    assert y.flatten().tolist() == [2.25, -2.5]
    (y.flatten() * torch.tensor([1.0, 2.0])).sum().backward()  # dL/dy = [1, 2]
    # dL/dsign(x) = 1*[1,-1] + 2*[-1,1] = [-1, 1]; the clipped STE keeps x0=0.5 and zeroes x1=-2;
    # plus the gate path gate * dL/dy = [0.5, 0.5]
    assert x.grad.flatten().tolist() == [-0.5, 0.5]
    assert layer.gate.grad.tolist() == [0.5, -4.0]  # dL/dy * x
    # dL/dWb = [[1,-1],[2,-2]]; row o: alpha*G + s*mean(G*s), then centred -> [2,-2] and [4,-4]
    assert layer.weight.grad.flatten().tolist() == [2.0, -2.0, 4.0, -4.0]


def test_conv_sees_exactly_pm1_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    real_conv2d = F.conv2d

    def spy(inp: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(inp.detach().clone())
        return real_conv2d(inp, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    torch.manual_seed(1)
    layer = BinaryConv2d(4, 4, 3, padding=1)
    x = _with_zeros(torch.randn(2, 4, 5, 5))
    layer(x)
    layer.eval().to_deploy()(x)
    assert len(seen) == 2
    for inp in seen:
        assert set(inp.unique().tolist()) == {-1.0, 1.0}
        assert torch.equal(inp, _ref_sign(x))
    seen.clear()
    BinaryConv2d(4, 4, 3, padding=1, binarize_input=False)(x)
    assert torch.equal(seen[0], x)  # binary-weight-only mode leaves activations alone


def test_effective_weights_are_balanced_binary() -> None:
    torch.manual_seed(2)
    layer = BinaryConv2d(8, 5, 3)
    wb = layer.binary_weight().detach()
    for o in range(5):
        values = wb[o].unique()
        assert len(values) <= 2
        assert torch.allclose(values.abs(), values.abs()[0].expand_as(values))
        centred = layer.weight[o] - layer.weight[o].mean()
        torch.testing.assert_close(values.abs().max(), centred.abs().mean())


# ----------------------------------------------------------------------------- backward


@pytest.mark.parametrize("cfg", CONFIGS)
def test_gradients_equal_ste_definitions(cfg: tuple) -> None:
    torch.manual_seed(3)
    layer = _make(cfg)
    x = (torch.randn(2, cfg[0], 7, 6) * 1.5).requires_grad_(True)  # plenty of |x| > 1
    y = layer(x)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)

    w = layer.weight.detach()
    n = w[0].numel()
    centred = w - w.mean(dim=(1, 2, 3), keepdim=True)
    s = _ref_sign(centred)
    alpha = centred.abs().mean(dim=(1, 2, 3), keepdim=True)
    xb = _ref_sign(x.detach())
    geometry = (layer.stride, layer.padding, layer.dilation, layer.groups)

    # input: clipped STE through sign, plus the gate path
    g_xb = torch.nn.grad.conv2d_input(x.shape, alpha * s, grad_y, *geometry)
    expected_x = g_xb * (x.detach().abs() <= 1)
    if layer.gate is not None:
        expected_x = expected_x + layer.gate.detach().view(1, -1, 1, 1) * grad_y
    torch.testing.assert_close(x.grad, expected_x, rtol=1e-5, atol=1e-5)

    # weight: identity STE through sign, differentiable scale, centring projection
    g_wb = torch.nn.grad.conv2d_weight(xb, w.shape, grad_y, *geometry)
    g_centred = alpha * g_wb + s * (g_wb * s).sum(dim=(1, 2, 3), keepdim=True) / n
    expected_w = g_centred - g_centred.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(layer.weight.grad, expected_w, rtol=1e-5, atol=1e-5)

    if layer.gate is not None:
        torch.testing.assert_close(layer.gate.grad, (grad_y * x.detach()).sum(dim=(0, 2, 3)))
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, grad_y.sum(dim=(0, 2, 3)))


def test_activation_ste_clips_outside_unit_interval() -> None:
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.0001, 4.0], requires_grad=True)
    binarize_activation(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_weight_ste_is_identity_through_sign() -> None:
    w = torch.tensor([[10.0, -10.0, 0.0, 4.0]], requires_grad=True)  # far outside [-1, 1]: not clipped
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    binarize_weight(w).backward(g)
    centred = w.detach() - w.detach().mean()
    s, alpha = _ref_sign(centred), centred.abs().mean()
    g_centred = alpha * g + s * (g * s).mean()
    torch.testing.assert_close(w.grad, g_centred - g_centred.mean())
    assert w.grad.abs().min() > 0


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(
        BinaryConv2d(3, 6, 3, padding=1, bias=True),
        nn.BatchNorm2d(6),
        nn.Hardtanh(),
        BinaryConv2d(6, 6, 3, padding=1, bias=True),
    )
    assert net[3].has_gate
    net(torch.randn(4, 3, 6, 6)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- gate


@pytest.mark.parametrize(
    ("args", "kwargs", "has_gate"),
    [
        ((4, 4, 3), {"padding": 1}, True),
        ((4, 4, 1), {}, True),
        ((4, 4, 3), {"padding": "same"}, True),
        ((4, 4, 3), {"padding": 2, "dilation": 2}, True),
        ((4, 4, 3), {"padding": 1, "groups": 4}, True),
        ((4, 4, 3), {"padding": 1, "gated_residual": False}, False),
        ((4, 8, 3), {"padding": 1}, False),
        ((4, 4, 3), {"padding": 1, "stride": 2}, False),
        ((4, 4, 3), {}, False),
        ((4, 4, 3), {"padding": "valid"}, False),
        ((4, 4, 2), {"padding": 1}, False),
        ((4, 4, (3, 1)), {"padding": (1, 1)}, False),
    ],
)
def test_gate_exists_only_where_shapes_allow(args: tuple, kwargs: dict, has_gate: bool) -> None:
    layer = BinaryConv2d(*args, **kwargs)
    assert layer.has_gate is has_gate
    assert ("gate" in dict(layer.named_parameters())) is has_gate
    x = torch.randn(1, args[0], 6, 6)
    if has_gate:
        assert layer(x).shape == x.shape
        assert torch.equal(layer.gate, torch.zeros(args[1]))  # default init 0


def test_gate_init_is_configurable() -> None:
    layer = BinaryConv2d(4, 4, 3, padding=1, gate_init=1.0)
    assert torch.equal(layer.gate, torch.ones(4))


# ----------------------------------------------------------------------------- conversion


def test_from_conv2d_copies_geometry_and_weights() -> None:
    torch.manual_seed(5)
    conv = nn.Conv2d(6, 6, 3, stride=1, padding=2, dilation=2, groups=3, bias=True)
    layer = BinaryConv2d.from_conv2d(conv)
    assert (layer.in_channels, layer.out_channels, layer.groups) == (6, 6, 3)
    geometry = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    assert geometry == ((3, 3), (1, 1), (2, 2), (2, 2))
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.weight.data_ptr() != conv.weight.data_ptr()
    assert layer.has_gate and torch.equal(layer.gate, torch.zeros(6))
    x = _with_zeros(torch.randn(2, 6, 8, 8))
    torch.testing.assert_close(layer(x), _ref_forward(layer, x))
    strided = BinaryConv2d.from_conv2d(nn.Conv2d(3, 8, 3, 2, 1, bias=False), binarize_input=False)
    assert not strided.has_gate and strided.bias is None and not strided.binarize_input
    assert strided(torch.randn(1, 3, 9, 9)).shape == (1, 8, 5, 5)
    same = BinaryConv2d.from_conv2d(nn.Conv2d(4, 4, 3, padding="same"))
    assert same.padding == "same" and same.has_gate


def test_from_conv2d_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match=r"nn\.Conv2d"):
        BinaryConv2d.from_conv2d(nn.Linear(3, 3))
    with pytest.raises(TypeError):
        BinaryConv2d.from_conv2d(BinaryConv2d(3, 3, 3))
    with pytest.raises(ValueError, match="padding_mode"):
        BinaryConv2d.from_conv2d(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0, 4, 3), {}, ValueError),
        ((4.0, 4, 3), {}, TypeError),
        ((4, 6, 3), {"groups": 4}, ValueError),
        ((4, 4, 0), {}, ValueError),
        ((4, 4, 3), {"stride": 0}, ValueError),
        ((4, 4, 3), {"padding": -1}, ValueError),
        ((4, 4, 3), {"padding": "full"}, ValueError),
        ((4, 4, 3), {"padding": "same", "stride": 2}, ValueError),
        ((4, 4, (3, 3, 3)), {}, TypeError),
        ((4, 4, 3), {"bias": 1}, TypeError),
        ((4, 4, 3), {"gate_init": float("nan")}, ValueError),
    ],
)
def test_constructor_validation(args: tuple, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        BinaryConv2d(*args, **kwargs)


def test_forward_validation() -> None:
    layer = BinaryConv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="input channels"):
        layer(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="4-D"):
        layer(torch.randn(4, 5, 5))


# ----------------------------------------------------------------------------- deploy


def test_deploy_form_matches_training_form_in_eval() -> None:
    torch.manual_seed(6)
    layer = _make((4, 4, 3, 1, 1, 1, 1, True)).eval()
    x = _with_zeros(torch.randn(3, 4, 6, 6))
    expected = layer(x)
    assert layer.to_deploy() is layer and layer.deployed
    # the scale is applied after the convolution in the deploy form: equal up to float rounding
    torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)
    assert layer.packed_sign_bits.dtype == torch.uint8
    assert layer.packed_sign_bits.numel() == math.ceil(layer.weight.numel() / 8)
    assert not {"packed_sign_bits", "deploy_scale"} & set(layer.state_dict())
    # the packed weights are really used: changing the latent weights does not change the deployed output
    deployed = layer(x)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    assert torch.equal(layer(x), deployed)
    layer.train()
    with pytest.raises(RuntimeError, match="undeploy"):
        layer(x)
    layer.undeploy().eval()
    assert not layer.deployed and layer.packed_sign_bits is None
    assert not torch.equal(layer(x), deployed)


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 77])
def test_sign_bits_round_trip(numel: int) -> None:
    values = torch.randn(numel)
    values[0] = 0.0  # sign(0) = +1
    packed = pack_sign_bits(values)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel / 8)
    torch.testing.assert_close(unpack_sign_bits(packed, values.shape, torch.float32), sign_pm1(values))
    # most significant bit first: +1, -1, -1, ... -> 0b1000_0000 for a leading +1 followed by negatives
    assert pack_sign_bits(torch.tensor([1.0, -1, -1, -1, -1, -1, -1, -1])).item() == 0b1000_0000


# ----------------------------------------------------------------------------- ONNX


def _small_binary_net() -> nn.Module:
    torch.manual_seed(7)
    binary = BinaryConv2d(8, 8, 3, padding=1)
    with torch.no_grad():
        binary.gate.uniform_(-0.5, 0.5)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # bias-free stem: zero image regions stay exactly 0
        binary,
        nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    with torch.no_grad():
        net[2].running_mean.uniform_(-1.0, 1.0)
        net[2].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("deploy", [False, True])
def test_onnx_export_identical_top1(tmp_path: Path, deploy: bool) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = _small_binary_net()
    if deploy:
        net[1].to_deploy()
    path = tmp_path / "binary.onnx"
    torch.onnx.export(
        net,
        (torch.randn(2, 3, 8, 8),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )
    model = onnx.load(str(path))
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert "Where" in {node.op_type for node in model.graph.node}

    torch.manual_seed(8)
    x = torch.randn(5, 3, 8, 8)
    x[:, :, :4, :4] = 0.0  # exact zeros reach the sign: sign(0) = +1 must match in onnxruntime
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == (5, 10)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- costs


def _count(layer: BinaryConv2d, x: torch.Tensor) -> OpCounts:
    with torch.no_grad():
        out = layer(x)
    return layer.count_ops((x,), out)


def test_count_ops_values() -> None:
    x = torch.randn(2, 4, 5, 5)
    # gate + bias: out_numel = 2*4*5*5 = 200, macs = 200 * 4 * 9 = 7200
    gated = BinaryConv2d(4, 4, 3, padding=1, bias=True)
    assert _count(gated, x) == OpCounts(macs=7200, multiplications=400, additions=400, binary_ops=7200)
    # no gate (channels change, stride 2), no bias: out [2, 8, 3, 3] = 144, macs = 144 * 4 * 9 = 5184
    strided = BinaryConv2d(4, 8, 3, stride=2, padding=1)
    assert _count(strided, x) == OpCounts(macs=5184, multiplications=144, additions=0, binary_ops=5184)
    # grouped: out_numel 200, macs = 200 * (4/2) * 9 = 3600
    grouped = BinaryConv2d(4, 4, 3, padding=1, groups=2)
    assert _count(grouped, x) == OpCounts(macs=3600, multiplications=400, additions=200, binary_ops=3600)
    # full-precision activations: every MAC is a sign flip + add
    weights_only = BinaryConv2d(4, 4, 3, padding=1, bias=True, binarize_input=False)
    assert _count(weights_only, x) == OpCounts(macs=7200, multiplications=400, additions=7600, binary_ops=0)


def test_packed_weight_bytes() -> None:
    # 144 weights -> 18 bytes; floats: 4 scales + 4 gate + 4 bias = 48 bytes
    assert BinaryConv2d(4, 4, 3, padding=1, bias=True).packed_weight_bytes() == 18 + 48
    # 135 weights -> 17 bytes (rounded up); floats: 5 scales
    assert BinaryConv2d(3, 5, 3, stride=2).packed_weight_bytes() == 17 + 20
    layer = BinaryConv2d(64, 64, 3, padding=1)
    assert layer.packed_weight_bytes() == math.ceil(64 * 64 * 9 / 8) + 4 * 128
    assert layer.packed_weight_bytes() < layer.weight.numel() * 4 / 25
