"""Verified ONNX export of compressed students (see :mod:`compression.export.onnx`)."""

from __future__ import annotations

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
    "verify_onnx",
]
