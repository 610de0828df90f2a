"""Ghost module / bottleneck (GhostNet, arXiv:1911.11907) and squeeze-and-excitation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.layers.ghost import GhostBottleneck, GhostModule
from compression.layers.squeeze_excite import SqueezeExcite, hard_sigmoid, make_divisible

_ALLOWED_CHILDREN = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Sequential)


def _ghost_param_formula(cin: int, cout: int, k: int, ratio: int, dw: int) -> int:
    m = math.ceil(cout / ratio)
    new = m * (ratio - 1)
    return k * k * cin * m + dw * dw * new + 2 * (m + new)  # primary conv, depthwise conv, BN affine


def _randomise_bn(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen) * 0.2)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)


# ----------------------------------------------------------------------------- GhostModule


@pytest.mark.parametrize("ratio", [1, 2, 3, 4])
@pytest.mark.parametrize("out_channels", [7, 8, 13])
@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 2), (5, 1), (2, 1)])
def test_ghost_module_shape_matches_same_padded_conv(ratio: int, out_channels: int, kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    module = GhostModule(5, out_channels, kernel, ratio=ratio, stride=stride)
    conv = nn.Conv2d(5, out_channels, kernel, stride, padding=kernel // 2)
    x = torch.randn(2, 5, 9, 10)
    assert module(x).shape == conv(x).shape
    assert module.init_channels == math.ceil(out_channels / ratio)
    assert module.new_channels == module.init_channels * (ratio - 1)
    assert (module.cheap_operation is None) is (ratio == 1)


@pytest.mark.parametrize(("cin", "cout", "k", "ratio", "dw"), [(3, 16, 1, 2, 3), (5, 13, 3, 3, 3), (8, 7, 3, 4, 5)])
def test_ghost_module_param_count_formula(cin: int, cout: int, k: int, ratio: int, dw: int) -> None:
    module = GhostModule(cin, cout, k, ratio=ratio, dw_size=dw)
    assert sum(p.numel() for p in module.parameters()) == _ghost_param_formula(cin, cout, k, ratio, dw)


def test_ghost_module_is_intrinsic_plus_cheap_ghosts() -> None:
    torch.manual_seed(1)
    module = GhostModule(4, 7, 3, ratio=3, relu=True).eval()
    _randomise_bn(module)
    x = torch.randn(2, 4, 6, 6)
    primary_conv, primary_bn = module.primary_conv[0], module.primary_conv[1]
    cheap_conv, cheap_bn = module.cheap_operation[0], module.cheap_operation[1]
    intrinsic = F.relu(primary_bn(F.conv2d(x, primary_conv.weight, padding=1)))
    ghosts = F.relu(cheap_bn(F.conv2d(intrinsic, cheap_conv.weight, padding=1, groups=3)))
    expected = torch.cat([intrinsic, ghosts], dim=1)[:, :7]
    torch.testing.assert_close(module(x), expected)
    torch.testing.assert_close(module(x)[:, :3], intrinsic)  # identity part: the intrinsic maps themselves
    assert not any(isinstance(m, nn.ReLU) for m in GhostModule(4, 7, relu=False).modules())


def test_ghost_children_are_plain_convs() -> None:
    for root in (GhostModule(4, 9, 3, ratio=3), GhostBottleneck(8, 16, 12, 3, 2, se_ratio=0.25)):
        for name, child in root.named_modules():
            if child is root or isinstance(child, (GhostModule, SqueezeExcite)):
                continue
            assert type(child) in _ALLOWED_CHILDREN, name
            assert not hasattr(child, "count_ops"), name
        for conv in (m for m in root.modules() if isinstance(m, nn.Conv2d)):
            assert type(conv) is nn.Conv2d


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ratio": 0}, ValueError),
        ({"ratio": -1}, ValueError),
        ({"ratio": 2.0}, TypeError),
        ({"dw_size": 2}, ValueError),
        ({"dw_size": 0}, ValueError),
        ({"kernel_size": 0}, ValueError),
        ({"stride": 0}, ValueError),
        ({"relu": "yes"}, TypeError),
    ],
)
def test_ghost_module_validation(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        GhostModule(4, 8, **kwargs)


def test_ghost_module_forward_validation() -> None:
    with pytest.raises(ValueError, match="GhostModule expects"):
        GhostModule(4, 8)(torch.randn(1, 3, 5, 5))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 16, 3, 1, 1),
        nn.Conv2d(8, 12, 3, 2, 1, bias=False),
        nn.Conv2d(8, 5, 1, 1, 0),
        nn.Conv2d(4, 6, (3, 5), 1, (1, 2)),
        nn.Conv2d(4, 6, 5, padding="same"),
    ],
)
def test_ghost_from_conv2d_keeps_geometry(conv: nn.Conv2d) -> None:
    module = GhostModule.from_conv2d(conv, ratio=3)
    assert (module.in_channels, module.out_channels) == (conv.in_channels, conv.out_channels)
    assert module.kernel_size == conv.kernel_size and module.stride == conv.stride
    assert module.ratio == 3 and module.relu is False
    x = torch.randn(2, conv.in_channels, 11, 9)
    assert module(x).shape == conv(x).shape


def test_ghost_from_conv2d_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match=r"nn\.Conv2d"):
        GhostModule.from_conv2d(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="grouped"):
        GhostModule.from_conv2d(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    with pytest.raises(ValueError, match="dilated"):
        GhostModule.from_conv2d(nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    with pytest.raises(ValueError, match="padding"):
        GhostModule.from_conv2d(nn.Conv2d(4, 4, 3, padding=0))
    with pytest.raises(ValueError, match="padding"):
        GhostModule.from_conv2d(nn.Conv2d(4, 4, 3, padding=2))
    with pytest.raises(ValueError, match="padding_mode"):
        GhostModule.from_conv2d(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError):
        GhostModule.from_conv2d(nn.Conv2d(4, 4, 3, padding=1), dw_size=4)


# ----------------------------------------------------------------------------- GhostBottleneck


@pytest.mark.parametrize(
    ("cin", "mid", "cout", "k", "stride", "se", "identity"),
    [
        (16, 16, 16, 3, 1, 0.0, True),
        (16, 48, 24, 3, 2, 0.0, False),
        (24, 72, 40, 5, 2, 0.25, False),
        (40, 120, 40, 5, 1, 0.25, True),
        (12, 36, 20, 3, 1, 0.0, False),
        (12, 36, 12, 3, 2, 0.25, False),
    ],
)
def test_ghost_bottleneck_structure_and_shape(
    cin: int, mid: int, cout: int, k: int, stride: int, se: float, identity: bool
) -> None:
    torch.manual_seed(2)
    block = GhostBottleneck(cin, mid, cout, k, stride, se_ratio=se)
    x = torch.randn(2, cin, 9, 8)
    out = block(x)
    assert out.shape == (2, cout, math.ceil(9 / stride), math.ceil(8 / stride))
    assert isinstance(block.shortcut, nn.Identity) is identity
    assert (block.conv_dw is not None) is (stride > 1)
    assert (block.se is not None) is (se > 0)
    assert block.ghost1.relu and not block.ghost2.relu
    if identity:
        block.eval()
        with torch.no_grad():
            residual = block.ghost2(block.se(block.ghost1(x)) if block.se else block.ghost1(x))
        torch.testing.assert_close(block(x), residual + x)


def test_ghost_bottleneck_param_count() -> None:
    block = GhostBottleneck(16, 48, 24, 3, 2, se_ratio=0.25)
    se_rd = make_divisible(48 * 0.25, 4)
    expected = (
        _ghost_param_formula(16, 48, 1, 2, 3)
        + 48 * 9
        + 2 * 48  # strided depthwise conv + BN
        + (48 * se_rd + se_rd)
        + (se_rd * 48 + 48)  # SE 1x1 convs with bias
        + _ghost_param_formula(48, 24, 1, 2, 3)
        + 16 * 9
        + 2 * 16
        + 16 * 24
        + 2 * 24  # shortcut: depthwise + BN + 1x1 + BN
    )
    assert sum(p.numel() for p in block.parameters()) == expected


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(
        GhostModule(3, 13, 3, ratio=3),
        GhostBottleneck(13, 24, 16, 3, 2, se_ratio=0.25),
        GhostBottleneck(16, 32, 16, 5, 1, se_ratio=0.25),
    )
    net(torch.randn(4, 3, 8, 8)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"dw_kernel_size": 4}, ValueError),
        ({"stride": 0}, ValueError),
        ({"se_ratio": -0.1}, ValueError),
        ({"se_ratio": 1.5}, ValueError),
        ({"mid_channels": 0}, ValueError),
    ],
)
def test_ghost_bottleneck_validation(kwargs: dict, error: type[Exception]) -> None:
    args = {"in_channels": 8, "mid_channels": 16, "out_channels": 8} | kwargs
    with pytest.raises(error):
        GhostBottleneck(**args)


# ----------------------------------------------------------------------------- SqueezeExcite


@pytest.mark.parametrize(
    ("v", "divisor", "min_value", "expected"),
    [
        (16, 4, None, 16),
        (18, 4, None, 20),
        (13, 8, None, 16),
        (10, 8, None, 16),
        (3, 8, None, 8),
        (3, 4, 16, 16),
        (8.0, 4, None, 8),
        (37, 8, None, 40),
        (22, 16, None, 32),
    ],
)
def test_make_divisible(v: float, divisor: int, min_value: int | None, expected: int) -> None:
    result = make_divisible(v, divisor, min_value)
    assert result == expected and isinstance(result, int)
    assert result % divisor == 0 and result >= 0.9 * v


def test_make_divisible_validation() -> None:
    with pytest.raises(ValueError):
        make_divisible(16, 0)
    with pytest.raises(ValueError):
        make_divisible(0, 4)
    with pytest.raises(ValueError):
        make_divisible(16, 4, min_value=0)


def test_squeeze_excite_definition() -> None:
    torch.manual_seed(4)
    se = SqueezeExcite(24)
    assert se.rd_channels == make_divisible(24 * 0.25, 4) == 8
    assert type(se.conv_reduce) is nn.Conv2d and se.conv_reduce.bias is not None
    x = torch.randn(2, 24, 5, 5)
    pooled = x.mean(dim=(2, 3))
    hidden = F.relu(pooled @ se.conv_reduce.weight.flatten(1).T + se.conv_reduce.bias)
    gate = F.relu6(hidden @ se.conv_expand.weight.flatten(1).T + se.conv_expand.bias + 3) / 6
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    t = torch.linspace(-5, 5, 41)
    torch.testing.assert_close(hard_sigmoid(t), F.relu6(t + 3) / 6)
    sig = SqueezeExcite(16, rd_ratio=0.5, rd_divisor=8, gate=torch.sigmoid)
    assert sig.rd_channels == 8
    assert sig(torch.randn(1, 16, 3, 3)).shape == (1, 16, 3, 3)


def test_squeeze_excite_validation() -> None:
    with pytest.raises(ValueError):
        SqueezeExcite(0)
    with pytest.raises(ValueError):
        SqueezeExcite(8, rd_ratio=0.0)
    with pytest.raises(TypeError):
        SqueezeExcite(8, gate="sigmoid")
    with pytest.raises(ValueError, match="SqueezeExcite expects"):
        SqueezeExcite(8)(torch.randn(1, 4, 3, 3))


# ----------------------------------------------------------------------------- ONNX


def test_onnx_export_parity(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(5)
    net = nn.Sequential(
        GhostModule(3, 13, 3, ratio=3),
        GhostBottleneck(13, 24, 16, 5, 2, se_ratio=0.25),
        GhostModule.from_conv2d(nn.Conv2d(16, 10, 3, padding=1), ratio=4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(10, 7),
    )
    _randomise_bn(net)
    net.eval()
    path = tmp_path / "ghost.onnx"
    torch.onnx.export(
        net,
        (torch.randn(2, 3, 12, 12),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )
    x = torch.randn(5, 3, 12, 12)
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == (5, 7)
    assert np.abs(got - expected).max() <= 1e-4
