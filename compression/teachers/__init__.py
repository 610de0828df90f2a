"""Teachers: loading a user's trained classifier safely (TorchScript, torch.export, ONNX) and running it.

``load_teacher(path, input_shape=..., mean=..., std=...)`` detects the format from the file's content,
refuses pickles with instructions to export the model instead, and returns a :class:`Teacher` that maps
raw ``[0, 1]`` images to logits. See :mod:`compression.teachers.loading` for what "safely" relies on (an
overview pointing to the module that does each part) and :mod:`compression.teachers.preprocessing` for
input adaptation and normalisation.
"""

from __future__ import annotations

from compression.teachers.archive import DEFAULT_MAX_TEACHER_BYTES
from compression.teachers.detect import TEACHER_FORMATS, TeacherFormat, detect_teacher_format
from compression.teachers.errors import EXPORT_INSTRUCTIONS, PickledModelError, TeacherLoadError
from compression.teachers.loading import (
    DEFAULT_BATCH_SIZE,
    Teacher,
    TeacherOutputCache,
    load_teacher,
    teacher_logits,
)
from compression.teachers.preprocessing import (
    LUMINANCE_WEIGHTS,
    ONNX_MEAN_KEY,
    ONNX_STD_KEY,
    TORCHSCRIPT_MEAN_ATTRIBUTE,
    TORCHSCRIPT_STD_ATTRIBUTE,
    InputSpec,
    adapt_images,
    check_pixel_range,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_TEACHER_BYTES",
    "EXPORT_INSTRUCTIONS",
    "LUMINANCE_WEIGHTS",
    "ONNX_MEAN_KEY",
    "ONNX_STD_KEY",
    "TEACHER_FORMATS",
    "TORCHSCRIPT_MEAN_ATTRIBUTE",
    "TORCHSCRIPT_STD_ATTRIBUTE",
    "InputSpec",
    "PickledModelError",
    "Teacher",
    "TeacherFormat",
    "TeacherLoadError",
    "TeacherOutputCache",
    "adapt_images",
    "check_pixel_range",
    "detect_teacher_format",
    "load_teacher",
    "teacher_logits",
]
