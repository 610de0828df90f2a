"""The stages of a teacher's ONNX graph: per spatial resolution, the feature map the PU classifier looks at.

The PU classifier of Xu et al. ("Positive-Unlabeled Compression on the Cloud", NeurIPS 2019, arXiv:1909.09757)
looks at the teacher's features at several scales; :mod:`pu_mining.features` pools the maps found here.

How the taps are found (:func:`find_feature_stages`):

1. The graph is run once in ONNX Runtime (optimisations off, so tensor names survive) on a probe batch, with
   every node output added as a graph output (as in :mod:`compression.metrics.graph_ops`), to learn each
   tensor's shape.
2. Candidates are the float tensors ``(N, C, h, w)`` (batch dimension = the probe's) that depend on the image
   input and feed the logits (the first graph output), excluding the input itself, ``1 x 1`` maps (already
   pooled), maps whose aspect ratio disagrees with the input's by more than a pixel (catches channels-last
   tensors) and maps with fewer than ``max(min_channels, C_in + 1)`` channels (the raw image, its normalised
   copies).
3. Candidates are grouped by spatial size ``(h, w)``; each group is one stage. From a group the tap is the
   topologically last *bottleneck* tensor -- one that every path from the input to the logits passes through,
   i.e. a block output such as the ReLU after a residual addition, never a tensor inside a block or on a
   shortcut branch. Tensors reached only through ``Shape`` / ``Size`` (metadata, not data) do not count as
   paths. A group without any bottleneck (unusual: e.g. a branch that skips a whole resolution) falls back to
   its topologically last tensor (``FeatureStage.bottleneck`` is then False).
4. Stages are ordered from the first (finest) to the last; ``stages=k`` keeps the last ``k``.

Assumptions: NCHW feature maps (what torch exports; channels-last ONNX graphs find no stages), one image input,
CPU execution.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from compression.export.in_memory import check_input_shape
from compression.export.onnx import external_data_tensors
from compression.metrics.graph_ops import image_input

__all__ = [
    "DEFAULT_MIN_CHANNELS",
    "PROBE_BATCH",
    "FeatureStage",
    "analyse_stages",
    "find_feature_stages",
    "session_options",
]

#: Feature maps with fewer channels than this (or not more than the input's) are not stages.
DEFAULT_MIN_CHANNELS = 4
#: The probe batch's size when the graph's batch dimension is dynamic.
PROBE_BATCH = 2

_METADATA_OPS = frozenset({"Shape", "Size"})
_ORT_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


@dataclass(frozen=True)
class FeatureStage:
    """One feature tap: the ONNX tensor ``name`` (produced by an ``op_type`` node) of shape
    ``(N, channels, height, width)``; ``bottleneck``: every input-to-logits path passes through it."""

    name: str
    op_type: str
    channels: int
    height: int
    width: int
    bottleneck: bool


def _static_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim
    ]


def _topological_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Kahn's algorithm, stable in the file's node order (ONNX requires topological order; this tolerates
    files that break it)."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name:
                producer[name] = index
    consumers: dict[int, list[int]] = defaultdict(list)
    missing = [0] * len(graph.node)
    for index, node in enumerate(graph.node):
        for name in {n for n in node.input if n in producer}:
            consumers[producer[name]].append(index)
            missing[index] += 1
    ready = deque(index for index, count in enumerate(missing) if count == 0)
    order: list[int] = []
    while ready:
        index = ready.popleft()
        order.append(index)
        for consumer in sorted(consumers[index]):
            missing[consumer] -= 1
            if missing[consumer] == 0:
                ready.append(consumer)
    if len(order) != len(graph.node):
        raise ValueError("the ONNX graph has a cycle")
    return [graph.node[index] for index in order]


def _dataflow(
    nodes: list[onnx.NodeProto], input_name: str, output_name: str
) -> tuple[list[str], dict[str, int], dict[str, str], set[str]]:
    """Tensors on an input-to-output data path in topological order, their positions, producing op types,
    and the bottleneck tensors among them (every input-to-output path passes through them)."""
    data_nodes = [node for node in nodes if node.op_type not in _METADATA_OPS]
    descendants = {input_name}
    for node in data_nodes:
        if any(name in descendants for name in node.input):
            descendants.update(name for name in node.output if name)
    ancestors = {output_name}
    for node in reversed(data_nodes):
        if any(name in ancestors for name in node.output):
            ancestors.update(name for name in node.input if name)
    relevant = descendants & ancestors
    if output_name not in relevant:
        raise ValueError(f"the graph output {output_name!r} does not depend on the image input {input_name!r}")
    order = [input_name]
    op_types = {input_name: "input"}
    for node in data_nodes:
        for name in node.output:
            if name in relevant:
                order.append(name)
                op_types[name] = node.op_type
    position = {name: index for index, name in enumerate(order)}
    last_use = dict(position)  # position of the last tensor computed (partly) from each tensor
    for node in data_nodes:
        outputs = [position[name] for name in node.output if name in relevant]
        if not outputs:
            continue
        for name in node.input:
            if name in relevant:
                last_use[name] = max(last_use[name], max(outputs))
    bottlenecks: set[str] = set()
    reach = -1  # the furthest position any earlier tensor is still used at
    for index, name in enumerate(order):
        if reach <= index:
            bottlenecks.add(name)
        reach = max(reach, last_use[name])
    return order, position, op_types, bottlenecks


def session_options(num_threads: int | None, optimise: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return options


def _probe_batch(input_dtype: type[np.floating[Any]], batch: int, shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, size=(batch, *shape)).astype(input_dtype)


def _run_all(
    proto: onnx.ModelProto, names: list[str], feed: np.ndarray, num_threads: int | None
) -> tuple[dict[str, np.ndarray], str]:
    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {value.name for value in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(
        probe.SerializeToString(), session_options(num_threads, optimise=False), providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    values = session.run(names, {input_name: feed})
    return dict(zip(names, values, strict=True)), input_name


def _check_proto(proto: onnx.ModelProto) -> None:
    if external_data_tensors(proto):
        raise ValueError("the ONNX model references external data files (refused: use one self-contained file)")
    if not proto.graph.output:
        raise ValueError("the ONNX model has no outputs")


def _resolve_shape(dims: list[int | None], given: Sequence[int] | None) -> tuple[tuple[int, int, int], int | None]:
    batch, *chw = dims
    if given is None:
        if any(d is None for d in chw):
            raise ValueError(f"the model's input (C, H, W) = {tuple(chw)} is not static; pass input_shape=(C, H, W)")
        shape = (int(chw[0] or 0), int(chw[1] or 0), int(chw[2] or 0))
    else:
        shape = check_input_shape(given)
        for axis, (stated, wanted) in enumerate(zip(chw, shape, strict=True)):
            if stated is not None and stated != wanted:
                raise ValueError(
                    f"input_shape {shape} disagrees with the model's input at axis {'CHW'[axis]}: {stated}"
                )
    return shape, batch


def find_feature_stages(
    proto: onnx.ModelProto,
    input_shape: Sequence[int] | None = None,
    *,
    min_channels: int = DEFAULT_MIN_CHANNELS,
    num_threads: int | None = None,
) -> list[FeatureStage]:
    """The stages of an ONNX classifier: per spatial resolution, its last bottleneck feature map (see the
    module docstring for the rules). ``input_shape`` ``(C, H, W)`` is read from the graph when static."""
    if not isinstance(proto, onnx.ModelProto):
        raise TypeError(f"proto must be an onnx.ModelProto, got {type(proto).__name__}")
    stages, _ = analyse_stages(proto, input_shape, min_channels=min_channels, num_threads=num_threads)
    return stages


def analyse_stages(
    proto: onnx.ModelProto,
    input_shape: Sequence[int] | None,
    *,
    min_channels: int,
    num_threads: int | None,
) -> tuple[list[FeatureStage], dict[str, Any]]:
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise ValueError(f"min_channels must be a positive int, got {min_channels!r}")
    _check_proto(proto)
    image = image_input(proto)
    shape, fixed_batch = _resolve_shape(_static_dims(image), input_shape)
    input_type = _ORT_FLOAT_TYPES.get(_ort_type(image))
    if input_type is None:
        raise ValueError(f"the ONNX input {image.name!r} is not a float tensor")
    output_name = proto.graph.output[0].name
    nodes = _topological_nodes(proto.graph)
    order, _, op_types, bottlenecks = _dataflow(nodes, image.name, output_name)
    batch = fixed_batch or PROBE_BATCH
    feed = _probe_batch(input_type, batch, shape)
    values, _ = _run_all(proto, order[1:], feed, num_threads)
    channels_in, height_in, width_in = shape
    least_channels = max(min_channels, channels_in + 1)
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for name in order[1:]:
        value = values[name]
        if value.ndim != 4 or value.dtype.kind != "f" or value.shape[0] != batch:
            continue
        _, channels, height, width = (int(d) for d in value.shape)
        if height * width <= 1 or channels < least_channels:
            continue
        if abs(height * width_in - width * height_in) > max(height_in, width_in):
            continue  # aspect ratio off by more than a pixel: not an NCHW map of this image
        groups[(height, width)].append(name)
    stages = []
    for (height, width), names in groups.items():
        chosen = [name for name in names if name in bottlenecks]
        name = (chosen or names)[-1]
        stages.append(
            FeatureStage(
                name=name,
                op_type=op_types[name],
                channels=int(values[name].shape[1]),
                height=height,
                width=width,
                bottleneck=bool(chosen),
            )
        )
    position = {name: index for index, name in enumerate(order)}
    stages.sort(key=lambda stage: position[stage.name])
    probe = {
        "feed": feed,
        "values": values,
        "output": values[output_name],
        "input_shape": shape,
        "fixed_batch_size": fixed_batch,
        "input_type": input_type,
    }
    return stages, probe


def _ort_type(value: onnx.ValueInfoProto) -> str:
    elem = int(value.type.tensor_type.elem_type)
    names: dict[int, str] = {
        onnx.TensorProto.FLOAT: "tensor(float)",
        onnx.TensorProto.DOUBLE: "tensor(double)",
        onnx.TensorProto.FLOAT16: "tensor(float16)",
    }
    return names.get(elem, "")
