"""TorchScript teachers (``"torchscript"``): validating and loading a ``torch.jit.save`` archive.

The archive is a zip with ``data.pkl`` plus TorchScript source under ``code/``, from ``torch.jit.script``
or ``torch.jit.trace``. It records no input shape, so ``input_shape=(C, H, W)`` must be given to
:func:`compression.teachers.loading.load_teacher`.

Never unpickling an upload (torch 2.14.1, pinned in pyproject.toml): ``torch.jit.load`` reads
``data.pkl``, ``constants.pkl`` (and lazily ``*.debug_pkl``) with torch's own C++ unpickler
(``torch/csrc/jit/serialization/unpickler.cpp``), never Python's ``pickle``: a ``GLOBAL`` opcode resolves
only against a fixed table of tensor-rebuilding functions and the archive's own TorchScript classes
(``__torch__.*``, compiled from ``code/`` by the TorchScript compiler, a language without
``import``/``eval``); anything else fails with "Unknown type name". The tests feed it a pickle whose
``__reduce__`` would create a file and check that it fails and that no file appears. Before loading, the
archive's members are checked against what ``torch.jit.save`` writes (unknown members are refused), and
the TorchScript source is refused if it calls ``save``, ``from_file`` or ``load_tensor`` (the registered
operators that read or write files: found by listing every registered operator schema) or an operator
namespace other than ``aten`` / ``prim`` / ``quantized``.
"""

from __future__ import annotations

import io
import re
import warnings

import torch

from compression.teachers.archive import Archive, Upload
from compression.teachers.loaded_model import LoadedModel, torch_runner
from compression.teachers.preprocessing import TORCHSCRIPT_MEAN_ATTRIBUTE, TORCHSCRIPT_STD_ATTRIBUTE

__all__ = ["load_torchscript"]

_TORCHSCRIPT_MEMBER = re.compile(
    r"(data\.pkl|constants\.pkl|version|byteorder|\.data/version|\.data/serialization_id"
    r"|data/\d+|constants/\d+|traced_inputs\.pkl|traced_inputs/\d+"
    r"|code/[\w./-]+\.py|code/[\w./-]+\.py\.debug_pkl|extra/.+)"
)
# TorchScript cannot build a name at run time, so every operator call appears in the source by name.
_TORCHSCRIPT_FORBIDDEN_CALL = re.compile(r"\.\s*(save|from_file|load_tensor)\b")
_TORCHSCRIPT_OPERATOR_NAMESPACE = re.compile(r"\bops\s*\.\s*(\w+)")
_TORCHSCRIPT_ALLOWED_NAMESPACES = frozenset({"aten", "prim", "quantized"})


def _check_torchscript_archive(upload: Upload, archive: Archive) -> None:
    unexpected = sorted(name for name in archive.members if not _TORCHSCRIPT_MEMBER.fullmatch(name))
    if unexpected:
        raise upload.fail(f"unexpected members in the TorchScript archive (refused): {unexpected[:10]}")
    for name in sorted(archive.members):
        if not (name.startswith("code/") and name.endswith(".py")):
            continue
        try:
            source = archive.read(name).decode("utf-8")
        except UnicodeDecodeError:
            raise upload.fail(f"TorchScript source {name!r} is not UTF-8 text") from None
        forbidden = _TORCHSCRIPT_FORBIDDEN_CALL.search(source)
        if forbidden:
            raise upload.fail(
                f"the TorchScript code in {name!r} calls {forbidden.group(1)!r}, which touches files (refused)"
            )
        for namespace in _TORCHSCRIPT_OPERATOR_NAMESPACE.findall(source):
            if namespace not in _TORCHSCRIPT_ALLOWED_NAMESPACES:
                raise upload.fail(
                    f"the TorchScript code in {name!r} calls operators from namespace {namespace!r}; "
                    f"only {sorted(_TORCHSCRIPT_ALLOWED_NAMESPACES)} are accepted"
                )


def load_torchscript(upload: Upload, archive: Archive) -> LoadedModel:
    _check_torchscript_archive(upload, archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(upload.data), map_location="cpu")
    module.eval()
    return LoadedModel(
        run=torch_runner(module),
        input_dims=None,
        mean=getattr(module, TORCHSCRIPT_MEAN_ATTRIBUTE, None),
        std=getattr(module, TORCHSCRIPT_STD_ATTRIBUTE, None),
        mean_origin=f"attribute {TORCHSCRIPT_MEAN_ATTRIBUTE}",
        std_origin=f"attribute {TORCHSCRIPT_STD_ATTRIBUTE}",
        parameter_count=sum(p.numel() for p in module.parameters()),
        module=module,
    )
