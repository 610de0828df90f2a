"""Verified ONNX export of compressed students (see :mod:`compression.export.onnx`), and the in-memory ONNX graph
of a torch teacher for analysis (:mod:`compression.export.in_memory`)."""

from __future__ import annotations

from compression.export.in_memory import torch_to_onnx
from compression.export.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    STANDARD_DOMAINS,
    NonStandardDomainError,
    OnnxExport,
    OnnxExportError,
    OnnxVerification,
    OnnxVerificationError,
    check_standard_domains,
    export_onnx,
    verify_onnx,
)

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "STANDARD_DOMAINS",
    "NonStandardDomainError",
    "OnnxExport",
    "OnnxExportError",
    "OnnxVerification",
    "OnnxVerificationError",
    "check_standard_domains",
    "export_onnx",
    "torch_to_onnx",
    "verify_onnx",
]
