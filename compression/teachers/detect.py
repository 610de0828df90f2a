"""Recognising a teacher file's format from its *content* (never its extension), before any loader sees it.

- A zip archive (opened by :func:`compression.teachers.archive.open_archive`) is ``"torch_export"`` when it
  has ``archive_format``, ``"torchscript"`` when it has ``data.pkl`` plus TorchScript source under
  ``code/``; a zip with ``data.pkl`` but no ``code/`` is a ``torch.save`` pickle.
- A raw pickle is recognised by its protocol header ``0x80 0x02-0x05``.
- Anything else must parse as an ONNX protobuf (``"onnx"``).

Pickles are refused here, by their bytes alone, with :class:`PickledModelError` and
:data:`EXPORT_INSTRUCTIONS`: nothing is unpickled. Other unusable files (pre-2.6 torch.export archives,
safetensors weights, truncated ONNX, anything unrecognised) raise :class:`TeacherLoadError`.
"""

from __future__ import annotations

import mmap
import os
from typing import Literal

import onnx

from compression.teachers.archive import (
    DEFAULT_MAX_TEACHER_BYTES,
    Archive,
    Upload,
    check_max_bytes,
    open_archive,
    read_upload,
)
from compression.teachers.errors import EXPORT_INSTRUCTIONS, PickledModelError
from compression.teachers.onnx_skeleton import onnx_skeleton

__all__ = ["TEACHER_FORMATS", "TeacherFormat", "detect", "detect_teacher_format"]

TeacherFormat = Literal["torchscript", "torch_export", "onnx"]
TEACHER_FORMATS: tuple[TeacherFormat, ...] = ("torchscript", "torch_export", "onnx")

_ZIP_MAGIC = b"PK\x03\x04"
_ONNX_FIRST_BYTE = 0x08  # field 1 (ir_version), varint: how every ONNX writer starts the file


def _classify_archive(upload: Upload, archive: Archive) -> TeacherFormat:
    members = archive.members
    if "archive_format" in members:
        return "torch_export"
    if "serialized_exported_program.json" in members:
        raise upload.fail(
            "a torch.export archive in the pre-2.6 format, which stores its weights as pickles (refused); "
            "re-save it with torch.export.save from torch >= 2.6"
        )
    has_code = any(name.startswith("code/") for name in members)
    if "data.pkl" in members and has_code:
        return "torchscript"
    if "data.pkl" in members:
        raise PickledModelError(
            upload.path,
            "this is a pickled PyTorch checkpoint (torch.save of a model or a state_dict); it was not opened.\n"
            + EXPORT_INSTRUCTIONS,
        )
    raise upload.fail(
        "a PyTorch-style zip archive, but neither a TorchScript nor a torch.export archive\n" + EXPORT_INSTRUCTIONS
    )


def _is_pickle(data: bytes | mmap.mmap) -> bool:
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _looks_like_safetensors(data: bytes | mmap.mmap) -> bool:
    if len(data) < 10:
        return False
    header_length = int.from_bytes(data[:8], "little")
    return 2 <= header_length <= len(data) - 8 and data[8:9] == b"{"


def _parse_onnx(upload: Upload) -> onnx.ModelProto | None:
    """The parsed model; for a memory-mapped upload its structure without the weights (``onnx_skeleton``)."""
    if upload.mapped:
        try:
            proto = onnx_skeleton(upload.path)
        except (ValueError, OSError):
            return None
    else:
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(upload.data)
        except Exception:
            return None
    if proto.ir_version < 1 or not proto.opset_import or not proto.graph.node:
        return None
    return proto


def detect(upload: Upload, max_bytes: int) -> tuple[TeacherFormat, Archive | onnx.ModelProto]:
    data = upload.data
    if data[: len(_ZIP_MAGIC)] == _ZIP_MAGIC:
        archive = open_archive(upload, max_bytes)
        return _classify_archive(upload, archive), archive
    if _is_pickle(data):
        raise PickledModelError(
            upload.path,
            "this is a Python pickle (e.g. torch.save of a model or a state_dict); it was not opened.\n"
            + EXPORT_INSTRUCTIONS,
        )
    proto = _parse_onnx(upload)
    if proto is not None:
        return "onnx", proto
    if _looks_like_safetensors(data):
        reason = "a safetensors file holds weights only, not the model's architecture"
    elif data[0] == _ONNX_FIRST_BYTE:
        reason = "it starts like an ONNX model but does not parse: truncated or corrupt"
    else:
        reason = "not a recognised model file (not TorchScript, torch.export or ONNX)"
    raise upload.fail(f"{reason}\n{EXPORT_INSTRUCTIONS}")


def detect_teacher_format(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_TEACHER_BYTES) -> TeacherFormat:
    """The format of the model file at ``path``, from its content, without loading the model.

    Raises :class:`PickledModelError` for pickles and :class:`TeacherLoadError` for anything else
    unusable (missing, empty, too large, corrupt, unrecognised).
    """
    max_bytes = check_max_bytes(max_bytes)
    upload = read_upload(path, max_bytes)
    return detect(upload, max_bytes)[0]
