"""Loading a user's trained classifier (the *teacher*) safely, and running it.

:func:`load_teacher` accepts three formats, recognised from the file's *content* (never its extension):

- ``"torchscript"``: a ``torch.jit.save`` archive (zip with ``data.pkl`` plus TorchScript source under
  ``code/``), from ``torch.jit.script`` or ``torch.jit.trace``. It records no input shape, so
  ``input_shape=(C, H, W)`` must be given.
- ``"torch_export"``: a ``torch.export.save`` archive (``.pt2``: zip with ``archive_format`` = ``pt2``,
  the program as JSON under ``models/`` and raw weight bytes under ``data/``). The input shape comes from
  the program's input spec.
- ``"onnx"``: an ONNX protobuf, run with ONNX Runtime (CPU). The input shape comes from the graph input.

The class count comes from one forward pass on a zero input. Anything that would need unpickling --
``torch.save(model)``, ``torch.save(model.state_dict())``, a raw pickle -- is refused with
:data:`EXPORT_INSTRUCTIONS`, the one-line commands that export a model to an accepted format.

Never unpickling an upload -- what this module relies on (torch 2.14.1, pinned in pyproject.toml):

- No ``pickle`` / ``torch.load`` call anywhere here. Pickles are recognised by their bytes (protocol
  header ``0x80 0x02-0x05``; a ``torch.save`` zip has ``data.pkl`` but no TorchScript ``code/``) and
  refused before any loader sees them.
- TorchScript: ``torch.jit.load`` reads ``data.pkl``, ``constants.pkl`` (and lazily ``*.debug_pkl``)
  with torch's own C++ unpickler (``torch/csrc/jit/serialization/unpickler.cpp``), never Python's
  ``pickle``: a ``GLOBAL`` opcode resolves only against a fixed table of tensor-rebuilding functions and
  the archive's own TorchScript classes (``__torch__.*``, compiled from ``code/`` by the TorchScript
  compiler, a language without ``import``/``eval``); anything else fails with "Unknown type name". The
  tests feed it a pickle whose ``__reduce__`` would create a file and check that it fails and that no
  file appears. Before loading, the archive's members are checked against what ``torch.jit.save``
  writes (unknown members are refused), and the TorchScript source is refused if it calls
  ``save``, ``from_file`` or ``load_tensor`` (the registered operators that read or write files: found by
  listing every registered operator schema) or an operator namespace other than ``aten`` / ``prim`` /
  ``quantized``.
- torch.export: ``torch.export.load`` is NOT used. It unpickles with ``torch.load(weights_only=False)``
  any weight or constant whose config says ``use_pickle``, ``pickle.loads`` "opaque" constants, falls
  back to ``weights_only=False`` for the sample inputs, passes symbolic-shape strings to
  ``sympy.sympify`` (which evaluates them with ``eval``) and runs the program's ``guards_code`` with
  ``exec``. Instead the archive is validated and then deserialized with the same internal pieces torch uses
  (``torch.export.pt2_archive._package._load_state_dict`` / ``_load_constants`` and
  ``torch._export.serde.serialize.ExportedProgramDeserializer``): members must be the ones
  ``torch.export.save`` writes for one model named ``model`` (no AOTInductor / ExecuTorch payloads, no
  legacy pickled weight files); every weight and constant must be raw tensor bytes (``use_pickle`` false,
  no custom / opaque objects); every node target must be an ``aten`` operator (except ``save`` and
  ``from_file``), an ``_operator`` arithmetic / ``getitem`` function, a ``math`` function or a
  ``torch.sym_*`` function; every symbolic expression must parse as a small Python expression made only
  of sympy / torch shape-function calls, numbers and ``Symbol('name')`` (checked with :mod:`ast`);
  node and argument names must be identifiers and parameter / buffer / module paths dotted identifiers
  (torch.fx pastes them unescaped into the Python source it generates and executes, e.g.
  ``getattr(self, "<path part>")``); the nodes' ``stack_trace`` metadata is dropped and ``guards_code``
  discarded unexecuted; the validated JSON itself (re-encoded) is what gets deserialized; the
  sample-inputs file (a ``torch.save`` pickle) is never read. Checked by hand with torch 2.14.1: a crafted
  shape expression, pickled weight, sample-inputs pickle, ``guards_code`` entry or parameter path each
  runs attacker code through ``torch.export.load`` and the unlifted module's forward (node names and
  stack traces are checked / dropped as defence in depth); the tests plant each of them here.
- ONNX: parsed by protobuf and run by ONNX Runtime; models referencing external data files are refused
  (ONNX Runtime would read them from paths the file names).
- The file is read once into memory (after a size check, default limit 2 GiB): format detection,
  validation, hashing and loading all use those same bytes. Zip archives are opened both by
  :mod:`zipfile` (CRC check, duplicate names, uncompressed-size limit) and by torch's own reader, and
  must list the same members, so both readers see the same archive.

Loading a model is not the same as trusting it. These checks keep an uploaded file from running Python
code or touching files, at load time or when the model runs; they do not bound its computation (a
crafted graph or shape expression can still burn CPU or memory, and operators are trusted to check
their own bounds), so the service should still run teachers in a sandboxed worker (no secrets, no
network, time and memory limits).

Errors: a file that cannot be used raises :class:`TeacherLoadError` (a ``ValueError``) naming the file
and the reason; pickles raise its subclass :class:`PickledModelError`. Bad arguments raise
``TypeError`` / ``ValueError``. A model that loads but fails while running raises ``RuntimeError``.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from compression.teachers.preprocessing import (
    ONNX_MEAN_KEY,
    ONNX_STD_KEY,
    TORCHSCRIPT_MEAN_ATTRIBUTE,
    TORCHSCRIPT_STD_ATTRIBUTE,
    InputSpec,
    check_input_shape,
    check_pixel_range,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_TEACHER_BYTES",
    "EXPORT_INSTRUCTIONS",
    "TEACHER_FORMATS",
    "PickledModelError",
    "Teacher",
    "TeacherFormat",
    "TeacherLoadError",
    "TeacherOutputCache",
    "detect_teacher_format",
    "load_teacher",
    "teacher_logits",
]

logger = logging.getLogger(__name__)

TeacherFormat = Literal["torchscript", "torch_export", "onnx"]
TEACHER_FORMATS: tuple[TeacherFormat, ...] = ("torchscript", "torch_export", "onnx")

DEFAULT_MAX_TEACHER_BYTES = 2 * 1024**3
DEFAULT_BATCH_SIZE = 256

EXPORT_INSTRUCTIONS = """\
Condense accepts exported models only -- TorchScript, torch.export (.pt2) or ONNX -- never pickles
(torch.save of a model or a state_dict): loading a pickle runs whatever code it contains. Export yours
with one of these, where example = torch.rand(1, C, H, W) is one input batch:
  TorchScript:  torch.jit.save(torch.jit.script(model.eval()), "teacher.pt")
                (or torch.jit.trace(model.eval(), example) in place of torch.jit.script(model.eval()))
  torch.export: torch.export.save(torch.export.export(model.eval(), (example,)), "teacher.pt2")
  ONNX:         torch.onnx.export(model.eval(), (example,), "teacher.onnx", dynamo=True)"""

_ZIP_MAGIC = b"PK\x03\x04"
_ONNX_FIRST_BYTE = 0x08  # field 1 (ir_version), varint: how every ONNX writer starts the file
_PROBE_BATCH = 2
_MIN_CLASSES = 2
_ORT_INPUT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


class TeacherLoadError(ValueError):
    """The file cannot be used as a teacher; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot load teacher {os.fspath(path)!r}: {reason}")
        self.path = Path(path)
        self.reason = reason


class PickledModelError(TeacherLoadError):
    """The file is a pickle (``torch.save`` of a model or state_dict): refused, never unpickled."""


# --------------------------------------------------------------------------------------------------
# reading the upload


@dataclass(frozen=True)
class _Upload:
    path: Path
    data: bytes
    sha256: str

    def fail(self, reason: str) -> TeacherLoadError:
        return TeacherLoadError(self.path, reason)


def _check_max_bytes(max_bytes: object) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    return max_bytes


def _read_upload(path: object, max_bytes: int) -> _Upload:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    file = Path(path)
    try:
        info = file.stat()
    except FileNotFoundError:
        raise TeacherLoadError(file, "no such file") from None
    except OSError as exc:
        raise TeacherLoadError(file, f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise TeacherLoadError(file, "it is a directory, not a model file")
    if not stat.S_ISREG(info.st_mode):
        raise TeacherLoadError(file, "it is not a regular file")
    if info.st_size == 0:
        raise TeacherLoadError(file, "the file is empty")
    if info.st_size > max_bytes:
        raise TeacherLoadError(file, f"the file is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
    try:
        with file.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise TeacherLoadError(file, f"cannot read it ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew since stat()
        raise TeacherLoadError(file, f"the file is over the {max_bytes:,}-byte limit")
    if not data:
        raise TeacherLoadError(file, "the file is empty")
    return _Upload(path=file, data=data, sha256=hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------------------------------
# format detection


@dataclass(frozen=True)
class _Archive:
    """A validated zip archive: its members relative to the single root folder, read through torch's reader."""

    members: frozenset[str]
    reader: Any  # torch._C.PyTorchFileReader

    def read(self, name: str) -> bytes:
        return bytes(self.reader.get_record(name))


def _open_archive(upload: _Upload, max_bytes: int) -> _Archive:
    try:
        with zipfile.ZipFile(io.BytesIO(upload.data)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise upload.fail("the zip archive lists a member twice (ambiguous; refused)")
            declared = sum(info.file_size for info in infos)
            if declared > max_bytes:
                raise upload.fail(f"the zip archive unpacks to {declared:,} bytes, over the {max_bytes:,}-byte limit")
            bad_member = archive.testzip()
    except TeacherLoadError:
        raise
    except Exception as exc:
        raise upload.fail(f"corrupt or truncated zip archive ({_describe_exception(exc)})") from None
    if bad_member is not None:
        raise upload.fail(f"corrupt zip archive: member {bad_member!r} fails its CRC check")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise upload.fail(
            "a zip archive, but not one written by PyTorch (its members are not all inside one folder)\n"
            + EXPORT_INSTRUCTIONS
        )
    root = roots.pop() + "/"
    relative = frozenset(name[len(root) :] for name in names if not name.endswith("/"))
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(upload.data))
        torch_view = frozenset(reader.get_all_records())
    except Exception as exc:
        raise upload.fail(f"corrupt zip archive: PyTorch cannot open it ({_describe_exception(exc)})") from None
    if torch_view != relative:
        raise upload.fail("the zip archive's members read differently by PyTorch and by zipfile (refused)")
    return _Archive(members=relative, reader=reader)


def _classify_archive(upload: _Upload, archive: _Archive) -> TeacherFormat:
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


def _is_pickle(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    header_length = int.from_bytes(data[:8], "little")
    return 2 <= header_length <= len(data) - 8 and data[8:9] == b"{"


def _parse_onnx(upload: _Upload) -> onnx.ModelProto | None:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(upload.data)
    except Exception:
        return None
    if proto.ir_version < 1 or not proto.opset_import or not proto.graph.node:
        return None
    return proto


def _detect(upload: _Upload, max_bytes: int) -> tuple[TeacherFormat, _Archive | onnx.ModelProto]:
    data = upload.data
    if data.startswith(_ZIP_MAGIC):
        archive = _open_archive(upload, max_bytes)
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
    max_bytes = _check_max_bytes(max_bytes)
    upload = _read_upload(path, max_bytes)
    return _detect(upload, max_bytes)[0]


# --------------------------------------------------------------------------------------------------
# loaded models


@dataclass
class _LoadedModel:
    run: Callable[[torch.Tensor], Any]
    input_dims: tuple[int | None, int | None, int | None] | None  # (C, H, W) as the model states them
    fixed_batch_size: int | None = None
    mean: Any = None  # as carried by the model, unvalidated
    std: Any = None
    mean_origin: str = ""
    std_origin: str = ""
    parameter_count: int | None = None
    module: nn.Module | None = None
    session: ort.InferenceSession | None = None
    exported_program: Any = None


def _floating_dtype(module: nn.Module) -> torch.dtype:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _torch_runner(module: nn.Module) -> Callable[[torch.Tensor], Any]:
    dtype = _floating_dtype(module)

    def run(batch: torch.Tensor) -> Any:
        return module(batch.to(dtype))

    return run


# TorchScript ------------------------------------------------------------------------------------

_TORCHSCRIPT_MEMBER = re.compile(
    r"(data\.pkl|constants\.pkl|version|byteorder|\.data/version|\.data/serialization_id"
    r"|data/\d+|constants/\d+|traced_inputs\.pkl|traced_inputs/\d+"
    r"|code/[\w./-]+\.py|code/[\w./-]+\.py\.debug_pkl|extra/.+)"
)
# TorchScript cannot build a name at run time, so every operator call appears in the source by name.
_TORCHSCRIPT_FORBIDDEN_CALL = re.compile(r"\.\s*(save|from_file|load_tensor)\b")
_TORCHSCRIPT_OPERATOR_NAMESPACE = re.compile(r"\bops\s*\.\s*(\w+)")
_TORCHSCRIPT_ALLOWED_NAMESPACES = frozenset({"aten", "prim", "quantized"})


def _check_torchscript_archive(upload: _Upload, archive: _Archive) -> None:
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


def _load_torchscript(upload: _Upload, archive: _Archive) -> _LoadedModel:
    _check_torchscript_archive(upload, archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(upload.data), map_location="cpu")
    module.eval()
    return _LoadedModel(
        run=_torch_runner(module),
        input_dims=None,
        mean=getattr(module, TORCHSCRIPT_MEAN_ATTRIBUTE, None),
        std=getattr(module, TORCHSCRIPT_STD_ATTRIBUTE, None),
        mean_origin=f"attribute {TORCHSCRIPT_MEAN_ATTRIBUTE}",
        std_origin=f"attribute {TORCHSCRIPT_STD_ATTRIBUTE}",
        parameter_count=sum(p.numel() for p in module.parameters()),
        module=module,
    )


# torch.export ------------------------------------------------------------------------------------

_PT2_MODEL_NAME = "model"
_PT2_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_PT2_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_PT2_PROGRAM = "models/model.json"
_PT2_MEMBER = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/model\.pt|extra/[^/]+)"
)
_PT2_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.(\w+)\.(\w+)")
_PT2_FORBIDDEN_ATEN_OPS = frozenset({"save", "from_file"})
_PT2_OPERATOR_FUNCTIONS = frozenset(
    {
        "getitem",
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "neg",
        "pos",
        "abs",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "xor",
        "not_",
        "invert",
        "lshift",
        "rshift",
    }
)
_PT2_MATH_TARGET = re.compile(r"math\.[a-z][a-z0-9_]*")
_PT2_SYM_TARGET = re.compile(r"torch\._?sym_[a-z0-9_]+")
_MAX_EXPRESSION_CHARS = 10_000
_MAX_EXPRESSION_INT = 2**64
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED_PATH = re.compile(r"([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)?")  # "" is the root module
_SYMPY_NAMES = frozenset(
    {
        "Symbol",
        "Integer",
        "Float",
        "Rational",
        "Add",
        "Mul",
        "Pow",
        "Max",
        "Min",
        "Abs",
        "Mod",
        "floor",
        "ceiling",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "And",
        "Or",
        "Not",
        "Piecewise",
        "ExprCondPair",
        "oo",
        "zoo",
        "nan",
        "true",
        "false",
        "BooleanTrue",
        "BooleanFalse",
        "Infinity",
        "NegativeInfinity",
        "Half",
        "One",
        "Zero",
        "NegativeOne",
    }
)


def _torch_shape_function_names() -> frozenset[str]:
    """Names of torch's sympy shape functions (FloorDiv, ModularIndexing, ...) and numbers (IntInfinity)."""
    import sympy
    import torch.utils._sympy.functions as shape_functions
    import torch.utils._sympy.numbers as shape_numbers

    names = set()
    for namespace in (shape_functions, shape_numbers):
        for name, value in vars(namespace).items():
            if isinstance(value, type) and issubclass(value, sympy.Basic) and not name.startswith("_"):
                names.add(name)
    return frozenset(names)


def _check_symbolic_expression(upload: _Upload, text: object, allowed_names: frozenset[str]) -> None:
    """Refuse a symbolic-shape string unless it is a plain sympy expression (torch hands it to ``sympify``,
    which evaluates it with ``eval``)."""

    def refuse(detail: str) -> TeacherLoadError:
        shown = text if isinstance(text, str) and len(text) <= 80 else f"{str(text)[:77]}..."
        return upload.fail(f"the torch.export program has an unsafe symbolic expression {shown!r} ({detail})")

    if not isinstance(text, str) or len(text) > _MAX_EXPRESSION_CHARS:
        raise refuse("not a short string")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise refuse("does not parse") from None
    symbol_names: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in allowed_names:
                raise refuse("calls something other than a sympy / torch shape function")
            if node.func.id == "Symbol":
                name = node.args[0] if len(node.args) == 1 else None
                if not (
                    isinstance(name, ast.Constant) and isinstance(name.value, str) and _IDENTIFIER.fullmatch(name.value)
                ):
                    raise refuse("Symbol() without a plain name")
                symbol_names.add(id(name))
            for keyword in node.keywords:
                if keyword.arg is None or not _IDENTIFIER.fullmatch(keyword.arg) or keyword.arg.startswith("_"):
                    raise refuse("unexpected keyword argument")
                if not (isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool | int)):
                    raise refuse("keyword argument that is not a constant")
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str):
                if id(node) not in symbol_names:
                    raise refuse("a string outside Symbol()")
            elif isinstance(value, bool) or value is None:
                continue
            elif isinstance(value, int):
                if abs(value) > _MAX_EXPRESSION_INT:
                    raise refuse("an integer out of range")
            elif not isinstance(value, float):
                raise refuse("an unexpected constant")
        elif isinstance(node, ast.Name):
            if node.id not in allowed_names:
                raise refuse(f"unknown name {node.id!r}")
        elif not isinstance(
            node,
            ast.Expression | ast.BinOp | ast.UnaryOp | ast.Tuple | ast.keyword | ast.operator | ast.unaryop | ast.Load,
        ):
            raise refuse(f"{type(node).__name__} is not allowed")


def _check_node_target(upload: _Upload, target: object) -> None:
    if isinstance(target, str):
        aten = _PT2_ATEN_TARGET.fullmatch(target)
        if aten and aten.group(1) not in _PT2_FORBIDDEN_ATEN_OPS:
            return
        if target.startswith("_operator.") and target[len("_operator.") :] in _PT2_OPERATOR_FUNCTIONS:
            return
        if _PT2_MATH_TARGET.fullmatch(target) or _PT2_SYM_TARGET.fullmatch(target):
            return
    raise upload.fail(
        f"the torch.export program calls {str(target)[:100]!r}; only aten operators (and shape arithmetic) are accepted"
    )


def _check_name(upload: _Upload, key: str, value: object) -> None:
    """Names end up in the Python source torch.fx generates (``getattr(self, "<part>")`` is not escaped):
    node / argument names must be identifiers, module and parameter paths dotted identifiers."""
    pattern = _IDENTIFIER if key in ("name", "as_name") else _DOTTED_PATH
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise upload.fail(f"the torch.export program has an unsafe {key} {str(value)[:80]!r} (refused)")


def _check_and_strip_program(upload: _Upload, program: object) -> None:
    """Walk the program's JSON: node targets, symbolic expressions, names, no custom objects. Drops the
    nodes' ``stack_trace`` metadata (free text that torch.fx may copy into generated source)."""
    allowed_names = _SYMPY_NAMES | _torch_shape_function_names()
    nodes: list[dict[str, Any]] = []
    pending: list[object] = [program]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            if "target" in item and "inputs" in item and "outputs" in item:
                _check_node_target(upload, item["target"])
                nodes.append(item)
            for key, value in item.items():
                if key == "expr_str":
                    _check_symbolic_expression(upload, value, allowed_names)
                elif key in ("as_custom_obj", "custom_obj", "custom_obj_values") and value:
                    raise upload.fail("the torch.export program holds custom (script) objects (refused)")
                elif (key.endswith("name") or key == "fqn") and isinstance(value, str):
                    _check_name(upload, key, value)
                elif key == "forward_arg_names":
                    for argument in value if isinstance(value, list) else [value]:
                        _check_name(upload, "name", argument)
                pending.append(value)
    for node in nodes:
        metadata = node.get("metadata")
        if isinstance(metadata, dict):
            metadata.pop("stack_trace", None)


def _check_payload_config(upload: _Upload, archive: _Archive, config_name: str, prefix: str) -> None:
    try:
        config = json.loads(archive.read(config_name))
    except Exception as exc:
        raise upload.fail(f"{config_name} is not valid JSON ({_describe_exception(exc)})") from None
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise upload.fail(f"{config_name} has no 'config' mapping")
    folder = config_name.rsplit("/", 1)[0] + "/"
    for fqn, entry in entries.items():
        _check_name(upload, "tensor name", fqn)
        if not isinstance(entry, dict):
            raise upload.fail(f"{config_name}: entry {fqn!r} is not an object")
        if entry.get("use_pickle") is not False:
            raise upload.fail(f"{config_name}: {fqn!r} is stored as a pickle (refused; re-save with torch.export.save)")
        path_name = entry.get("path_name")
        if not (isinstance(path_name, str) and re.fullmatch(rf"{prefix}\d+", path_name)):
            raise upload.fail(f"{config_name}: {fqn!r} is not stored as a plain tensor (path {path_name!r})")
        if folder + path_name not in archive.members:
            raise upload.fail(f"{config_name}: {fqn!r} points at missing member {folder + path_name!r}")
        if not isinstance(entry.get("tensor_meta"), dict):
            raise upload.fail(f"{config_name}: {fqn!r} has no tensor metadata")


def _check_pt2_archive(upload: _Upload, archive: _Archive) -> Any:
    """Validate a ``.pt2`` archive; returns its parsed program JSON."""
    unexpected = sorted(name for name in archive.members if not _PT2_MEMBER.fullmatch(name))
    if unexpected:
        raise upload.fail(
            f"unexpected members in the torch.export archive (refused; only a plain torch.export.save of one "
            f"program is accepted): {unexpected[:10]}"
        )
    for required in ("archive_format", "archive_version", _PT2_PROGRAM, _PT2_WEIGHTS_CONFIG, _PT2_CONSTANTS_CONFIG):
        if required not in archive.members:
            raise upload.fail(f"the torch.export archive has no {required!r}")
    if archive.read("archive_format") != b"pt2":
        raise upload.fail("the torch.export archive's archive_format is not 'pt2'")
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_VALUE

    version = archive.read("archive_version").decode("ascii", "replace")
    if version != ARCHIVE_VERSION_VALUE:
        raise upload.fail(f"unsupported torch.export archive version {version!r} (expected {ARCHIVE_VERSION_VALUE!r})")
    _check_payload_config(upload, archive, _PT2_WEIGHTS_CONFIG, "weight_")
    _check_payload_config(upload, archive, _PT2_CONSTANTS_CONFIG, "tensor_")
    try:
        program = json.loads(archive.read(_PT2_PROGRAM))
    except Exception as exc:
        raise upload.fail(f"{_PT2_PROGRAM} is not valid JSON ({_describe_exception(exc)})") from None
    _check_and_strip_program(upload, program)
    return program


def _load_torch_export(upload: _Upload, archive: _Archive) -> _LoadedModel:
    program_json = _check_pt2_archive(upload, archive)
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
    from torch.export.pt2_archive import _package

    reader = _package.PT2ArchiveReader(io.BytesIO(upload.data))
    # Deserialize the validated (and stripped) JSON, not the raw member: both parsers then see the same program.
    serialized = _bytes_to_dataclass(schema.ExportedProgram, json.dumps(program_json).encode())
    serialized.guards_code = []  # Python source that ExportedProgram.module() would exec: never run it
    state_dict = _package._load_state_dict(reader, _PT2_MODEL_NAME)  # raw bytes only: checked above
    constants = _package._load_constants(reader, _PT2_MODEL_NAME)
    if not isinstance(state_dict, dict) or not isinstance(constants, dict):
        raise upload.fail("the torch.export archive stores weights in the legacy pickled form (refused)")
    # b"": no sample inputs -- torch would torch.load them, falling back to weights_only=False.
    program = ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, b"")
    program._guards_code = []

    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise upload.fail(f"the exported program takes {len(user_inputs)} inputs; a teacher takes one image batch")
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == user_inputs[0])
    example = placeholder.meta.get("val")
    if not isinstance(example, torch.Tensor) or example.ndim != 4:
        shape = getattr(example, "shape", None)
        raise upload.fail(f"the exported program's input is not a 4-D (N, C, H, W) tensor (got {shape})")
    dims = [int(size) if isinstance(size, int) else None for size in example.shape]
    module = program.module()  # a GraphModule; its train/eval behaviour was fixed at export time
    return _LoadedModel(
        run=_torch_runner(module),
        input_dims=(dims[1], dims[2], dims[3]),
        fixed_batch_size=dims[0],
        parameter_count=sum(p.numel() for p in module.parameters()),
        module=module,
        exported_program=program,
    )


# ONNX --------------------------------------------------------------------------------------------


def _onnx_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _onnx_attribute_tensors(node)


def _onnx_attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            yield attribute.t
        elif attribute.type == onnx.AttributeProto.TENSORS:
            yield from attribute.tensors
        elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        elif attribute.type == onnx.AttributeProto.GRAPH:
            yield from _onnx_tensors(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for subgraph in attribute.graphs:
                yield from _onnx_tensors(subgraph)


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    tensors = list(_onnx_tensors(proto.graph))
    for function in proto.functions:
        for node in function.node:
            tensors.extend(_onnx_attribute_tensors(node))
    return any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in tensors)


def _metadata_list(upload: _Upload, metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise upload.fail(f"ONNX metadata {key!r} must be a JSON list of numbers, got {metadata[key][:80]!r}") from None


def _load_onnx(upload: _Upload, proto: onnx.ModelProto) -> _LoadedModel:
    if _uses_external_data(proto):
        raise upload.fail("the ONNX model references external data files (refused: upload one self-contained file)")
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no per-session optimiser chatter
    session = ort.InferenceSession(upload.data, sess_options=options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise upload.fail(f"the ONNX model has {len(inputs)} inputs {[i.name for i in inputs]}; a teacher takes one")
    if not outputs:
        raise upload.fail("the ONNX model has no outputs")
    graph_input = inputs[0]
    if graph_input.type not in _ORT_INPUT_TYPES:
        raise upload.fail(f"the ONNX input {graph_input.name!r} has type {graph_input.type}; a float tensor is needed")
    shape = list(graph_input.shape)
    if len(shape) != 4:
        raise upload.fail(f"the ONNX input {graph_input.name!r} has shape {shape}; an (N, C, H, W) tensor is needed")
    dims = [size if isinstance(size, int) and size > 0 else None for size in shape]
    input_name, output_name = graph_input.name, outputs[0].name
    numpy_dtype = _ORT_INPUT_TYPES[graph_input.type]

    def run(batch: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(batch.detach().cpu().numpy().astype(numpy_dtype, copy=False))
        (result,) = session.run([output_name], {input_name: feed})
        return torch.from_numpy(np.asarray(result))

    return _LoadedModel(
        run=run,
        input_dims=(dims[1], dims[2], dims[3]),
        fixed_batch_size=dims[0],
        mean=_metadata_list(upload, metadata, ONNX_MEAN_KEY),
        std=_metadata_list(upload, metadata, ONNX_STD_KEY),
        mean_origin=f"ONNX metadata {ONNX_MEAN_KEY}",
        std_origin=f"ONNX metadata {ONNX_STD_KEY}",
        parameter_count=sum(math.prod(tensor.dims) for tensor in proto.graph.initializer),
        session=session,
    )


# --------------------------------------------------------------------------------------------------
# the teacher


def _describe_exception(exc: BaseException, limit: int = 300) -> str:
    """The innermost cause's type and first message line (loader errors can be pages long)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
    text = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


class Teacher:
    """A loaded teacher classifier; made by :func:`load_teacher`.

    Call it with raw images -- float ``(N, C, H, W)`` in ``[0, 1]``, any size, 1 or 3 channels -- to get
    float32 logits ``(N, num_classes)`` on the CPU, computed under ``torch.no_grad`` in batches. Images
    are adapted (resized, channels converted) and normalised by :attr:`preprocess` first.

    Attributes: ``format``, ``path``, ``file_sha256``, ``file_bytes``, ``input_shape`` ``(C, H, W)``,
    ``num_classes``, ``preprocess`` (:class:`InputSpec`), ``parameter_count`` (``None`` when unknown),
    ``fixed_batch_size`` (the batch size a model with a static batch dimension was exported with;
    batches are then padded to it), ``module`` (torch formats: the ``ScriptModule`` in eval mode, or
    the ``GraphModule`` of the exported program -- whose train/eval behaviour was fixed at export
    time -- for access to intermediate feature maps), ``exported_program`` (torch_export only) and
    ``session`` (ONNX only: the ONNX Runtime ``InferenceSession``).
    """

    def __init__(
        self,
        *,
        format: TeacherFormat,
        path: Path,
        file_sha256: str,
        file_bytes: int,
        preprocess: InputSpec,
        run: Callable[[torch.Tensor], Any],
        normalisation_origin: dict[str, str],
        fixed_batch_size: int | None = None,
        parameter_count: int | None = None,
        module: nn.Module | None = None,
        session: ort.InferenceSession | None = None,
        exported_program: Any = None,
    ) -> None:
        self.format = format
        self.path = path
        self.file_sha256 = file_sha256
        self.file_bytes = file_bytes
        self.preprocess = preprocess
        self.fixed_batch_size = fixed_batch_size
        self.parameter_count = parameter_count
        self.module = module
        self.session = session
        self.exported_program = exported_program
        self._run = run
        self._normalisation_origin = dict(normalisation_origin)
        self.num_classes = self._probe_num_classes()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocess.input_shape

    def _forward_prepared(self, batch: torch.Tensor, expected_classes: int | None) -> torch.Tensor:
        """Run the model on an adapted, normalised batch; pads to ``fixed_batch_size`` where needed."""
        count = batch.shape[0]
        if self.fixed_batch_size is None:
            chunks = [batch]
        else:
            size = self.fixed_batch_size
            chunks = [batch[start : start + size] for start in range(0, count, size)]
            if chunks[-1].shape[0] < size:
                padding = batch.new_zeros((size - chunks[-1].shape[0], *batch.shape[1:]))
                chunks[-1] = torch.cat([chunks[-1], padding])
        results = []
        for chunk in chunks:
            output = self._run(chunk)
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"the model returned {type(output).__name__}, not a single logits tensor")
            if output.ndim != 2 or output.shape[0] != chunk.shape[0]:
                raise ValueError(
                    f"the model returned shape {tuple(output.shape)} for a batch of {chunk.shape[0]}; "
                    "expected (batch, classes) logits"
                )
            if expected_classes is not None and output.shape[1] != expected_classes:
                raise ValueError(f"the model returned {output.shape[1]} classes, not {expected_classes}")
            results.append(output.detach().to(device="cpu", dtype=torch.float32))
        return torch.cat(results)[:count]

    def _probe_num_classes(self) -> int:
        batch = self.fixed_batch_size or _PROBE_BATCH
        zeros = torch.zeros((batch, *self.input_shape))
        try:
            with torch.no_grad():
                logits = self._forward_prepared(self.preprocess.normalize(zeros), None)
        except Exception as exc:
            raise TeacherLoadError(
                self.path,
                f"the model fails on a zero input of shape {tuple(zeros.shape)} ({_describe_exception(exc)})",
            ) from exc
        classes = int(logits.shape[1])
        if classes < _MIN_CLASSES:
            raise TeacherLoadError(
                self.path, f"the model outputs {classes} value(s) per image; a classifier with >= 2 logits is needed"
            )
        if not torch.isfinite(logits).all():
            raise TeacherLoadError(self.path, "the model outputs NaN or infinite logits on a zero input")
        return classes

    def predict_in_batches(self, images: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """Logits ``(N, num_classes)`` (float32, CPU) for raw ``[0, 1]`` images ``(N, C, H, W)``.

        Images are adapted and normalised batch by batch, so memory stays bounded by ``batch_size``
        (a model with a static batch dimension runs in padded batches of ``fixed_batch_size``).
        Raw pixels far outside ``[0, 1]`` raise ValueError (see :func:`check_pixel_range`).
        """
        batch_size = _check_batch_size(batch_size)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
        if images.is_floating_point():
            check_pixel_range(images)
        count = images.shape[0]
        logits = torch.empty((count, self.num_classes), dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, count, batch_size):
                batch = self.preprocess.prepare(images[start : start + batch_size].detach().cpu())
                try:
                    logits[start : start + batch.shape[0]] = self._forward_prepared(batch, self.num_classes)
                except Exception as exc:
                    raise RuntimeError(
                        f"teacher {self.path.name} failed on a batch of shape {tuple(batch.shape)}: "
                        f"{_describe_exception(exc)}"
                    ) from exc
        return logits

    def __call__(self, images: torch.Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """Same as :meth:`predict_in_batches`."""
        return self.predict_in_batches(images, batch_size)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary: format, file, input shape, classes, normalisation, parameter count."""
        return {
            "format": self.format,
            "file": str(self.path),
            "file_bytes": self.file_bytes,
            "file_sha256": self.file_sha256,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "normalisation": {
                "mean": list(self.preprocess.mean or ()),
                "std": list(self.preprocess.std or ()),
                "source": dict(self._normalisation_origin),
            },
            "parameter_count": self.parameter_count,
            "fixed_batch_size": self.fixed_batch_size,
        }

    def __repr__(self) -> str:
        return (
            f"Teacher(format={self.format!r}, file={self.path.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _resolve_input_shape(
    upload: _Upload,
    format: TeacherFormat,
    model_dims: tuple[int | None, int | None, int | None] | None,
    given: tuple[int, int, int] | None,
) -> tuple[int, int, int]:
    if given is not None:
        if model_dims is not None:
            for axis, (stated, wanted) in enumerate(zip(model_dims, given, strict=True)):
                if stated is not None and stated != wanted:
                    raise upload.fail(
                        f"input_shape {given} disagrees with the model's own input (C, H, W) = "
                        f"{tuple('?' if d is None else d for d in model_dims)} at axis {'CHW'[axis]}"
                    )
        return given
    if model_dims is None:
        raise upload.fail(
            f"a {format} model does not record its input shape; pass input_shape=(C, H, W), e.g. (3, 32, 32)"
        )
    if any(dim is None for dim in model_dims):
        shown = tuple("?" if d is None else d for d in model_dims)
        raise upload.fail(f"the model's input (C, H, W) = {shown} has dynamic dimensions; pass input_shape=(C, H, W)")
    channels, height, width = (int(dim) for dim in model_dims if dim is not None)
    return (channels, height, width)


def _resolve_normalisation(
    upload: _Upload,
    name: str,
    given: Sequence[float] | None,
    carried: Any,
    carried_origin: str,
) -> tuple[Any, str]:
    if given is not None:
        return given, "argument"
    if carried is None:
        return None, "default"
    if isinstance(carried, torch.Tensor):
        carried = carried.detach().reshape(-1).tolist()
    if not isinstance(carried, list | tuple) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in carried
    ):
        raise upload.fail(f"the model's {carried_origin} must be a list of numbers (its {name}), got {carried!r}")
    return list(carried), carried_origin


def load_teacher(
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_bytes: int = DEFAULT_MAX_TEACHER_BYTES,
) -> Teacher:
    """Load a teacher classifier from a TorchScript, torch.export (``.pt2``) or ONNX file.

    The format is detected from the file's content. ``input_shape`` ``(C, H, W)`` is required for
    TorchScript (and for models with dynamic C / H / W); otherwise it is read from the model and, if
    given as well, must agree with it. ``mean`` / ``std`` (one value per channel) override the
    normalisation the model carries (see :mod:`compression.teachers.preprocessing`); the default is
    mean 0 / std 1, i.e. raw ``[0, 1]`` pixels. Files over ``max_bytes`` (default 2 GiB) are refused.

    Raises :class:`PickledModelError` for pickles (``torch.save``) -- with the commands to export the
    model properly -- and :class:`TeacherLoadError` (a ``ValueError`` naming the file) for missing,
    empty, oversized, corrupt, unrecognised or unsafe files and for models that do not run on a zero
    input or do not output ``(N, classes)`` logits.
    """
    max_bytes = _check_max_bytes(max_bytes)
    given_shape = None if input_shape is None else check_input_shape(input_shape)
    upload = _read_upload(path, max_bytes)
    model_format, parsed = _detect(upload, max_bytes)
    try:
        if model_format == "torchscript" and isinstance(parsed, _Archive):
            loaded = _load_torchscript(upload, parsed)
        elif model_format == "torch_export" and isinstance(parsed, _Archive):
            loaded = _load_torch_export(upload, parsed)
        elif model_format == "onnx" and isinstance(parsed, onnx.ModelProto):
            loaded = _load_onnx(upload, parsed)
        else:  # pragma: no cover - _detect pairs each format with its parsed form
            raise upload.fail(f"internal error: format {model_format!r} with {type(parsed).__name__}")
    except TeacherLoadError:
        raise
    except Exception as exc:
        raise upload.fail(f"the {model_format} loader failed ({_describe_exception(exc)})") from exc

    shape = _resolve_input_shape(upload, model_format, loaded.input_dims, given_shape)
    InputSpec(shape, mean=mean, std=std)  # the caller's own values alone: a plain TypeError / ValueError
    resolved_mean, mean_origin = _resolve_normalisation(upload, "mean", mean, loaded.mean, loaded.mean_origin)
    resolved_std, std_origin = _resolve_normalisation(upload, "std", std, loaded.std, loaded.std_origin)
    try:
        spec = InputSpec(shape, mean=resolved_mean, std=resolved_std)
    except (TypeError, ValueError) as exc:  # so the values the model carries are at fault
        raise upload.fail(f"invalid normalisation in the model ({mean_origin} / {std_origin}): {exc}") from None
    teacher = Teacher(
        format=model_format,
        path=upload.path,
        file_sha256=upload.sha256,
        file_bytes=len(upload.data),
        preprocess=spec,
        run=loaded.run,
        normalisation_origin={"mean": mean_origin, "std": std_origin},
        fixed_batch_size=loaded.fixed_batch_size,
        parameter_count=loaded.parameter_count,
        module=loaded.module,
        session=loaded.session,
        exported_program=loaded.exported_program,
    )
    logger.info("loaded teacher %s: %s", upload.path, teacher.describe())
    return teacher


# --------------------------------------------------------------------------------------------------
# teacher outputs, computed once


def _images_digest(images: torch.Tensor) -> str:
    flat = images.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{images.dtype}|{tuple(images.shape)}|".encode())
    digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


class TeacherOutputCache:
    """Teacher logits on fixed (un-augmented) images, computed once and reused.

    Keyed by a SHA-256 over the teacher file's hash, its input spec (shape, mean, std) and the images'
    dtype, shape and bytes. With ``directory`` the logits are also kept on disk as float32 ``.npy`` files
    (written atomically, read with ``allow_pickle=False``; an unreadable or mismatched file is
    recomputed and replaced); without it they live in memory only. ``hits`` / ``misses`` count lookups.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is not None and not isinstance(directory, str | os.PathLike):
            raise TypeError(f"directory must be a str, os.PathLike or None, got {type(directory).__name__}")
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            if self.directory.exists() and not self.directory.is_dir():
                raise ValueError(f"cache directory {self.directory} exists and is not a directory")
            self.directory.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(teacher: Teacher, images: torch.Tensor) -> str:
        spec = json.dumps(teacher.preprocess.as_dict(), sort_keys=True)
        text = f"condense-teacher-logits-v1|{teacher.file_sha256}|{spec}|{_images_digest(images)}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.npy"

    def _read_disk(self, key: str, expected_shape: tuple[int, int]) -> torch.Tensor | None:
        file = self._file(key)
        if file is None or not file.is_file():
            return None
        try:
            array = np.load(file, allow_pickle=False)
        except Exception as exc:
            logger.warning("ignoring unreadable teacher-logits cache file %s (%s)", file, _describe_exception(exc))
            return None
        if array.dtype != np.float32 or array.shape != expected_shape:
            logger.warning("ignoring teacher-logits cache file %s: %s %s", file, array.dtype, array.shape)
            return None
        return torch.from_numpy(array)

    def _write_disk(self, key: str, logits: torch.Tensor) -> None:
        file = self._file(key)
        if file is None:
            return
        tmp = file.with_name(f".{file.stem}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as handle:
                np.save(handle, logits.numpy().astype(np.float32, copy=False), allow_pickle=False)
            os.replace(tmp, file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def get_or_compute(
        self, teacher: Teacher, images: torch.Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> torch.Tensor:
        """``teacher(images)``, from the cache when these images were seen with this teacher before.

        Returns a fresh tensor each time (callers may modify it without touching the cache).
        """
        if not isinstance(teacher, Teacher):
            raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        key = self.key(teacher, images)
        cached = self._memory.get(key)
        if cached is None:
            cached = self._read_disk(key, (int(images.shape[0]), teacher.num_classes))
            if cached is not None:
                self._memory[key] = cached
        if cached is not None:
            self.hits += 1
            return cached.clone()
        self.misses += 1
        logits = teacher.predict_in_batches(images, batch_size).contiguous()
        self._memory[key] = logits
        self._write_disk(key, logits)
        return logits.clone()

    def clear_memory(self) -> None:
        """Forget the in-memory copies (files on disk stay)."""
        self._memory.clear()


def teacher_logits(
    teacher: Teacher,
    images: torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache: TeacherOutputCache | str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """The teacher's logits on ``images``; with ``cache`` (a :class:`TeacherOutputCache` or a directory)
    they are computed once and reused."""
    if cache is None:
        return teacher.predict_in_batches(images, batch_size)
    if not isinstance(cache, TeacherOutputCache):
        cache = TeacherOutputCache(cache)
    return cache.get_or_compute(teacher, images, batch_size=batch_size)
