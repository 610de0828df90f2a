"""onnx_skeleton: an ONNX file's structure without its weights, in bounded memory, refusing malformed input."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import compression.teachers.onnx_skeleton as skeleton_module
from compression.export.onnx_graph import external_data_tensors
from compression.teachers.onnx_skeleton import onnx_skeleton


def _exported(path: Path) -> onnx.ModelProto:
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 5))
    torch.onnx.export(model.eval(), torch.rand(1, 1, 28, 28), str(path), dynamo=False)
    return onnx.load(str(path))


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def test_the_skeleton_keeps_the_graph_and_drops_only_the_tensor_values(tmp_path: Path) -> None:
    full = _exported(tmp_path / "m.onnx")
    skeleton = onnx_skeleton(tmp_path / "m.onnx")
    assert skeleton.ir_version == full.ir_version and list(skeleton.opset_import) == list(full.opset_import)
    assert list(skeleton.graph.input) == list(full.graph.input)
    assert list(skeleton.graph.output) == list(full.graph.output)
    assert [n.op_type for n in skeleton.graph.node] == [n.op_type for n in full.graph.node]
    assert [(t.name, list(t.dims), t.data_type) for t in skeleton.graph.initializer] == [
        (t.name, list(t.dims), t.data_type) for t in full.graph.initializer
    ]
    assert all(not t.raw_data and not t.float_data for t in skeleton.graph.initializer)
    assert sum(len(t.raw_data) for t in full.graph.initializer) > 100_000
    assert skeleton.ByteSize() < 5_000 < full.ByteSize()


def test_external_data_fields_survive_so_the_upload_check_still_sees_them(tmp_path: Path) -> None:
    model = _exported(tmp_path / "m.onnx")
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, size_threshold=0)
    skeleton = onnx_skeleton(tmp_path / "ext.onnx")
    full = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    assert external_data_tensors(skeleton) == external_data_tensors(full)
    assert external_data_tensors(skeleton)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\x08\x07\x3a\xff\xff\xff\x0f", "runs past"),  # ir_version 7, then a graph claiming ~4 GB
        (b"\x08\x07\x0b", "wire type 3"),  # a group start
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "varint"),
    ],
)
def test_malformed_files_are_a_value_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        onnx_skeleton(path)


def test_a_truncated_model_is_refused(tmp_path: Path) -> None:
    _exported(tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="malformed protobuf"):
        onnx_skeleton(tmp_path / "cut.onnx")


def test_hostile_nesting_and_field_counts_are_bounded(tmp_path: Path, monkeypatch) -> None:
    graph = b""
    for _ in range(skeleton_module.MAX_DEPTH):  # graph -> node -> attribute -> graph -> ...
        graph = _field(1, _field(5, _field(6, graph)))
    (tmp_path / "deep.onnx").write_bytes(b"\x08\x07" + _field(7, graph))
    with pytest.raises(ValueError, match="nests more than"):
        onnx_skeleton(tmp_path / "deep.onnx")

    _exported(tmp_path / "m.onnx")
    monkeypatch.setattr(skeleton_module, "MAX_FIELDS", 20)
    with pytest.raises(ValueError, match="more than 20 protobuf fields"):
        onnx_skeleton(tmp_path / "m.onnx")


def test_bulk_outside_the_tensors_is_refused(tmp_path: Path, monkeypatch) -> None:
    model = _exported(tmp_path / "m.onnx")
    model.doc_string = "x" * 4096
    onnx.save_model(model, str(tmp_path / "doc.onnx"))
    assert onnx_skeleton(tmp_path / "doc.onnx").doc_string == "x" * 4096
    monkeypatch.setattr(skeleton_module, "MAX_SKELETON_BYTES", 2048)
    with pytest.raises(ValueError, match="more than 2,048 bytes outside"):
        onnx_skeleton(tmp_path / "doc.onnx")
