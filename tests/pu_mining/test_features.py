"""Multi-scale feature taps found from a teacher's graph (pu_mining/features.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from compression import create_student, load_teacher
from pu_mining.features import FeatureTaps, feature_taps, find_feature_stages, torch_to_onnx

SHAPE = (1, 28, 28)
EXPECTED = [(8, 28, 28), (16, 14, 14), (32, 7, 7)]  # resnet20 at width 0.5


def quiet(function: Callable[..., object], *args: object, **kwargs: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    model = create_student("resnet20", num_classes=5, input_shape=SHAPE, width=0.5)
    for module in model.modules():  # non-trivial BN statistics, so eval-mode BN matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(net: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Ground truth from forward hooks on the three stages of the nn.Module, globally average-pooled."""
    pooled: list[torch.Tensor] = []
    handles = [stage.register_forward_hook(lambda _m, _i, out: pooled.append(out.mean((2, 3)))) for stage in net.stages]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for handle in handles:
            handle.remove()
    return pooled


@pytest.fixture(scope="module")
def files(net: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("teachers")
    paths = {"torchscript": folder / "teacher.pt", "onnx": folder / "teacher.onnx", "static": folder / "static.onnx"}
    quiet(torch.jit.save, quiet(torch.jit.script, net), str(paths["torchscript"]))
    quiet(
        torch.onnx.export,
        net,
        (torch.zeros(2, *SHAPE),),
        str(paths["onnx"]),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    onnx.save(torch_to_onnx(net, SHAPE, fixed_batch_size=2), str(paths["static"]))
    return paths


def _check(taps: FeatureTaps, features: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    assert [(s.channels, s.height, s.width) for s in taps.stages] == EXPECTED
    assert all(stage.bottleneck for stage in taps.stages)
    assert taps.channels == [8, 16, 32]
    assert len(features) == 3
    for got, want in zip(features, reference, strict=True):
        assert got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_nn_module(net: nn.Module, images: torch.Tensor, reference: list[torch.Tensor]) -> None:
    taps = feature_taps(net, SHAPE, num_threads=1)
    _check(taps, taps(images), reference)
    # the taps are the stage outputs (ReLU after the residual addition), not tensors inside a block
    assert [stage.op_type for stage in taps.stages] == ["Relu"] * 3
    assert taps(images, batch_size=2)[2].shape == (5, 32)  # batching gives the same shapes
    torch.testing.assert_close(taps(images, batch_size=2)[1], taps(images)[1])


def test_module_in_training_mode_is_tapped_in_eval_mode(net, images, reference) -> None:
    net.train()
    try:
        taps = feature_taps(net, SHAPE, num_threads=1)
        assert net.training  # restored
    finally:
        net.eval()
    _check(taps, taps(images), reference)


def test_torchscript_teacher(files, images, reference) -> None:
    teacher = load_teacher(files["torchscript"], input_shape=SHAPE)
    taps = feature_taps(teacher, num_threads=1)
    _check(taps, taps(images), reference)
    # a Teacher takes raw images of any size and adapts them, like teacher(images)
    assert [f.shape for f in taps(torch.rand(3, 1, 32, 32))] == [(3, 8), (3, 16), (3, 32)]


def test_features_and_logits_come_from_one_pass(files, images, reference) -> None:
    teacher = load_teacher(files["torchscript"], input_shape=SHAPE, mean=[0.5], std=[0.25])
    for taps in (feature_taps(teacher, num_threads=1), feature_taps(files["static"], num_threads=1)):
        features, logits = taps.features_and_logits(images)
        for got, want in zip(features, taps(images), strict=True):
            torch.testing.assert_close(got, want)
        if taps.fixed_batch_size is None:  # the teacher: its own logits, normalisation included
            torch.testing.assert_close(logits, teacher(images), atol=1e-4, rtol=1e-4)
        assert logits.shape[0] == images.shape[0] and logits.ndim == 2


def test_teacher_normalisation_is_applied(files, net, images) -> None:
    teacher = load_teacher(files["torchscript"], input_shape=SHAPE, mean=[0.5], std=[0.25])
    taps = feature_taps(teacher, num_threads=1)
    expected = feature_taps(net, SHAPE, num_threads=1)((images - 0.5) / 0.25)
    for got, want in zip(taps(images), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_onnx_file_bytes_proto_and_teacher(files, images, reference) -> None:
    path = files["onnx"]
    for model in (path, str(path), path.read_bytes(), onnx.load(str(path))):
        taps = feature_taps(model, num_threads=1)  # input shape read from the graph
        _check(taps, taps(images), reference)
    teacher = load_teacher(path)
    taps = feature_taps(teacher, num_threads=1)
    _check(taps, taps(images), reference)
    stages = find_feature_stages(onnx.load(str(path)))
    assert [(s.channels, s.height, s.width) for s in stages] == EXPECTED


def test_static_batch_graph_is_padded(files, images, reference) -> None:
    taps = feature_taps(files["static"], num_threads=1)
    assert taps.fixed_batch_size == 2
    _check(taps, taps(images), reference)  # 5 images: batches of 2, the last one padded


def test_keep_last_stages_and_min_channels(net, images, reference) -> None:
    taps = feature_taps(net, SHAPE, stages=2, num_threads=1)
    assert taps.channels == [16, 32]
    torch.testing.assert_close(taps(images)[0], reference[1], atol=1e-5, rtol=1e-4)
    assert feature_taps(net, SHAPE, min_channels=10, num_threads=1).channels == [16, 32]


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_errors(net, files, images) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        feature_taps(net)
    with pytest.raises(ValueError, match="no 4-d feature maps"):
        feature_taps(_Mlp(), SHAPE, num_threads=1)
    with pytest.raises(TypeError):
        feature_taps(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        feature_taps(net, SHAPE, stages=0)
    with pytest.raises(ValueError, match="disagrees"):
        feature_taps(files["onnx"], (1, 32, 32))
    taps = feature_taps(net, SHAPE, num_threads=1)
    with pytest.raises(ValueError, match="shape"):
        taps(torch.rand(2, 1, 32, 32))  # a bare model takes its own input shape only
    with pytest.raises(TypeError):
        taps(images.numpy())  # type: ignore[arg-type]
    teacher_taps = feature_taps(load_teacher(files["torchscript"], input_shape=SHAPE), num_threads=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        teacher_taps(images * 255)


def test_graph_modules(net, images, reference, tmp_path: Path) -> None:
    # a torch.fx GraphModule
    taps = feature_taps(torch.fx.symbolic_trace(net), SHAPE, num_threads=1)
    _check(taps, taps(images), reference)
    # a torch.export program (.pt2, static batch of 2): the teacher's module is a GraphModule refusing train()
    path = tmp_path / "teacher.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(2, *SHAPE),)), path)
    teacher = load_teacher(path)
    taps = feature_taps(teacher, num_threads=1)
    assert taps.fixed_batch_size == 2
    _check(taps, taps(images), reference)


class _PadBeforeSlice(nn.Module):
    """A shortcut that pads channels at the fine resolution before subsampling: its padded tensor is the
    topologically last 8x8 map, but not a stage output (the main branch bypasses it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]  # used at the very end: a metadata path from the input, not a data path
        r = torch.relu(self.conv(x))
        main = self.down(r)
        shortcut = nn.functional.pad(r, (0, 0, 0, 0, 0, 8))[:, :, ::2, ::2]
        y = torch.relu(main + shortcut)
        return self.fc(y.mean((2, 3)).reshape(batch, -1))


def test_stage_tap_is_a_bottleneck_not_the_last_tensor() -> None:
    stages = find_feature_stages(torch_to_onnx(_PadBeforeSlice().eval(), (3, 8, 8)), num_threads=1)
    assert [(s.op_type, s.channels, s.height, s.bottleneck) for s in stages] == [
        ("Relu", 8, 8, True),
        ("Relu", 16, 4, True),
    ]
