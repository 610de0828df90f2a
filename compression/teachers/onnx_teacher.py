"""ONNX teachers (``"onnx"``): loading an ONNX protobuf and running it with ONNX Runtime (CPU).

The input shape comes from the graph input; mean / std may be carried as metadata (see
:mod:`compression.teachers.preprocessing`). The model is parsed by protobuf and run by ONNX Runtime;
models referencing external data files are refused (ONNX Runtime would read them from paths the file
names).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from compression.export.onnx import external_data_tensors
from compression.teachers.archive import Upload
from compression.teachers.loaded_model import LoadedModel
from compression.teachers.preprocessing import ONNX_MEAN_KEY, ONNX_STD_KEY

__all__ = ["load_onnx"]

_ORT_INPUT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


def _metadata_list(upload: Upload, metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise upload.fail(f"ONNX metadata {key!r} must be a JSON list of numbers, got {metadata[key][:80]!r}") from None


def load_onnx(upload: Upload, proto: onnx.ModelProto) -> LoadedModel:
    if external_data_tensors(proto):
        raise upload.fail("the ONNX model references external data files (refused: upload one self-contained file)")
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no per-session optimiser chatter
    session = ort.InferenceSession(upload.data, sess_options=options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise upload.fail(f"the ONNX model has {len(inputs)} inputs {[i.name for i in inputs]}; a teacher takes one")
    if not outputs:
        raise upload.fail("the ONNX model has no outputs")
    graph_input = inputs[0]
    if graph_input.type not in _ORT_INPUT_TYPES:
        raise upload.fail(f"the ONNX input {graph_input.name!r} has type {graph_input.type}; a float tensor is needed")
    shape = list(graph_input.shape)
    if len(shape) != 4:
        raise upload.fail(f"the ONNX input {graph_input.name!r} has shape {shape}; an (N, C, H, W) tensor is needed")
    dims = [size if isinstance(size, int) and size > 0 else None for size in shape]
    input_name, output_name = graph_input.name, outputs[0].name
    numpy_dtype = _ORT_INPUT_TYPES[graph_input.type]

    def run(batch: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(batch.detach().cpu().numpy().astype(numpy_dtype, copy=False))
        (result,) = session.run([output_name], {input_name: feed})
        return torch.from_numpy(np.asarray(result))

    return LoadedModel(
        run=run,
        input_dims=(dims[1], dims[2], dims[3]),
        fixed_batch_size=dims[0],
        mean=_metadata_list(upload, metadata, ONNX_MEAN_KEY),
        std=_metadata_list(upload, metadata, ONNX_STD_KEY),
        mean_origin=f"ONNX metadata {ONNX_MEAN_KEY}",
        std_origin=f"ONNX metadata {ONNX_STD_KEY}",
        parameter_count=sum(math.prod(tensor.dims) for tensor in proto.graph.initializer),
        session=session,
    )
