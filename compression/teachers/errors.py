"""Why a teacher file is refused: :class:`TeacherLoadError`, its subclass :class:`PickledModelError`, and
:data:`EXPORT_INSTRUCTIONS`, the one-line commands that export a model to an accepted format.

A file that cannot be used raises :class:`TeacherLoadError` (a ``ValueError``) naming the file and the
reason; pickles raise :class:`PickledModelError` and are never opened. :func:`describe_exception` shortens
a loader's exception to one line for these messages.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EXPORT_INSTRUCTIONS", "PickledModelError", "TeacherLoadError", "describe_exception"]

EXPORT_INSTRUCTIONS = """\
Condense accepts exported models only -- TorchScript, torch.export (.pt2) or ONNX -- never pickles
(torch.save of a model or a state_dict): loading a pickle runs whatever code it contains. Export yours
with one of these, where example = torch.rand(1, C, H, W) is one input batch:
  TorchScript:  torch.jit.save(torch.jit.script(model.eval()), "teacher.pt")
                (or torch.jit.trace(model.eval(), example) in place of torch.jit.script(model.eval()))
  torch.export: torch.export.save(torch.export.export(model.eval(), (example,)), "teacher.pt2")
  ONNX:         torch.onnx.export(model.eval(), (example,), "teacher.onnx", dynamo=True)"""


class TeacherLoadError(ValueError):
    """The file cannot be used as a teacher; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot load teacher {os.fspath(path)!r}: {reason}")
        self.path = Path(path)
        self.reason = reason


class PickledModelError(TeacherLoadError):
    """The file is a pickle (``torch.save`` of a model or state_dict): refused, never unpickled."""


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """The innermost cause's type and first message line (loader errors can be pages long)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
    text = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
