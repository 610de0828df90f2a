"""``student.onnx`` metadata: written into a real ONNX model, read back with ``onnx`` and with ONNX Runtime, the model
still runs; a file that is not ONNX is left alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.pipeline.onnx_metadata import read_onnx_metadata, stamp_onnx_metadata, student_metadata


def _tiny_classifier(path: Path) -> None:
    """A 1x4x4 image -> 3 logits linear model (flatten + MatMul), the shape of a student's graph ends."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [16, 3], np.arange(48, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_metadata_is_written_read_back_and_the_model_still_runs(tmp_path: Path) -> None:
    path = tmp_path / "student.onnx"
    _tiny_classifier(path)
    props = student_metadata(["boot", "coat", "shirt"], (1, 4, 4), "ghost")
    assert stamp_onnx_metadata(path, props)
    assert stamp_onnx_metadata(path, {"condense.job_id": "abc123", "condense.student": "adder"})  # keys replaced
    meta = read_onnx_metadata(path)
    assert json.loads(meta["condense.class_names"]) == ["boot", "coat", "shirt"]
    assert json.loads(meta["condense.input_shape"]) == [1, 4, 4] and meta["condense.input_layout"] == "NCHW float32"
    assert json.loads(meta["condense.pixel_range"]) == [0, 1]
    assert json.loads(meta["condense.mean"]) == [0.0] and json.loads(meta["condense.std"]) == [1.0]
    assert meta["condense.job_id"] == "abc123" and meta["condense.student"] == "adder" and meta["condense.version"]
    assert [prop.key for prop in onnx.load(str(path)).metadata_props].count("condense.student") == 1
    # What the README shows: ONNX Runtime reads the same metadata and runs the model.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    custom = session.get_modelmeta().custom_metadata_map
    classes = json.loads(custom["condense.class_names"])
    image = np.full((1, *json.loads(custom["condense.input_shape"])), 0.5, dtype=np.float32)
    logits = session.run(None, {session.get_inputs()[0].name: image})[0]
    assert classes[int(logits.argmax(1)[0])] == "shirt"  # the largest weights are the last column's


def test_a_file_that_is_not_onnx_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "student.onnx"
    path.write_bytes(b"not really onnx")
    assert stamp_onnx_metadata(path, {"condense.job_id": "x"}) is False
    assert path.read_bytes() == b"not really onnx"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        student_metadata("boot", (1, 4, 4), "ghost")
    with pytest.raises(ValueError):
        student_metadata(["a"], (1, 4), "ghost")
