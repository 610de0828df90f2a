"""One-call model profile: size, arithmetic, exported-file size and ONNX Runtime latency.

:func:`profile` combines :func:`~compression.metrics.ops.count_ops`,
:func:`~compression.metrics.ops.count_parameters`, :func:`~compression.metrics.ops.weight_bytes`,
:func:`~compression.export.onnx.export_onnx` (always with verification, so the latency is that of a
file known to compute the same function) and
:func:`~compression.metrics.latency.measure_onnx_latency`. ``ModelProfile.as_dict()`` is
JSON-serialisable (latency keys are batch sizes as strings, as JSON requires).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.export.onnx import OnnxExport, OnnxVerification, export_onnx
from compression.metrics.bitops import bit_ops_of
from compression.metrics.latency import LatencyStats, check_count, measure_onnx_latency
from compression.metrics.ops import (
    ModelOps,
    check_batch_sizes,
    check_input_shape,
    check_model,
    count_ops,
    count_parameters,
    weight_bytes,
)

__all__ = ["ModelProfile", "profile"]

_EXAMPLE_SEED = 0
_EXAMPLE_BATCH = 2  # export example batch; verification adds batches of 1 and num_samples - 1


@dataclass(frozen=True)
class ModelProfile:
    """Everything the service reports about a (compressed) model."""

    input_shape: tuple[int, ...]  # (C, H, W) of one sample
    parameters: int
    macs: int
    multiplications: int
    additions: int
    binary_ops: int
    weight_bytes: int
    bit_ops: int  # MACs x weight bits x activation bits, float layers at 32 x 32 (compression.metrics.bitops)
    onnx_bytes: int
    onnx_opset: int
    exporter: str
    verification: OnnxVerification | None
    latency: dict[int, LatencyStats] = field(default_factory=dict)  # empty when latency=False
    ops: ModelOps | None = None  # per-layer breakdown

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "parameters": self.parameters,
            "macs": self.macs,
            "multiplications": self.multiplications,
            "additions": self.additions,
            "binary_ops": self.binary_ops,
            "bit_ops": self.bit_ops,
            "weight_bytes": self.weight_bytes,
            "onnx_bytes": self.onnx_bytes,
            "onnx_opset": self.onnx_opset,
            "exporter": self.exporter,
            "verification": None if self.verification is None else self.verification.as_dict(),
            "latency": {str(size): stats.as_dict() for size, stats in self.latency.items()},
            "layers": [] if self.ops is None else [layer.as_dict() for layer in self.ops.layers],
        }


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    latency: bool = True,
    onnx_path: str | os.PathLike[str] | None = None,
    repeats: int = 50,
    warmup: int = 5,
    intra_op_num_threads: int | None = None,
    opset: int | None = None,
    atol: float = 1e-4,
    rtol: float = 0.0,
    min_top1_agreement: float = 1.0,
    sample_inputs: Sequence[torch.Tensor] | None = None,
) -> ModelProfile:
    """Profile ``model`` for inputs of ``input_shape`` = ``(C, H, W)`` (one sample).

    The model is exported with :func:`export_onnx` (verification on; ``atol``, ``rtol`` and
    ``min_top1_agreement`` are passed through -- binary students need a looser ``atol``) to
    ``onnx_path``, which is kept, or, when ``onnx_path`` is None, to a temporary folder that is
    removed before returning. ``sample_inputs`` (batches of real data) replace the random verification
    batches: a binary student's top-1 is only meaningful on data it was trained for.
    With ``latency`` the file is timed for every size in ``batch_sizes``.
    Op counts are per sample (batch size 1).
    """
    model = check_model(model)
    shape = check_input_shape(input_shape, ndim=3)
    sizes = check_batch_sizes(batch_sizes)
    if onnx_path is not None and not isinstance(onnx_path, str | os.PathLike):
        raise TypeError(f"onnx_path must be None, a str or os.PathLike, got {type(onnx_path).__name__}")
    if latency:  # validate before the (slow) export rather than after it
        check_count(repeats, "repeats", 1)
        check_count(warmup, "warmup", 0)
        if intra_op_num_threads is not None:
            check_count(intra_op_num_threads, "intra_op_num_threads", 0)

    ops = count_ops(model, shape)
    generator = torch.Generator().manual_seed(_EXAMPLE_SEED)
    example = torch.randn((_EXAMPLE_BATCH, *shape), generator=generator)
    floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if floats:
        example = example.to(dtype=floats[0].dtype)

    def export_and_time(path: Path) -> tuple[OnnxExport, dict[int, LatencyStats]]:
        exported = export_onnx(
            model,
            path,
            example,
            opset=opset,
            atol=atol,
            rtol=rtol,
            min_top1_agreement=min_top1_agreement,
            sample_inputs=sample_inputs,
        )
        timings: dict[int, LatencyStats] = {}
        if latency:
            timings = measure_onnx_latency(
                exported.path, shape, sizes, repeats, warmup, intra_op_num_threads=intra_op_num_threads
            )
        return exported, timings

    if onnx_path is None:
        with tempfile.TemporaryDirectory(prefix="condense-profile-") as folder:
            exported, timings = export_and_time(Path(folder) / "model.onnx")
    else:
        exported, timings = export_and_time(Path(onnx_path))

    return ModelProfile(
        input_shape=shape,
        parameters=count_parameters(model),
        macs=ops.macs,
        multiplications=ops.multiplications,
        additions=ops.additions,
        binary_ops=ops.binary_ops,
        bit_ops=bit_ops_of(ops),
        weight_bytes=weight_bytes(model),
        onnx_bytes=exported.file_bytes,
        onnx_opset=exported.opset,
        exporter=exported.exporter,
        verification=exported.verification,
        latency=timings,
        ops=ops,
    )
