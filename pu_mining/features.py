"""Multi-scale feature taps of a teacher: the last feature map of each spatial resolution, globally pooled.

The PU classifier of Xu et al. ("Positive-Unlabeled Compression on the Cloud", NeurIPS 2019, arXiv:1909.09757)
looks at the teacher's features at several scales. :func:`feature_taps` finds them automatically from the
teacher's graph and returns a :class:`FeatureTaps`: a callable ``images (N, C, H, W) -> [features (N, C_s) per
stage]``, each the global average pool of one stage's last feature map (e.g. 28x28x8, 14x14x16 and 7x7x32 for a
CIFAR-style ResNet-20 at width 0.5 on 28x28 inputs).

How the models are handled -- one path for every format. Forward hooks would only work for a plain
``nn.Module`` with one submodule per stage: a ``torch.jit`` ScriptModule takes no hooks on its submodules after
scripting, the ``GraphModule`` of a ``torch.export`` program has no submodule hierarchy, and an ONNX teacher has
no modules at all. So every teacher is brought to ONNX, which has a single tensor-level dataflow graph:

- torch models (``nn.Module``, ScriptModule, ``torch.fx`` / ``torch.export`` ``GraphModule``; a
  :class:`~compression.teachers.Teacher`'s ``module``) are exported once with the TorchScript-based exporter
  (``torch.onnx.export(..., dynamo=False)``: tens of milliseconds, and it accepts ScriptModules), in eval mode
  (``TrainingMode.EVAL``; a module that refuses ``train()``, like the ``torch.export`` ``GraphModule``, is
  exported as it is). The ONNX logits are checked against the torch model's on a probe batch.
- ONNX models (a file, bytes, an ``onnx.ModelProto`` or an ONNX :class:`~compression.teachers.Teacher`, whose
  file is re-read and must still match the SHA-256 recorded at load time) are used directly. Files with
  external data are refused.

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

The taps are then served by one ONNX Runtime session on a copy of the graph whose only outputs are
``GlobalAveragePool`` + ``Flatten`` of each tap (the classifier head is pruned), checked on the probe batch
against the pooled probe tensors (and, for a dynamic batch, on a batch of one as well).

Assumptions / limits: NCHW feature maps (what torch exports; channels-last ONNX graphs find no stages), one
image input, CPU execution, and the spatial layout is fixed by the input shape the taps were built for (images
must have that shape; a :class:`~compression.teachers.Teacher` adapts raw images to it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compression.export.onnx import external_data_tensors
from compression.metrics.graph_ops import image_input
from compression.teachers import Teacher, check_pixel_range

__all__ = [
    "DEFAULT_MIN_CHANNELS",
    "FeatureStage",
    "FeatureTaps",
    "feature_taps",
    "find_feature_stages",
    "torch_to_onnx",
]

#: Feature maps with fewer channels than this (or not more than the input's) are not stages.
DEFAULT_MIN_CHANNELS = 4
DEFAULT_BATCH_SIZE = 256

_PROBE_BATCH = 2
_METADATA_OPS = frozenset({"Shape", "Size"})
_ORT_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
_TAP_PREFIX = "condense_tap"


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


# --------------------------------------------------------------------------------------------------
# torch -> ONNX


def _floating_dtype(module: nn.Module) -> torch.dtype:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _check_shape(input_shape: object) -> tuple[int, int, int]:
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or len(input_shape) != 3:
        raise TypeError(f"input_shape must be a sequence (C, H, W), got {input_shape!r}")
    if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in input_shape):
        raise ValueError(f"input_shape must hold three positive ints (C, H, W), got {input_shape!r}")
    channels, height, width = (int(d) for d in input_shape)
    return channels, height, width


def torch_to_onnx(
    module: nn.Module, input_shape: Sequence[int], *, fixed_batch_size: int | None = None
) -> onnx.ModelProto:
    """Export a torch model (``nn.Module``, ScriptModule, ``GraphModule``) to an in-memory ONNX model.

    TorchScript-based exporter (``dynamo=False``), eval mode (a module that refuses ``train()`` is exported
    as it is), input ``input`` of shape ``(batch, *input_shape)`` with a dynamic batch unless
    ``fixed_batch_size`` is given, output ``logits``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    shape = _check_shape(input_shape)
    batch = fixed_batch_size or _PROBE_BATCH
    example = torch.zeros((batch, *shape), dtype=_floating_dtype(module))
    dynamic = None if fixed_batch_size else {"input": {0: "batch"}}

    def export(training: torch.onnx.TrainingMode) -> bytes:
        buffer = io.BytesIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=dynamic,
                training=training,
            )
        return buffer.getvalue()

    try:
        data = export(torch.onnx.TrainingMode.EVAL)
    except NotImplementedError:  # e.g. torch.export's GraphModule: "Calling train() is not supported yet."
        data = export(torch.onnx.TrainingMode.PRESERVE)
    return onnx.load_from_string(data)


# --------------------------------------------------------------------------------------------------
# graph analysis


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


def _session_options(num_threads: int | None, optimise: bool) -> ort.SessionOptions:
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
        probe.SerializeToString(), _session_options(num_threads, optimise=False), providers=["CPUExecutionProvider"]
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
        shape = _check_shape(given)
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
    stages, _ = _analyse(proto, input_shape, min_channels=min_channels, num_threads=num_threads)
    return stages


def _analyse(
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
    batch = fixed_batch or _PROBE_BATCH
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
    elem = value.type.tensor_type.elem_type
    return {
        onnx.TensorProto.FLOAT: "tensor(float)",
        onnx.TensorProto.DOUBLE: "tensor(double)",
        onnx.TensorProto.FLOAT16: "tensor(float16)",
    }.get(elem, "")


def _tap_model(proto: onnx.ModelProto, stages: list[FeatureStage]) -> tuple[onnx.ModelProto, list[str], str]:
    """A copy of ``proto`` whose outputs are ``Flatten(GlobalAveragePool(tap))`` of each stage, then the logits.

    Returns the model, the tap output names and the logits output name (the original first output).
    """
    model = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = model.graph
    logits = graph.output[0]
    taken = {name for node in graph.node for name in node.output} | {value.name for value in graph.input}
    outputs = []
    for index, stage in enumerate(stages):
        pooled, flat = f"{_TAP_PREFIX}_{index}_pooled", f"{_TAP_PREFIX}_{index}"
        if pooled in taken or flat in taken:
            raise ValueError(f"the ONNX graph already has a tensor named {flat!r}")
        graph.node.append(onnx.helper.make_node("GlobalAveragePool", [stage.name], [pooled], name=pooled))
        graph.node.append(onnx.helper.make_node("Flatten", [pooled], [flat], name=flat, axis=1))
        outputs.append(flat)
    logits_copy = onnx.ValueInfoProto()
    logits_copy.CopyFrom(logits)
    del graph.output[:]
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in outputs)
    graph.output.append(logits_copy)
    return model, outputs, logits_copy.name


# --------------------------------------------------------------------------------------------------
# the callable


class FeatureTaps:
    """Pooled multi-scale features of a teacher; made by :func:`feature_taps`.

    ``taps(images)`` -> a list with one float32 CPU tensor ``(N, C_s)`` per stage (global average pools of the
    stage's feature map). ``images`` are ``(N, C, H, W)``: for a :class:`~compression.teachers.Teacher`, raw
    ``[0, 1]`` pixels of any size (adapted and normalised like ``teacher(images)``); otherwise exactly the
    model's input at ``input_shape``.

    Attributes: ``stages`` (:class:`FeatureStage` per stage), ``channels`` (``C_s`` per stage),
    ``input_shape``, ``fixed_batch_size`` (batches are padded to it when the graph's batch is static),
    ``onnx_model`` (the graph the features come from), ``session`` (its ONNX Runtime session with only the taps
    as outputs).
    """

    def __init__(
        self,
        *,
        stages: list[FeatureStage],
        onnx_model: onnx.ModelProto,
        session: ort.InferenceSession,
        output_names: list[str],
        input_shape: tuple[int, int, int],
        input_type: type[np.floating[Any]],
        fixed_batch_size: int | None,
        teacher: Teacher | None = None,
        logits_name: str | None = None,
    ) -> None:
        self.stages = tuple(stages)
        self.onnx_model = onnx_model
        self.session = session
        self.input_shape = input_shape
        self.fixed_batch_size = fixed_batch_size
        self._output_names = list(output_names)
        self._logits_name = logits_name
        self._input_name = session.get_inputs()[0].name
        self._input_type = input_type
        self._teacher = teacher

    @property
    def channels(self) -> list[int]:
        return [stage.channels for stage in self.stages]

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        count = batch.shape[0]
        size = self.fixed_batch_size
        if size is None:
            return self.session.run(names, {self._input_name: batch})
        parts: list[list[np.ndarray]] = []
        for start in range(0, count, size):
            chunk = batch[start : start + size]
            if chunk.shape[0] < size:
                chunk = np.concatenate([chunk, np.zeros((size - chunk.shape[0], *chunk.shape[1:]), chunk.dtype)])
            parts.append(self.session.run(names, {self._input_name: chunk}))
        return [np.concatenate([part[i] for part in parts])[:count] for i in range(len(names))]

    def __call__(self, images: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> list[torch.Tensor]:
        """Pooled features, one ``(N, C_s)`` float32 tensor per stage, computed in batches of ``batch_size``."""
        return self._compute(images, batch_size, self._output_names)

    def features_and_logits(
        self, images: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The pooled features (as :meth:`__call__`) and the teacher's logits ``(N, K)`` from the same pass."""
        if self._logits_name is None:
            raise ValueError("these taps were built without the logits output")
        *features, logits = self._compute(images, batch_size, [*self._output_names, self._logits_name])
        return features, logits

    def _compute(self, images: torch.Tensor, batch_size: int, names: list[str]) -> list[torch.Tensor]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
        if self._teacher is None and tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(images.shape)}"
            )
        if self._teacher is not None and images.is_floating_point():
            check_pixel_range(images)
        outputs: list[list[torch.Tensor]] = [[] for _ in names]
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].detach().cpu()
                if self._teacher is not None:
                    batch = self._teacher.preprocess.prepare(batch)
                elif not batch.is_floating_point():
                    raise TypeError(f"images must be floating-point, got {batch.dtype}")
                feed = np.ascontiguousarray(batch.numpy().astype(self._input_type, copy=False))
                for index, value in enumerate(self._run(feed, names)):
                    outputs[index].append(torch.from_numpy(np.asarray(value, dtype=np.float32)))
        return [torch.cat(parts) for parts in outputs]

    def __repr__(self) -> str:
        shown = ", ".join(f"{s.channels}@{s.height}x{s.width}" for s in self.stages)
        return f"FeatureTaps(input_shape={self.input_shape}, stages=[{shown}])"


def _teacher_onnx(teacher: Teacher) -> onnx.ModelProto:
    if teacher.module is not None:
        return torch_to_onnx(teacher.module, teacher.input_shape, fixed_batch_size=teacher.fixed_batch_size)
    try:
        data = Path(teacher.path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot re-read the ONNX teacher file {teacher.path} ({exc})") from exc
    if hashlib.sha256(data).hexdigest() != teacher.file_sha256:
        raise ValueError(f"teacher file {teacher.path} changed since it was loaded (SHA-256 differs); load it again")
    return onnx.load_from_string(data)


def _check_agreement(what: str, expected: np.ndarray, actual: np.ndarray) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if expected.shape != actual.shape or not np.allclose(actual, expected, rtol=1e-3, atol=1e-4 * scale):
        raise RuntimeError(f"{what} disagree (shapes {expected.shape} / {actual.shape}); cannot tap features reliably")


def feature_taps(
    model: Teacher | nn.Module | onnx.ModelProto | bytes | str | os.PathLike[str],
    input_shape: Sequence[int] | None = None,
    *,
    stages: int | None = None,
    min_channels: int = DEFAULT_MIN_CHANNELS,
    num_threads: int | None = None,
) -> FeatureTaps:
    """Find a teacher's multi-scale feature maps and return a :class:`FeatureTaps` that pools them.

    Args:
        model: a :class:`~compression.teachers.Teacher` (from ``compression.load_teacher``; its images are then
            raw ``[0, 1]`` pixels), a torch ``nn.Module`` / ScriptModule / ``GraphModule`` (its own inputs), or an
            ONNX model (``onnx.ModelProto``, serialised bytes, or a file path).
        input_shape: ``(C, H, W)``; required for torch modules and ONNX graphs with dynamic ``C/H/W``, taken from
            the teacher for a ``Teacher``.
        stages: keep only the last (deepest) ``stages`` stages; default all.
        min_channels: feature maps with fewer channels are not stages (default 4; the input's channel count
            + 1 at least).
        num_threads: ONNX Runtime intra-op threads (default: its own choice).

    Raises TypeError / ValueError for bad arguments or a graph without any 4-d feature map; RuntimeError when
    the exported graph's logits or taps disagree with the model on the probe batch.
    """
    if stages is not None and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 1):
        raise ValueError(f"stages must be a positive int or None, got {stages!r}")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    teacher: Teacher | None = None
    torch_model: nn.Module | None = None
    if isinstance(model, Teacher):
        teacher = model
        if input_shape is not None and _check_shape(input_shape) != teacher.input_shape:
            raise ValueError(f"input_shape {tuple(input_shape)} disagrees with the teacher's {teacher.input_shape}")
        input_shape = teacher.input_shape
        proto = _teacher_onnx(teacher)
        torch_model = teacher.module
    elif isinstance(model, nn.Module):
        if input_shape is None:
            raise ValueError("input_shape=(C, H, W) is required for a torch module")
        torch_model = model
        proto = torch_to_onnx(model, _check_shape(input_shape))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, bytes):
        proto = onnx.load_from_string(model)
    elif isinstance(model, str | os.PathLike):
        proto = onnx.load_from_string(Path(model).read_bytes())
    else:
        raise TypeError(
            "model must be a Teacher, torch.nn.Module, onnx.ModelProto, bytes or ONNX file path, "
            f"got {type(model).__name__}"
        )
    found, probe = _analyse(proto, input_shape, min_channels=min_channels, num_threads=num_threads)
    if not found:
        raise ValueError(
            "no 4-d feature maps (N, C, h, w) with h * w > 1 and enough channels found: not a convolutional model?"
        )
    if stages is not None:
        found = found[-stages:]
    if torch_model is not None:
        was_training = torch_model.training
        with torch.no_grad(), contextlib.suppress(NotImplementedError):
            torch_model.eval()
        try:
            with torch.no_grad():
                expected = torch_model(torch.from_numpy(probe["feed"]).to(_floating_dtype(torch_model)))
        finally:
            if was_training:
                with contextlib.suppress(NotImplementedError):
                    torch_model.train()
        if not isinstance(expected, torch.Tensor):
            raise TypeError(f"the model returned {type(expected).__name__}, not a single logits tensor")
        _check_agreement("the ONNX export's logits and the torch model's", expected.float().numpy(), probe["output"])
    tap_proto, output_names, logits_name = _tap_model(proto, found)
    session = ort.InferenceSession(
        tap_proto.SerializeToString(), _session_options(num_threads, optimise=True), providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    pooled = session.run(output_names, {input_name: probe["feed"]})
    for stage, value in zip(found, pooled, strict=True):
        reference = probe["values"][stage.name].astype(np.float64).mean(axis=(2, 3))
        _check_agreement(f"the pooled tap {stage.name!r} and the probe's", reference, value)
    if probe["fixed_batch_size"] is None:  # a batch size other than the export's: catches a baked-in batch
        single = session.run(output_names, {input_name: probe["feed"][:1]})
        for stage, value, batched in zip(found, single, pooled, strict=True):
            _check_agreement(f"the pooled tap {stage.name!r} at batch sizes 1 and {_PROBE_BATCH}", batched[:1], value)
    return FeatureTaps(
        stages=found,
        onnx_model=proto,
        session=session,
        output_names=output_names,
        input_shape=probe["input_shape"],
        input_type=probe["input_type"],
        fixed_batch_size=probe["fixed_batch_size"],
        teacher=teacher,
        logits_name=logits_name,
    )
