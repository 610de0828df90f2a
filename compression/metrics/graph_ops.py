"""Multiply-accumulates of a model known only as a graph: a user's teacher (TorchScript, ``torch.export``, ONNX).

:func:`compression.metrics.count_ops` walks an ``nn.Module``'s layers; an uploaded teacher has no such layers.
Here the count comes from the operations that run:

* torch formats: one forward pass of a zero image under :class:`torch.utils.flop_counter.FlopCounterMode`, which
  sees every aten matmul/convolution; MACs are its FLOPs / 2 (it counts a multiply-accumulate as two FLOPs);
* ONNX: shape inference on the graph (where it cannot find a shape, one run of the graph in ONNX Runtime with
  the tensors in question as extra outputs), then ``Conv`` (``C_in / groups * kH * kW`` per output element),
  ``Gemm`` and ``MatMul`` (the reduced dimension per output element) are summed, by the rules of
  :mod:`compression.op_counts` (:func:`~compression.op_counts.conv_macs`, :func:`~compression.op_counts.matmul_macs`)
  that count our own layers.

Both count the layers that dominate a classifier's cost (convolutions, fully connected layers); element-wise
operations (activations, normalisation, pooling) are left out, as the papers' MAC figures leave them out. The
result agrees with :func:`~compression.metrics.count_ops` on our own students (tested).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
from onnx import shape_inference

from compression.op_counts import conv_macs, matmul_macs

__all__ = ["image_input", "onnx_macs", "teacher_macs", "torch_macs"]

_COUNTED = ("Conv", "Gemm", "MatMul")


def torch_macs(model: Any, input_shape: tuple[int, int, int]) -> int:
    """MACs of one forward pass of ``model`` (a torch callable) on a zero image of ``input_shape`` (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape)))
    return int(counter.get_total_flops()) // 2


def onnx_macs(model: onnx.ModelProto | str, input_shape: tuple[int, int, int]) -> int:
    """MACs of one sample through an ONNX graph whose input is ``[N, *input_shape]`` (batch fixed to 1)."""
    proto = onnx.load(model) if isinstance(model, str) else model
    proto = _with_batch_one(proto, input_shape)
    inferred = shape_inference.infer_shapes(proto, data_prop=True)
    shapes = _known_shapes(inferred)
    needed = {
        name
        for node in inferred.graph.node
        if node.op_type in _COUNTED
        for name in (node.input[0], node.output[0])
        if name not in shapes
    }
    if needed:  # shape inference gives up on some graphs (e.g. computed Pad widths): run them instead
        shapes.update(_run_for_shapes(proto, sorted(needed), input_shape))
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight, output = shapes.get(node.input[1]), shapes.get(node.output[0])
            if weight is not None and output is not None:
                total += conv_macs(math.prod(output), weight)
        elif node.op_type in ("Gemm", "MatMul"):
            left, output = shapes.get(node.input[0]), shapes.get(node.output[0])
            if left is not None and output is not None and left:
                reduced = left[-1]
                if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
                    reduced = left[0]
                total += matmul_macs(math.prod(output), reduced)
    return int(total)


def teacher_macs(teacher: Any) -> int | None:
    """MACs of a loaded teacher (:class:`compression.teachers.Teacher`); None if its format gives no count."""
    shape = tuple(teacher.input_shape)
    if getattr(teacher, "module", None) is not None:
        return torch_macs(teacher.module, shape)
    session = getattr(teacher, "session", None)
    path = getattr(teacher, "path", None)
    if session is not None and path is not None:
        return onnx_macs(onnx.load(str(path)), shape)
    return None


def _run_for_shapes(
    proto: onnx.ModelProto, names: list[str], input_shape: tuple[int, int, int]
) -> dict[str, list[int]]:
    """Shapes of the tensors ``names``, found by running the graph once on a zero image in ONNX Runtime."""
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {value.name for value in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, *input_shape), dtype=np.float32)}
    outputs = session.run(names, feed)
    return {name: list(value.shape) for name, value in zip(names, outputs, strict=True)}


def image_input(proto: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The graph's one image input (``[N, C, H, W]``); ValueError for any other number of inputs or dimensions."""
    initializers = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected an ONNX graph with one image input, it has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"expected a 4-d image input (N, C, H, W), the graph's has {len(dims)} dimensions")
    return inputs[0]


def _with_batch_one(proto: onnx.ModelProto, input_shape: tuple[int, int, int]) -> onnx.ModelProto:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    dims = image_input(proto).type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, *input_shape), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    return proto


def _known_shapes(proto: onnx.ModelProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for tensor in proto.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    for value in (*proto.graph.input, *proto.graph.value_info, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes
