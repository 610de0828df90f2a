"""Tests for compression.export: verified, atomic, self-contained ONNX export.

Dynamo exports take ~1 s each, so exported models are shared through module-scoped fixtures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import compression.export.onnx as onnx_export
from compression.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    NonStandardDomainError,
    OnnxExport,
    OnnxExportError,
    OnnxVerificationError,
    check_standard_domains,
    export_onnx,
    verify_onnx,
)


def small_convnet(in_channels: int, num_classes: int = 10) -> nn.Sequential:
    """Conv, BN, ReLU, depthwise conv, max pool, pointwise conv, global pool, linear."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
    with torch.no_grad():  # non-trivial running stats, so eval and train mode really differ
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net


class ExportCheat(nn.Module):
    """Adds ``offset`` to the logits only while being exported, so ORT and PyTorch disagree."""

    def __init__(self, net: nn.Module, offset: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("offset", offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            y = y + self.offset
        return y


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=[(1, 28, 28), (3, 32, 32)], ids=["gray28", "rgb32"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    shape = request.param
    torch.manual_seed(0)
    model = small_convnet(shape[0])
    model.train()
    model[3].eval()  # mixed modes must come back exactly as they were
    modes, state = _modes(model), _state(model)
    folder = tmp_path_factory.mktemp(f"export_{shape[0]}x{shape[1]}")
    result = export_onnx(model, folder / "model.onnx", torch.randn(4, *shape), num_samples=8)
    return {
        "model": model,
        "shape": shape,
        "result": result,
        "folder": folder,
        "modes": modes,
        "state": state,
    }


def test_export_writes_one_self_contained_file(exported) -> None:
    result: OnnxExport = exported["result"]
    folder: Path = exported["folder"]
    assert [p.name for p in folder.iterdir()] == ["model.onnx"]  # no temp file, no external data
    assert result.path == folder / "model.onnx"
    assert result.file_bytes == result.path.stat().st_size > 0
    assert result.exporter == "dynamo"
    proto = onnx.load(str(result.path), load_external_data=False)
    onnx.checker.check_model(proto)
    assert all(not onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param  # symbolic batch dimension
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert result.opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert result.input_shape == ("batch", *exported["shape"])
    check_standard_domains(result.path)


def test_export_verification_tested_another_batch_size(exported) -> None:
    verification = exported["result"].verification
    assert verification is not None and verification.passed
    assert verification.batch_sizes[0] == 4
    assert any(size != 4 for size in verification.batch_sizes)
    assert verification.num_samples == 4 + 8
    assert verification.max_abs_diff <= 1e-4
    assert verification.top1_agreement == 1.0


def test_export_restores_modes_and_leaves_parameters_alone(exported) -> None:
    model = exported["model"]
    assert _modes(model) == exported["modes"]
    after = model.state_dict()
    for key, value in exported["state"].items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_dynamic_batch_runs_in_onnxruntime(exported, batch: int) -> None:
    session = ort.InferenceSession(str(exported["result"].path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, *exported["shape"])
    (logits,) = session.run(None, {INPUT_NAME: x.numpy()})
    with onnx_export.eval_mode(exported["model"]) as model, torch.no_grad():
        expected = model(x).numpy()
    assert logits.shape == (batch, 10)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------------
# failing verification


@pytest.fixture(scope="module")
def cheat(tmp_path_factory: pytest.TempPathFactory):
    """An unverified export whose graph adds 3 to logit 0: max diff 3, most top-1s flip to class 0."""
    torch.manual_seed(1)
    offset = torch.zeros(10)
    offset[0] = 3.0
    model = ExportCheat(small_convnet(1), offset)
    path = tmp_path_factory.mktemp("cheat") / "cheat.onnx"
    result = export_onnx(model, path, torch.randn(2, 1, 28, 28), verify=False)
    assert result.verification is None
    return model, path


def test_verify_onnx_tolerances(cheat) -> None:
    model, path = cheat
    batches = [torch.randn(3, 1, 28, 28), torch.randn(16, 1, 28, 28)]
    with pytest.raises(OnnxVerificationError) as info:
        verify_onnx(path, model, batches, atol=1e-4, min_top1_agreement=0.0)
    message = str(info.value)
    assert "max abs diff 3" in message and "atol=0.0001" in message and "top-1 agreement" in message
    assert info.value.verification is not None and not info.value.verification.passed

    # a looser tolerance accepts the difference in values, but identical top-1 is still required
    with pytest.raises(OnnxVerificationError, match="top-1 agreement"):
        verify_onnx(path, model, batches, atol=5.0, min_top1_agreement=1.0)
    loose = verify_onnx(path, model, batches, atol=5.0, min_top1_agreement=0.0)
    assert loose.passed and loose.batch_sizes == (3, 16) and loose.num_samples == 19
    assert loose.max_abs_diff == pytest.approx(3.0, abs=1e-4)
    assert loose.top1_agreement < 1.0

    report = verify_onnx(path, model, batches, atol=1e-4, raise_on_failure=False)
    assert not report.passed
    assert isinstance(info.value, RuntimeError)


def test_failed_verification_leaves_no_file(tmp_path: Path) -> None:
    model = ExportCheat(small_convnet(1), torch.full((10,), 0.5))
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(OnnxVerificationError, match=r"max abs diff 0\.5.*atol=0\.0001.*top-1 agreement"):
        export_onnx(model, target, torch.randn(2, 1, 28, 28), num_samples=4)
    assert list(target.parent.iterdir()) == []

    # an existing file at the destination is not touched by a failed export
    target.write_bytes(b"previous")
    with pytest.raises(OnnxVerificationError):
        export_onnx(model, target, torch.randn(2, 1, 28, 28), num_samples=4)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_fallback_to_torchscript_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated dynamo failure")

    monkeypatch.setattr(onnx_export, "_export_dynamo", broken)
    with caplog.at_level(logging.WARNING, logger="compression.export.onnx"):
        result = export_onnx(small_convnet(1), tmp_path / "m.onnx", torch.randn(2, 1, 28, 28), num_samples=4)
    assert result.exporter == "torchscript"
    assert result.verification is not None and result.verification.passed
    assert any("falling back to the TorchScript exporter" in r.getMessage() for r in caplog.records)
    assert result.notes and "simulated dynamo failure" in result.notes[0]

    with pytest.raises(OnnxExportError, match="simulated dynamo failure"):
        export_onnx(small_convnet(1), tmp_path / "n.onnx", torch.randn(2, 1, 28, 28), fallback=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# --------------------------------------------------------------------------------------------------
# operator domains


def _model_with(nodes: list[onnx.NodeProto], opsets: list[tuple[str, int]]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def test_custom_domain_is_rejected() -> None:
    custom = _model_with(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")], [("", 18), ("com.example", 1)]
    )
    with pytest.raises(NonStandardDomainError, match=r"com\.example.*FancyOp"):
        check_standard_domains(custom)

    standard = _model_with([helper.make_node("Relu", ["x"], ["y"])], [("", 18), ("ai.onnx.ml", 3)])
    check_standard_domains(standard)

    unused_import = _model_with([helper.make_node("Relu", ["x"], ["y"])], [("", 18), ("com.example", 1)])
    with pytest.raises(NonStandardDomainError, match="opset import"):
        check_standard_domains(unused_import)


def test_custom_domain_inside_a_subgraph_is_rejected() -> None:
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])
    branch = helper.make_graph([helper.make_node("Secret", ["x"], ["z"], domain="vendor.ops")], "b", [], [out])
    plain = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "p", [], [out])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    nodes = [
        helper.make_node("Constant", [], ["c"], value=cond),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=plain),
    ]
    with pytest.raises(NonStandardDomainError, match=r"vendor\.ops"):
        check_standard_domains(_model_with(nodes, [("", 18)]))


def test_export_rejects_a_graph_with_a_custom_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_export(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
        node = helper.make_node("FancyOp", [INPUT_NAME], [OUTPUT_NAME], domain="com.example")
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 4])],
        )
        model_proto = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]
        )
        onnx.save(model_proto, str(path))

    monkeypatch.setattr(onnx_export, "_export_dynamo", fake_export)
    with pytest.raises(NonStandardDomainError):
        export_onnx(nn.Linear(4, 4), tmp_path / "m.onnx", torch.randn(2, 4))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# argument validation (all fail before any export)


class TupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "not a model"}, TypeError, "torch.nn.Module"),
        ({"example_input": [1.0, 2.0]}, TypeError, "torch.Tensor"),
        ({"example_input": torch.ones(2, 4, dtype=torch.long)}, TypeError, "floating-point"),
        ({"example_input": torch.ones(4)}, ValueError, "batch dimension"),
        ({"opset": 3}, ValueError, "opset"),
        ({"num_samples": 1}, ValueError, "num_samples"),
        ({"atol": -1.0}, ValueError, "atol"),
        ({"min_top1_agreement": 1.5}, ValueError, "min_top1_agreement"),
        ({"model": TupleOut()}, TypeError, "single tensor"),
    ],
)
def test_export_argument_validation(tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    arguments = {"model": nn.Linear(4, 3), "example_input": torch.randn(2, 4), **kwargs}
    with pytest.raises(error, match=match):
        export_onnx(arguments.pop("model"), tmp_path / "m.onnx", arguments.pop("example_input"), **arguments)
    assert list(tmp_path.iterdir()) == []


def test_verify_onnx_argument_validation(tmp_path: Path, exported) -> None:
    with pytest.raises(FileNotFoundError):
        verify_onnx(tmp_path / "missing.onnx", nn.Linear(4, 3), torch.randn(2, 4))
    path = exported["result"].path
    with pytest.raises(ValueError, match="at least one batch"):
        verify_onnx(path, exported["model"], [])
    with pytest.raises(TypeError, match="sample_inputs"):
        verify_onnx(path, exported["model"], "abc")
