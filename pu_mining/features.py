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
  :class:`~compression.teachers.Teacher`'s ``module``) are exported once by
  :func:`~compression.export.in_memory.torch_to_onnx` with the TorchScript-based exporter
  (``torch.onnx.export(..., dynamo=False)``: tens of milliseconds, and it accepts ScriptModules), in eval mode
  (``TrainingMode.EVAL``; a module that refuses ``train()``, like the ``torch.export`` ``GraphModule``, is
  exported as it is). The ONNX logits are checked against the torch model's on a probe batch.
- ONNX models (a file, bytes, an ``onnx.ModelProto`` or an ONNX :class:`~compression.teachers.Teacher`, whose
  file is re-read and must still match the SHA-256 recorded at load time) are used directly. Files with
  external data are refused.

How the taps are found: :mod:`pu_mining.feature_stages` (:func:`find_feature_stages`).

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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compression.export.in_memory import check_input_shape, floating_dtype, torch_to_onnx
from compression.teachers import Teacher, check_pixel_range
from pu_mining.feature_stages import (
    DEFAULT_MIN_CHANNELS,
    PROBE_BATCH,
    FeatureStage,
    analyse_stages,
    find_feature_stages,
    session_options,
)

__all__ = [
    "DEFAULT_MIN_CHANNELS",
    "FeatureStage",
    "FeatureTaps",
    "feature_taps",
    "find_feature_stages",
    "torch_to_onnx",
]

DEFAULT_BATCH_SIZE = 256

_TAP_PREFIX = "condense_tap"


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
        if input_shape is not None and check_input_shape(input_shape) != teacher.input_shape:
            raise ValueError(f"input_shape {tuple(input_shape)} disagrees with the teacher's {teacher.input_shape}")
        input_shape = teacher.input_shape
        proto = _teacher_onnx(teacher)
        torch_model = teacher.module
    elif isinstance(model, nn.Module):
        if input_shape is None:
            raise ValueError("input_shape=(C, H, W) is required for a torch module")
        torch_model = model
        proto = torch_to_onnx(model, check_input_shape(input_shape))
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
    found, probe = analyse_stages(proto, input_shape, min_channels=min_channels, num_threads=num_threads)
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
                expected = torch_model(torch.from_numpy(probe["feed"]).to(floating_dtype(torch_model)))
        finally:
            if was_training:
                with contextlib.suppress(NotImplementedError):
                    torch_model.train()
        if not isinstance(expected, torch.Tensor):
            raise TypeError(f"the model returned {type(expected).__name__}, not a single logits tensor")
        _check_agreement("the ONNX export's logits and the torch model's", expected.float().numpy(), probe["output"])
    tap_proto, output_names, logits_name = _tap_model(proto, found)
    session = ort.InferenceSession(
        tap_proto.SerializeToString(), session_options(num_threads, optimise=True), providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    pooled = session.run(output_names, {input_name: probe["feed"]})
    for stage, value in zip(found, pooled, strict=True):
        reference = probe["values"][stage.name].astype(np.float64).mean(axis=(2, 3))
        _check_agreement(f"the pooled tap {stage.name!r} and the probe's", reference, value)
    if probe["fixed_batch_size"] is None:  # a batch size other than the export's: catches a baked-in batch
        single = session.run(output_names, {input_name: probe["feed"][:1]})
        for stage, value, batched in zip(found, single, pooled, strict=True):
            _check_agreement(f"the pooled tap {stage.name!r} at batch sizes 1 and {PROBE_BATCH}", batched[:1], value)
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
