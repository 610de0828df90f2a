"""What an ONNX export produces and raises: the graph's input and output names, :class:`OnnxExport`,
:class:`OnnxVerification` and the errors.

Errors: :class:`OnnxExportError` (a :class:`RuntimeError`) and its subclasses
:class:`OnnxVerificationError` and :class:`NonStandardDomainError`. They are runtime errors, not
``ValueError``: the caller's arguments were valid -- it is the produced artifact that turned out
unacceptable -- so a caller (the service) can tell "bad request" (``ValueError``/``TypeError``, raised
for bad arguments) from "this model cannot be delivered as ONNX" (``OnnxExportError``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "NonStandardDomainError",
    "OnnxExport",
    "OnnxExportError",
    "OnnxVerification",
    "OnnxVerificationError",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class OnnxExportError(RuntimeError):
    """The model could not be exported to an acceptable ONNX file."""


class NonStandardDomainError(OnnxExportError):
    """The ONNX graph uses an operator domain outside :data:`~compression.export.onnx_graph.STANDARD_DOMAINS`."""


class OnnxVerificationError(OnnxExportError):
    """ONNX Runtime's outputs do not match PyTorch's closely enough.

    A ``RuntimeError`` (via :class:`OnnxExportError`), not a ``ValueError``: the arguments were fine,
    the produced file is what failed. ``verification`` holds the measured result (``None`` when ONNX
    Runtime could not even run).
    """

    def __init__(self, message: str, verification: OnnxVerification | None = None) -> None:
        super().__init__(message)
        self.verification = verification


@dataclass(frozen=True)
class OnnxVerification:
    """Outcome of running an ONNX file and its PyTorch model on the same inputs."""

    max_abs_diff: float
    top1_agreement: float
    num_samples: int
    batch_sizes: tuple[int, ...]
    atol: float
    rtol: float
    min_top1_agreement: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    def describe(self) -> str:
        tol = f"atol={self.atol:g}" + (f", rtol={self.rtol:g}" if self.rtol else "")
        return (
            f"max abs diff {self.max_abs_diff:.3g} (tolerance {tol}), top-1 agreement "
            f"{self.top1_agreement:.2%} (required {self.min_top1_agreement:.2%}) over "
            f"{self.num_samples} samples in batches of {list(self.batch_sizes)}"
        )


@dataclass(frozen=True)
class OnnxExport:
    """A written, checked (and, unless disabled, verified) ONNX file."""

    path: Path
    file_bytes: int
    opset: int
    exporter: str  # "dynamo" or "torchscript" (fallback)
    input_shape: tuple[int | str, ...]  # batch dimension given as "batch"
    export_seconds: float
    verification: OnnxVerification | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "file_bytes": self.file_bytes,
            "opset": self.opset,
            "exporter": self.exporter,
            "input_shape": list(self.input_shape),
            "export_seconds": self.export_seconds,
            "verification": None if self.verification is None else self.verification.as_dict(),
            "input_name": self.input_name,
            "output_name": self.output_name,
            "notes": list(self.notes),
        }
