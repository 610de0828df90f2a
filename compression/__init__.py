"""Condense's compression core: student layers and architectures, conversion, ONNX export, metrics.

Pure PyTorch (plus ONNX / ONNX Runtime for export and latency): no web framework, no storage.
"""

from __future__ import annotations

from compression.convert import ConversionReport, convert_
from compression.deploy import deploy_
from compression.distill import DistillConfig, DistillResult, default_config, distill, evaluate
from compression.export import OnnxExport, OnnxVerificationError, export_onnx, verify_onnx
from compression.metrics import count_ops, count_parameters
from compression.profiling import ModelProfile, profile
from compression.students import Budget, create_student, list_students
from compression.teachers import Teacher, TeacherLoadError, load_teacher

__all__ = [
    "Budget",
    "ConversionReport",
    "DistillConfig",
    "DistillResult",
    "ModelProfile",
    "OnnxExport",
    "OnnxVerificationError",
    "Teacher",
    "TeacherLoadError",
    "convert_",
    "count_ops",
    "count_parameters",
    "create_student",
    "default_config",
    "deploy_",
    "distill",
    "evaluate",
    "export_onnx",
    "list_students",
    "load_teacher",
    "profile",
    "verify_onnx",
]
