"""Tests for compression.teachers: safe teacher loading, input adaptation, cached teacher outputs.

One tiny classifier (two convs on 1x28x28, 5 classes) is exported once per module to every accepted
format; the refusal tests plant pickles whose ``__reduce__`` would create a marker file and check that
the file never appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from compression.teachers import (
    EXPORT_INSTRUCTIONS,
    LUMINANCE_WEIGHTS,
    ONNX_MEAN_KEY,
    ONNX_STD_KEY,
    InputSpec,
    PickledModelError,
    Teacher,
    TeacherLoadError,
    TeacherOutputCache,
    adapt_images,
    detect_teacher_format,
    load_teacher,
    teacher_logits,
)

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 5


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


class MarkerPayload:
    """Unpickling this creates ``path``: proof of code execution."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.path), "w"))


def quiet(function: Callable[..., object], *args: object, **kwargs: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(7, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def files(net: TinyNet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("teachers")
    example = torch.zeros(2, *INPUT_SHAPE)
    paths = {name: folder / name for name in ("scripted.pt", "traced.pt", "dynamic.pt2", "static.pt2", "net.onnx")}
    quiet(torch.jit.save, quiet(torch.jit.script, net), paths["scripted.pt"])
    quiet(torch.jit.save, quiet(torch.jit.trace, net, example), paths["traced.pt"])
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), paths["dynamic.pt2"])
    torch.export.save(torch.export.export(net, (example,)), paths["static.pt2"])
    quiet(
        torch.onnx.export,
        net,
        (example,),
        str(paths["net.onnx"]),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return paths


def rewrite_zip(
    source: Path, target: Path, edit: Callable[[str, bytes], bytes | None], extra: dict[str, bytes] | None = None
) -> Path:
    """Copy a zip archive member by member through ``edit`` (None drops a member); ``extra`` adds members."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            data = edit(info.filename.split("/", 1)[1], zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return target


# --------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("name", ["scripted.pt", "traced.pt"])
def test_torchscript_round_trip(name: str, files: dict[str, Path], net: TinyNet, images: torch.Tensor) -> None:
    teacher = load_teacher(files[name], input_shape=INPUT_SHAPE)
    assert teacher.format == "torchscript" == detect_teacher_format(files[name])
    assert teacher.input_shape == INPUT_SHAPE and teacher.num_classes == NUM_CLASSES
    assert teacher.module is not None and not teacher.module.training and teacher.session is None
    assert teacher.parameter_count == sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        expected = net(images)
    torch.testing.assert_close(teacher(images), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(teacher.predict_in_batches(images, batch_size=3), expected, atol=1e-5, rtol=0)


def test_torchscript_needs_input_shape(files: dict[str, Path]) -> None:
    with pytest.raises(TeacherLoadError, match=r"scripted\.pt.*input_shape=\(C, H, W\)"):
        load_teacher(files["scripted.pt"])


def test_torch_export_round_trip(files: dict[str, Path], net: TinyNet, images: torch.Tensor) -> None:
    teacher = load_teacher(files["dynamic.pt2"])
    assert teacher.format == "torch_export" == detect_teacher_format(files["dynamic.pt2"])
    assert teacher.input_shape == INPUT_SHAPE and teacher.num_classes == NUM_CLASSES
    assert teacher.fixed_batch_size is None and isinstance(teacher.module, torch.fx.GraphModule)
    assert teacher.exported_program is not None
    with torch.no_grad():
        expected = net(images)
    torch.testing.assert_close(teacher(images, batch_size=4), expected, atol=1e-5, rtol=0)


def test_torch_export_static_batch_is_padded(files: dict[str, Path], net: TinyNet, images: torch.Tensor) -> None:
    teacher = load_teacher(files["static.pt2"])  # exported with a fixed batch of 2; 7 images need padding
    assert teacher.fixed_batch_size == 2
    with torch.no_grad():
        expected = net(images)
    torch.testing.assert_close(teacher(images, batch_size=5), expected, atol=1e-5, rtol=0)


def test_onnx_round_trip(files: dict[str, Path], net: TinyNet, images: torch.Tensor) -> None:
    teacher = load_teacher(files["net.onnx"])
    assert teacher.format == "onnx" == detect_teacher_format(files["net.onnx"])
    assert teacher.input_shape == INPUT_SHAPE and teacher.num_classes == NUM_CLASSES
    assert teacher.session is not None and teacher.module is None
    assert teacher.parameter_count == sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        expected = net(images)
    torch.testing.assert_close(teacher(images), expected, atol=1e-4, rtol=0)


def test_detected_shape_must_agree_with_argument(files: dict[str, Path]) -> None:
    assert load_teacher(files["net.onnx"], input_shape=INPUT_SHAPE).input_shape == INPUT_SHAPE
    with pytest.raises(TeacherLoadError, match=r"net\.onnx.*disagrees"):
        load_teacher(files["net.onnx"], input_shape=(1, 32, 32))


def test_onnx_dynamic_spatial_dims_need_input_shape(net: TinyNet, tmp_path: Path, images: torch.Tensor) -> None:
    path = tmp_path / "dynamic_hw.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    quiet(
        torch.onnx.export,
        net,
        (torch.zeros(1, *INPUT_SHAPE),),
        str(path),
        dynamo=False,
        input_names=["input"],
        dynamic_axes={"input": axes},
    )
    with pytest.raises(TeacherLoadError, match="dynamic dimensions"):
        load_teacher(path)
    teacher = load_teacher(path, input_shape=(1, 20, 20))
    with torch.no_grad():
        expected = net(adapt_images(images, (1, 20, 20)))
    torch.testing.assert_close(teacher(images), expected, atol=1e-4, rtol=0)


def test_describe_is_json(files: dict[str, Path]) -> None:
    summary = load_teacher(files["dynamic.pt2"]).describe()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["format"] == "torch_export" and summary["num_classes"] == NUM_CLASSES
    assert summary["input_shape"] == list(INPUT_SHAPE) and summary["parameter_count"] > 0
    assert summary["normalisation"] == {"mean": [0.0], "std": [1.0], "source": {"mean": "default", "std": "default"}}


# --------------------------------------------------------------------------------------------------
# pickles are refused, never unpickled


def assert_export_instructions(error: pytest.ExceptionInfo[BaseException]) -> None:
    message = str(error.value)
    assert EXPORT_INSTRUCTIONS in message
    for command in (
        "torch.jit.script",
        "torch.jit.trace",
        "torch.jit.save",
        "torch.export.export",
        "torch.export.save",
    ):
        assert command in message
    assert "torch.onnx.export" in message


def test_pickled_module_and_state_dict_are_refused(net: TinyNet, tmp_path: Path) -> None:
    for name, obj in (("module.pt", net), ("state_dict.pt", net.state_dict())):
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(PickledModelError, match=name.replace(".", r"\.")) as error:
            load_teacher(path)
        assert isinstance(error.value, ValueError)
        assert_export_instructions(error)


def test_refusals_never_unpickle(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.marker"
    payload = MarkerPayload(marker)
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(payload))
    torch.save(payload, tmp_path / "torch_save.pt")
    torch.save(payload, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("raw.pkl", "torch_save.pt", "legacy.pt"):
        with pytest.raises(PickledModelError) as error:
            load_teacher(tmp_path / name, input_shape=INPUT_SHAPE)
        assert_export_instructions(error)
        assert not marker.exists(), f"{name} was unpickled"
    pickle.loads(pickle.dumps(payload))  # the payload is live: unpickling it does create the marker
    assert marker.exists()


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_pickles_go_through_torchs_restricted_unpickler(
    member: str, files: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled.marker"
    evil = pickle.dumps(MarkerPayload(marker), protocol=2)
    path = rewrite_zip(files["scripted.pt"], tmp_path / "evil.pt", lambda name, data: evil if name == member else data)
    with pytest.raises(TeacherLoadError, match=r"evil\.pt.*torchscript loader failed.*Unknown type name"):
        load_teacher(path, input_shape=INPUT_SHAPE)
    assert not marker.exists()


def test_torchscript_archive_checks(files: dict[str, Path], tmp_path: Path) -> None:
    extra = rewrite_zip(files["scripted.pt"], tmp_path / "extra.pt", lambda n, d: d, {"bytecode.pkl": b"\x80\x02."})
    with pytest.raises(TeacherLoadError, match=r"unexpected members.*bytecode\.pkl"):
        load_teacher(extra, input_shape=INPUT_SHAPE)

    def add_file_write(name: str, data: bytes) -> bytes:
        if name.startswith("code/") and name.endswith(".py"):
            return data + b'\ndef _leak(self, x: Tensor) -> None:\n  torch.save(x, "/tmp/leak.pt")\n'
        return data

    writer = rewrite_zip(files["scripted.pt"], tmp_path / "writer.pt", add_file_write)
    with pytest.raises(TeacherLoadError, match="calls 'save'"):
        load_teacher(writer, input_shape=INPUT_SHAPE)


def _edit_program(edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def rewrite(name: str, data: bytes) -> bytes:
        if name != "models/model.json":
            return data
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()

    return rewrite


def _replace_everywhere(old: bytes, new: bytes) -> Callable[[str, bytes], bytes]:
    """Replace ``old`` in the program and in the weights config."""

    def rewrite(name: str, data: bytes) -> bytes:
        if name in ("models/model.json", "data/weights/model_weights_config.json"):
            assert old in data or name != "models/model.json", f"{old!r} not in {name}"
            return data.replace(old, new)
        return data

    return rewrite


def _first_node(program: dict) -> dict:
    return program["graph_module"]["graph"]["nodes"][0]


def _inject_expression(marker: Path) -> Callable[[dict], None]:
    def edit(program: dict) -> None:
        sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        expression = sizes[0]["as_expr"]
        expression["expr_str"] = f"{expression['expr_str']} if open({str(marker)!r}, 'w') else 0"

    return edit


def test_torch_export_attacks_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    """Refused before anything runs. The expression, pickled-weight and parameter-path payloads are live:
    ``torch.export.load(path).module()(x)`` creates the marker (checked by hand with torch 2.14.1)."""
    marker = tmp_path / "executed.marker"
    hex_path = str(marker).encode().hex()  # a path with no dots: torch.fx splits parameter paths on "."
    fqn_payload = f'conv1.bias"),open(getattr(bytes,"fromhex")("{hex_path}"),"w"),("'
    evil_weight = io.BytesIO()
    torch.save(MarkerPayload(marker), evil_weight)

    def pickled_weight(name: str, data: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            for entry in config["config"].values():
                if entry["path_name"] == "weight_0":
                    entry["use_pickle"] = True
            return json.dumps(config).encode()
        return evil_weight.getvalue() if name == "data/weights/weight_0" else data

    cases: dict[str, tuple[Callable[[str, bytes], bytes | None], dict[str, bytes] | None, str]] = {
        "expression": (_edit_program(_inject_expression(marker)), None, "unsafe symbolic expression"),
        "pickled_weight": (pickled_weight, None, "stored as a pickle"),
        "target": (
            _edit_program(lambda p: _first_node(p).update(target="torch.serialization.pickle.loads")),
            None,
            "only aten operators",
        ),
        "file_op": (
            _edit_program(lambda p: _first_node(p).update(target="torch.ops.aten.from_file.default")),
            None,
            "only aten operators",
        ),
        "fqn": (  # torch.fx pastes parameter paths unescaped into getattr(self, "...") in generated source
            _replace_everywhere(b'"conv1.weight"', json.dumps(fqn_payload).encode()),
            None,
            "unsafe tensor name",
        ),
        "node_name": (_replace_everywhere(b'"relu"', b'"relu = 1; import os; relu"'), None, "unsafe name"),
        "aoti": (lambda n, d: d, {"data/aotinductor/model/model.so": b"\x7fELF"}, "unexpected members"),
        "legacy_weights": (lambda n, d: d, {"data/weights/model.pt": evil_weight.getvalue()}, "unexpected members"),
    }
    for case, (edit, extra, message) in cases.items():
        path = rewrite_zip(files["dynamic.pt2"], tmp_path / f"{case}.pt2", edit, extra)
        with pytest.raises(TeacherLoadError, match=message) as error:
            load_teacher(path)
        assert f"{case}.pt2" in str(error.value)
        assert not marker.exists(), case


def test_torch_export_unread_and_unrun_parts(files: dict[str, Path], tmp_path: Path, images: torch.Tensor) -> None:
    """Sample inputs (a torch.save pickle) are never read and guards_code is never executed."""
    marker = tmp_path / "executed.marker"
    evil_inputs = io.BytesIO()
    torch.save(MarkerPayload(marker), evil_inputs)

    def plant(name: str, data: bytes) -> bytes:
        if name == "data/sample_inputs/model.pt":
            return evil_inputs.getvalue()
        if name == "models/model.json":
            program = json.loads(data)
            program["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]
            return json.dumps(program).encode()
        return data

    path = rewrite_zip(files["dynamic.pt2"], tmp_path / "planted.pt2", plant)
    teacher = load_teacher(path)
    assert teacher(images).shape == (len(images), NUM_CLASSES)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# unusable files


def test_corrupt_and_missing_files(files: dict[str, Path], tmp_path: Path) -> None:
    cases: dict[str, str] = {}
    for source in ("scripted.pt", "dynamic.pt2", "net.onnx"):
        data = files[source].read_bytes()
        name = f"truncated_{source}"
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        cases[name] = "truncated" if source == "net.onnx" else "corrupt or truncated zip"
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["random.bin"] = "not a recognised model file"
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty.pt"] = "empty"
    (tmp_path / "folder.pt").mkdir()
    cases["folder.pt"] = "directory"
    cases["missing.pt"] = "no such file"
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    cases["other.zip"] = "not one written by PyTorch"
    for name, reason in cases.items():
        with pytest.raises(ValueError, match=reason) as error:
            load_teacher(tmp_path / name, input_shape=INPUT_SHAPE)
        assert name in str(error.value), name


def test_size_limit(files: dict[str, Path]) -> None:
    with pytest.raises(TeacherLoadError, match="over the 1,000-byte limit"):
        load_teacher(files["net.onnx"], max_bytes=1000)
    with pytest.raises(TypeError):
        load_teacher(files["net.onnx"], max_bytes=1.5)  # type: ignore[arg-type]


def test_bad_arguments(files: dict[str, Path]) -> None:
    with pytest.raises(TypeError):
        load_teacher(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="three entries"):
        load_teacher(files["scripted.pt"], input_shape=(28, 28))
    with pytest.raises(ValueError, match="one value per input channel") as error:
        load_teacher(files["net.onnx"], mean=[0.5, 0.5, 0.5])
    assert not isinstance(error.value, TeacherLoadError)  # the caller's mistake, not the file's


# --------------------------------------------------------------------------------------------------
# normalisation


def _with_metadata(source: Path, target: Path, props: dict[str, str]) -> Path:
    proto = onnx.load(str(source))
    helper.set_model_props(proto, props)
    onnx.save(proto, str(target))
    return target


def test_onnx_metadata_normalisation(
    files: dict[str, Path], net: TinyNet, images: torch.Tensor, tmp_path: Path
) -> None:
    path = _with_metadata(
        files["net.onnx"], tmp_path / "normalised.onnx", {ONNX_MEAN_KEY: "[0.25]", ONNX_STD_KEY: "[0.5]"}
    )
    teacher = load_teacher(path)
    assert teacher.preprocess == InputSpec(INPUT_SHAPE, mean=(0.25,), std=(0.5,))
    assert teacher.describe()["normalisation"]["source"] == {
        "mean": f"ONNX metadata {ONNX_MEAN_KEY}",
        "std": f"ONNX metadata {ONNX_STD_KEY}",
    }
    with torch.no_grad():
        expected = net((images - 0.25) / 0.5)
    torch.testing.assert_close(teacher(images), expected, atol=1e-4, rtol=0)

    overridden = load_teacher(path, std=[2.0])  # arguments win, each of mean / std separately
    assert overridden.preprocess.mean == (0.25,) and overridden.preprocess.std == (2.0,)

    broken = _with_metadata(files["net.onnx"], tmp_path / "broken.onnx", {ONNX_MEAN_KEY: "not json"})
    with pytest.raises(TeacherLoadError, match=r"broken\.onnx.*condense\.mean"):
        load_teacher(broken)
    wrong = _with_metadata(files["net.onnx"], tmp_path / "wrong.onnx", {ONNX_STD_KEY: "[0.5, 0.5, 0.5]"})
    with pytest.raises(TeacherLoadError, match=r"wrong\.onnx.*one value per input channel"):
        load_teacher(wrong)


def test_torchscript_attribute_normalisation(net: TinyNet, images: torch.Tensor, tmp_path: Path) -> None:
    class Carrier(nn.Module):  # TorchScript infers List[float] for the two attributes
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.condense_mean = [0.5]
            self.condense_std = [0.25]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    path = tmp_path / "carrier.pt"
    quiet(torch.jit.save, quiet(torch.jit.script, Carrier(net)), path)
    teacher = load_teacher(path, input_shape=INPUT_SHAPE)
    assert teacher.preprocess.mean == (0.5,) and teacher.preprocess.std == (0.25,)
    with torch.no_grad():
        expected = net((images - 0.5) / 0.25)
    torch.testing.assert_close(teacher(images), expected, atol=1e-5, rtol=0)


def test_input_spec_validation() -> None:
    spec = InputSpec((3, 8, 8))
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0) and spec.is_identity
    with pytest.raises(ValueError, match="one value per input channel"):
        InputSpec((3, 8, 8), mean=[0.5])
    with pytest.raises(ValueError, match="> 0"):
        InputSpec((1, 8, 8), std=[0.0])
    with pytest.raises(TypeError):
        InputSpec((1, 8, 8), mean="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="three entries"):
        InputSpec((8, 8))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# adapting images


def test_adapt_images_resizes_and_converts_channels() -> None:
    grey = torch.rand(2, 1, 16, 16)
    unchanged = adapt_images(grey, (1, 16, 16))
    assert unchanged is grey
    assert adapt_images(torch.full((2, 1, 16, 16), 0.3), (1, 7, 9)).allclose(torch.full((2, 1, 7, 9), 0.3))

    rgb = adapt_images(grey, (3, 16, 16))
    assert rgb.shape == (2, 3, 16, 16) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))

    colour = torch.rand(2, 3, 16, 16)
    luminance = sum(w * colour[:, c] for c, w in enumerate(LUMINANCE_WEIGHTS))
    torch.testing.assert_close(adapt_images(colour, (1, 16, 16))[:, 0], luminance)

    resized = adapt_images(colour, (1, 8, 8))
    assert resized.shape == (2, 1, 8, 8)
    assert resized.min() >= 0.0 and resized.max() <= 1.0

    with pytest.raises(ValueError, match="2 channels"):
        adapt_images(torch.rand(1, 2, 8, 8), (3, 8, 8))
    with pytest.raises(TypeError, match="float"):
        adapt_images(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), (1, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        adapt_images(torch.rand(1, 8, 8), (1, 8, 8))


def test_teacher_adapts_and_checks_inputs(files: dict[str, Path], net: TinyNet) -> None:
    teacher = load_teacher(files["dynamic.pt2"])
    colour = torch.rand(3, 3, 56, 56)
    with torch.no_grad():
        expected = net(adapt_images(colour, INPUT_SHAPE))
    torch.testing.assert_close(teacher(colour), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"raw pixels in \[0, 1\]"):
        teacher(colour * 255)


# --------------------------------------------------------------------------------------------------
# cached teacher outputs


def count_calls(teacher: Teacher, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = teacher.predict_in_batches

    def counted(images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        calls.append(len(images))
        return original(images, batch_size)

    monkeypatch.setattr(teacher, "predict_in_batches", counted)
    return calls


def test_cache_computes_once(files: dict[str, Path], images: torch.Tensor, tmp_path: Path, monkeypatch) -> None:
    teacher = load_teacher(files["net.onnx"])
    calls = count_calls(teacher, monkeypatch)
    cache = TeacherOutputCache(tmp_path / "cache")
    first = teacher_logits(teacher, images, cache=cache)
    first[0, 0] = 123.0  # callers get their own copy
    second = teacher_logits(teacher, images, cache=cache)
    assert calls == [len(images)] and (cache.hits, cache.misses) == (1, 1)
    torch.testing.assert_close(second, teacher.predict_in_batches(images), atol=0, rtol=0)
    calls.clear()

    from_disk = teacher_logits(teacher, images.clone(), cache=tmp_path / "cache")  # a new cache, same folder
    assert calls == [] and torch.equal(from_disk, second)
    teacher_logits(teacher, images[:3], cache=cache)  # other images: computed
    assert calls == [3]

    cache_file = tmp_path / "cache" / f"{TeacherOutputCache.key(teacher, images)}.npy"
    assert np.load(cache_file, allow_pickle=False).shape == (len(images), NUM_CLASSES)
    cache_file.write_bytes(b"garbage")  # an unreadable file is recomputed and replaced, not trusted
    calls.clear()
    torch.testing.assert_close(teacher_logits(teacher, images, cache=tmp_path / "cache"), second, atol=0, rtol=0)
    assert calls == [len(images)]
    assert np.load(cache_file, allow_pickle=False).dtype == np.float32


def test_cache_key_depends_on_normalisation(files: dict[str, Path], images: torch.Tensor) -> None:
    plain = load_teacher(files["net.onnx"])
    normalised = load_teacher(files["net.onnx"], mean=[0.5])
    assert TeacherOutputCache.key(plain, images) != TeacherOutputCache.key(normalised, images)
    assert TeacherOutputCache.key(plain, images) == TeacherOutputCache.key(plain, images.clone())
    assert TeacherOutputCache.key(plain, images) != TeacherOutputCache.key(plain, images.flip(0))
    assert torch.equal(teacher_logits(plain, images), plain(images))


def test_memory_only_cache(files: dict[str, Path], images: torch.Tensor, monkeypatch) -> None:
    teacher = load_teacher(files["traced.pt"], input_shape=INPUT_SHAPE)
    calls = count_calls(teacher, monkeypatch)
    cache = TeacherOutputCache()
    assert torch.equal(cache.get_or_compute(teacher, images), cache.get_or_compute(teacher, images))
    assert calls == [len(images)]
    assert os.fspath(files["traced.pt"]) in str(teacher.path)
