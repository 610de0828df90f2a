"""torch.export teachers (``"torch_export"``): validating and safely deserialising a ``.pt2`` archive.

The archive is what ``torch.export.save`` writes: a zip with ``archive_format`` = ``pt2``, the program as
JSON under ``models/`` and raw weight bytes under ``data/``. The input shape comes from the program's
input spec.

Never unpickling an upload (torch 2.14.1, pinned in pyproject.toml): ``torch.export.load`` is NOT used.
It unpickles with ``torch.load(weights_only=False)`` any weight or constant whose config says
``use_pickle``, ``pickle.loads`` "opaque" constants, falls back to ``weights_only=False`` for the sample
inputs, passes symbolic-shape strings to ``sympy.sympify`` (which evaluates them with ``eval``) and runs
the program's ``guards_code`` with ``exec``. Instead the archive is validated and then deserialized with
the same internal pieces torch uses (``torch.export.pt2_archive._package._load_state_dict`` /
``_load_constants`` and ``torch._export.serde.serialize.ExportedProgramDeserializer``):

- members must be the ones ``torch.export.save`` writes for one model named ``model`` (no AOTInductor /
  ExecuTorch payloads, no legacy pickled weight files);
- every weight and constant must be raw tensor bytes (``use_pickle`` false, no custom / opaque objects);
- every node target must be an ``aten`` operator (except ``save`` and ``from_file``), an ``_operator``
  arithmetic / ``getitem`` function, a ``math`` function or a ``torch.sym_*`` function;
- every symbolic expression must parse as a small Python expression made only of sympy / torch
  shape-function calls, numbers and ``Symbol('name')`` (checked with :mod:`ast`);
- node and argument names must be identifiers and parameter / buffer / module paths dotted identifiers
  (torch.fx pastes them unescaped into the Python source it generates and executes, e.g.
  ``getattr(self, "<path part>")``);
- the nodes' ``stack_trace`` metadata is dropped and ``guards_code`` discarded unexecuted;
- the validated JSON itself (re-encoded) is what gets deserialized;
- the sample-inputs file (a ``torch.save`` pickle) is never read.

Checked by hand with torch 2.14.1: a crafted shape expression, pickled weight, sample-inputs pickle,
``guards_code`` entry or parameter path each runs attacker code through ``torch.export.load`` and the
unlifted module's forward (node names and stack traces are checked / dropped as defence in depth); the
tests plant each of them here.
"""

from __future__ import annotations

import ast
import io
import json
import re
from typing import Any

import torch

from compression.teachers.archive import Archive, Upload
from compression.teachers.errors import TeacherLoadError, describe_exception
from compression.teachers.loaded_model import LoadedModel, torch_runner

__all__ = ["load_torch_export"]

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


def _check_symbolic_expression(upload: Upload, text: object, allowed_names: frozenset[str]) -> None:
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


def _check_node_target(upload: Upload, target: object) -> None:
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


def _check_name(upload: Upload, key: str, value: object) -> None:
    """Names end up in the Python source torch.fx generates (``getattr(self, "<part>")`` is not escaped):
    node / argument names must be identifiers, module and parameter paths dotted identifiers."""
    pattern = _IDENTIFIER if key in ("name", "as_name") else _DOTTED_PATH
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise upload.fail(f"the torch.export program has an unsafe {key} {str(value)[:80]!r} (refused)")


def _check_and_strip_program(upload: Upload, program: object) -> None:
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


def _check_payload_config(upload: Upload, archive: Archive, config_name: str, prefix: str) -> None:
    try:
        config = json.loads(archive.read(config_name))
    except Exception as exc:
        raise upload.fail(f"{config_name} is not valid JSON ({describe_exception(exc)})") from None
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


def _check_pt2_archive(upload: Upload, archive: Archive) -> Any:
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
        raise upload.fail(f"{_PT2_PROGRAM} is not valid JSON ({describe_exception(exc)})") from None
    _check_and_strip_program(upload, program)
    return program


def load_torch_export(upload: Upload, archive: Archive) -> LoadedModel:
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
    return LoadedModel(
        run=torch_runner(module),
        input_dims=(dims[1], dims[2], dims[3]),
        fixed_batch_size=dims[0],
        parameter_count=sum(p.numel() for p in module.parameters()),
        module=module,
        exported_program=program,
    )
