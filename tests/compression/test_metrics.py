"""Tests for compression.metrics: op counts, parameters, weight bytes, latency and profile."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from compression.metrics import (
    LatencyStats,
    count_ops,
    count_parameters,
    measure_onnx_latency,
    weight_bytes,
)
from compression.op_counts import OpCounts, conv_macs, float_counts, layer_bit_ops, matmul_macs
from compression.profiling import ModelProfile, profile

# --------------------------------------------------------------------------------------------------
# models


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet20() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def hand_net() -> nn.Sequential:
    """Layers whose op counts are computed by hand in the tests (input 3x32x32)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),  # 0
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),  # 3: the ResNet-20 3x3 16->16 conv at 32x32, with bias
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),  # 4: depthwise
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),  # 5: strided, 16x16 output
        nn.Conv2d(32, 32, 1, groups=4),  # 6: grouped pointwise
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),  # 10
    )


HAND_MACS = {
    "0": 32 * 32 * 16 * 3 * 9,  # 442,368
    "3": 2_359_296,
    "4": 32 * 32 * 16 * 1 * 9,  # 147,456
    "5": 16 * 16 * 32 * 16 * 9,  # 1,179,648
    "6": 16 * 16 * 32 * 8 * 1,  # 65,536
    "10": 32 * 10,
}


class SelfCounting(nn.Module):
    """Stands in for an adder layer: wraps a conv but reports its own counts."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def count_ops(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> OpCounts:
        self.seen.append((tuple(inputs[0].shape), tuple(output.shape)))
        macs = output.numel() * 16 * 9
        return OpCounts(macs=macs, additions=2 * macs)


class Packed(nn.Module):
    """Stands in for a binary layer: 1 bit per weight plus one float scale per output channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale.view(1, -1, 1, 1)

    def packed_weight_bytes(self) -> int:
        return (self.conv.weight.numel() + 7) // 8 + 4 * self.scale.numel()


# --------------------------------------------------------------------------------------------------
# count_ops


def test_hand_computed_conv_and_linear_counts() -> None:
    ops = count_ops(hand_net(), (3, 32, 32))
    assert {layer.name: layer.counts.macs for layer in ops.layers} == HAND_MACS
    assert [layer.type for layer in ops.layers] == ["Conv2d"] * 5 + ["Linear"]
    assert ops.macs == sum(HAND_MACS.values())
    assert ops.multiplications == ops.additions == ops.macs  # one mul + one add per MAC, bias or not
    assert ops.binary_ops == 0
    assert ops.input_shape == (3, 32, 32)


def test_counting_rules_by_hand() -> None:
    # grouped 3x3 convolution, 16 -> 32 channels in 4 groups: weight [32, 4, 3, 3], 8x8 output
    assert conv_macs(32 * 8 * 8, (32, 4, 3, 3)) == 32 * 8 * 8 * 4 * 9
    assert conv_macs(10 * 20, torch.Size([10, 3, 5])) == 10 * 20 * 15  # Conv1d
    assert matmul_macs(7, 256) == 1792
    assert float_counts(5) == OpCounts(macs=5, multiplications=5, additions=5)
    assert layer_bit_ops(OpCounts(macs=100, bit_ops=1600)) == 1600  # a 4-bit x 4-bit layer prices itself
    assert layer_bit_ops(OpCounts(macs=100, binary_ops=90)) == 90 + 10 * 32 * 32  # binary, 10 float MACs
    assert layer_bit_ops(float_counts(100)) == 100 * 32 * 32


def test_resnet20_total() -> None:
    ops = count_ops(resnet20(), (3, 32, 32))
    # 19 3x3 convs + 2 projection shortcuts + fc; 40,551,040 without the shortcuts (the paper's 40.55M)
    assert ops.macs == 40_813_184
    assert sum(1 for layer in ops.layers if layer.counts.macs == 2_359_296) == 16
    assert len(ops.layers) == 19 + 2 + 1


def test_example_tensor_counts_one_sample() -> None:
    net = hand_net()
    from_shape = count_ops(net, (3, 32, 32))
    from_tensor = count_ops(net, torch.randn(8, 3, 32, 32))
    assert from_tensor.total == from_shape.total


def test_self_counting_module_replaces_its_children() -> None:
    layer = SelfCounting()
    net = nn.Sequential(nn.Conv2d(3, 16, 1, bias=False), layer, nn.ReLU())
    ops = count_ops(net, (3, 8, 8))
    assert [(entry.name, entry.type) for entry in ops.layers] == [("0", "Conv2d"), ("1", "SelfCounting")]
    assert layer.seen == [((1, 16, 8, 8), (1, 16, 8, 8))]  # batch-1 forward
    macs = 8 * 8 * 16 * 16 * 9
    assert ops.layers[1].counts == OpCounts(macs=macs, additions=2 * macs)
    assert ops.total == OpCounts(macs=macs + 8 * 8 * 16 * 3) + OpCounts(
        multiplications=8 * 8 * 16 * 3, additions=2 * macs + 8 * 8 * 16 * 3
    )
    # the model itself may count itself
    root = count_ops(SelfCounting(), (16, 4, 4))
    assert [entry.name for entry in root.layers] == [""]


def test_module_called_twice_is_counted_twice() -> None:
    shared = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    ops = count_ops(net, (4, 6, 6))
    assert len(ops.layers) == 1 and ops.layers[0].calls == 2
    assert ops.macs == 2 * 6 * 6 * 4 * 4 * 9


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_and_modes_restored_on_error() -> None:
    class Broken(SelfCounting):
        def count_ops(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> OpCounts:
            raise RuntimeError("boom")

    net = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), Broken())
    net.train()
    net[1].eval()
    modes = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        count_ops(net, (16, 4, 4))
    assert _hook_count(net) == 0
    assert [m.training for m in net.modules()] == modes

    count_ops(hand_net(), (3, 8, 8))  # and on success too
    net2 = hand_net()
    count_ops(net2, (3, 8, 8))
    assert _hook_count(net2) == 0 and net2.training


def test_count_ops_runs_in_eval_mode_without_touching_bn_stats() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_ops(net, (3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_count_ops_type_checks_the_result() -> None:
    class Wrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def count_ops(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
            return 3

    with pytest.raises(TypeError, match="OpCounts"):
        count_ops(Wrong(), (2,))


def test_uncounted_parametrised_module_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    net = nn.Sequential(nn.ConvTranspose2d(2, 2, 2), nn.BatchNorm2d(2))
    with caplog.at_level(logging.WARNING, logger="compression.metrics.ops"):
        ops = count_ops(net, (2, 4, 4))
    assert ops.macs == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("ConvTranspose2d" in m for m in messages)
    assert not any("BatchNorm2d" in m for m in messages)


@pytest.mark.parametrize(
    ("model", "inputs", "error"),
    [
        ("model", (3, 8, 8), TypeError),
        (nn.Conv2d(3, 4, 3), (3, 0, 8), ValueError),
        (nn.Conv2d(3, 4, 3), "3x8x8", TypeError),
        (nn.Conv2d(3, 4, 3), (3.0, 8, 8), TypeError),
        (nn.Conv2d(3, 4, 3), (), ValueError),
        (nn.Conv2d(3, 4, 3), torch.randn(8), ValueError),
    ],
)
def test_count_ops_validation(model: object, inputs: object, error: type) -> None:
    with pytest.raises(error):
        count_ops(model, inputs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# parameters and weight bytes


def test_count_parameters_includes_frozen_and_counts_shared_once() -> None:
    shared = nn.Linear(4, 4)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), shared, shared)
    net[0].weight.requires_grad_(False)
    assert count_parameters(net) == (8 * 3 * 9 + 8) + (8 + 8) + (16 + 4)
    with pytest.raises(TypeError):
        count_parameters([1, 2])  # type: ignore[arg-type]


def test_weight_bytes_uses_packed_sizes() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), Packed(), nn.Flatten(), nn.Linear(8, 2))
    packed = (8 * 8 * 9 + 7) // 8 + 4 * 8
    conv = (8 * 3 * 9 + 8) * 4
    bn = 4 * 8 * 4  # weight, bias, running_mean, running_var; num_batches_tracked excluded
    linear = (8 * 2 + 2) * 4
    assert weight_bytes(net) == packed + conv + bn + linear
    assert weight_bytes(Packed()) == packed

    half = nn.Linear(4, 4).half()
    assert weight_bytes(half) == 20 * 2  # element_size, not a hard-coded 4


def test_weight_bytes_validates_packed_result() -> None:
    class Bad(Packed):
        def packed_weight_bytes(self) -> int:
            return -1

    with pytest.raises(ValueError, match="negative"):
        weight_bytes(Bad())


# --------------------------------------------------------------------------------------------------
# latency and profile (share one exported file)


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = small_net()
    scratch = tmp_path_factory.mktemp("tempdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))
        result = profile(model, (1, 28, 28), batch_sizes=(1, 32), repeats=10, warmup=2)
    # torch may create its own cache folders (torchinductor_*) in the temp dir; ours is condense-profile-*
    leftovers = [p for p in scratch.iterdir() if p.name.startswith("condense-profile-")]
    kept = tmp_path_factory.mktemp("kept") / "model.onnx"
    kept_result = profile(model, (1, 28, 28), latency=False, onnx_path=kept)
    return {
        "model": model,
        "result": result,
        "leftovers": leftovers,
        "kept": kept,
        "kept_result": kept_result,
    }


def test_profile_counts_and_latency(profiled) -> None:
    result: ModelProfile = profiled["result"]
    model = profiled["model"]
    ops = count_ops(model, (1, 28, 28))
    assert result.macs == ops.macs == 28 * 28 * 8 * 9 + 28 * 28 * 8 * 9 + 80
    assert (result.multiplications, result.additions, result.binary_ops) == (ops.macs, ops.macs, 0)
    assert result.parameters == count_parameters(model) == 72 + 16 + 72 + 90
    assert result.weight_bytes == weight_bytes(model) == (72 + 16 + 16 + 72 + 90) * 4
    assert result.onnx_bytes > 0 and result.exporter == "dynamo"
    assert result.verification is not None and result.verification.passed
    assert sorted(result.latency) == [1, 32]
    for size, stats in result.latency.items():
        assert isinstance(stats, LatencyStats) and stats.batch_size == size and stats.repeats == 10
        assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert profiled["leftovers"] == []  # the temporary export was cleaned up

    data = json.loads(json.dumps(result.as_dict()))
    assert data["macs"] == result.macs and data["latency"]["32"]["median_ms"] > 0
    assert data["input_shape"] == [1, 28, 28] and len(data["layers"]) == 3


def test_profile_keeps_the_requested_file(profiled) -> None:
    kept: Path = profiled["kept"]
    result: ModelProfile = profiled["kept_result"]
    assert kept.is_file() and result.onnx_bytes == kept.stat().st_size
    assert result.latency == {}
    assert result.macs == profiled["result"].macs


def test_measure_onnx_latency_on_the_kept_file(profiled) -> None:
    kept: Path = profiled["kept"]
    stats = measure_onnx_latency(kept, (1, 28, 28), (2, 2, 3), repeats=3, warmup=0, intra_op_num_threads=1)
    assert list(stats) == [2, 3]
    assert all(s.median_ms > 0 for s in stats.values())
    with pytest.raises(ValueError, match="does not fit"):
        measure_onnx_latency(kept, (3, 28, 28), repeats=1)
    with pytest.raises(ValueError, match="does not fit"):
        measure_onnx_latency(kept, (28, 28), repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        measure_onnx_latency(kept, (1, 28, 28), repeats=0)
    with pytest.raises(FileNotFoundError):
        measure_onnx_latency(kept.with_name("missing.onnx"), (1, 28, 28))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": object()}, TypeError),
        ({"input_shape": (28, 28)}, ValueError),
        ({"input_shape": (1, -28, 28)}, ValueError),
        ({"input_shape": 28}, TypeError),
        ({"batch_sizes": ()}, ValueError),
        ({"batch_sizes": (1, 0)}, ValueError),
        ({"batch_sizes": (1.5,)}, TypeError),
        ({"repeats": 0}, ValueError),
        ({"onnx_path": 3}, TypeError),
    ],
)
def test_profile_validation(kwargs: dict, error: type) -> None:
    arguments = {"model": small_net(), "input_shape": (1, 28, 28), **kwargs}
    with pytest.raises(error):
        profile(arguments.pop("model"), arguments.pop("input_shape"), **arguments)
