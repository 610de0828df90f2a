"""Condense's compression core: student layers and architectures, conversion, ONNX export, metrics.

Pure PyTorch (plus ONNX / ONNX Runtime for export and latency): no web framework, no storage.

The names below are loaded on first use (PEP 562), so that importing a light submodule (for example
``compression.metrics.intervals``, which the service's pages and CLI read reports with) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compression.convert import ConversionReport, convert_
    from compression.deploy import deploy_
    from compression.distill import DistillConfig, DistillResult, default_config, distill, evaluate
    from compression.export import OnnxExport, OnnxVerificationError, export_onnx, verify_onnx
    from compression.metrics import count_ops, count_parameters
    from compression.profiling import ModelProfile, profile
    from compression.students import Budget, create_student, list_students
    from compression.teachers import Teacher, TeacherLoadError, load_teacher

_WHERE = {
    "ConversionReport": "compression.convert",
    "convert_": "compression.convert",
    "deploy_": "compression.deploy",
    "DistillConfig": "compression.distill",
    "DistillResult": "compression.distill",
    "default_config": "compression.distill",
    "distill": "compression.distill",
    "evaluate": "compression.distill",
    "OnnxExport": "compression.export",
    "OnnxVerificationError": "compression.export",
    "export_onnx": "compression.export",
    "verify_onnx": "compression.export",
    "count_ops": "compression.metrics",
    "count_parameters": "compression.metrics",
    "ModelProfile": "compression.profiling",
    "profile": "compression.profiling",
    "Budget": "compression.students",
    "create_student": "compression.students",
    "list_students": "compression.students",
    "Teacher": "compression.teachers",
    "TeacherLoadError": "compression.teachers",
    "load_teacher": "compression.teachers",
}

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


class _Package(types.ModuleType):
    """Keeps an exported function named like a submodule (``distill``) from being replaced by that submodule when
    the submodule is imported: ``compression.distill`` stays the function, as with eager imports."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'compression' has no attribute {name!r}")
