"""What a user asks of one compression job: :class:`JobOptions`, one pydantic model validated from JSON.

The API (``POST /api/v1/jobs``, its ``options`` object), the web form (its inputs converted to that object) and the
CLI (``condense submit``, ``condense compress``) all validate through :meth:`JobOptions.from_dict`. It does not
stop at the first problem: every problem is collected as ``{"field": ..., "reason": ...}`` and one
:class:`OptionsError` (a ValueError) carries the list, which the API returns as a 422 with ``fields``. Unknown
fields are errors (a typo such as ``epoch`` must not be silently ignored). :meth:`JobOptions.to_dict` gives the
JSON stored on the job row and read back by the worker (``from_dict(options.to_dict()) == options``). The fields,
their defaults and rules are the model below; the OpenAPI document's ``JobOptions`` schema is generated from it
(:mod:`service.api.openapi`).

``max_accuracy_drop`` is the quality gate, in percentage points everywhere (API, web form, CLI, report): the
largest accepted drop of accuracy from teacher to student on the held-out positives (2 = two points);
``condense submit --wait`` and ``condense compress`` exit 3 when the job's result breaks it. Job specs of
version 1 stored it as a fraction; :meth:`JobOptions.from_spec` converts them.

:class:`JobCancelled` is the exception the compression pipeline raises when its ``should_stop`` callback turned true
(a user's cancel, or a worker shutting down); the worker decides which it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "LATENCY_FAMILIES",
    "MAX_SEED",
    "QUANTIZE_MODES",
    "SELECTIONS",
    "STUDENT_FAMILIES",
    "JobCancelled",
    "JobOptions",
    "OptionsError",
]

STUDENT_FAMILIES: tuple[str, ...] = ("auto", "ghost", "binary", "adder", "slim", "qnn4", "qnn2")
"""``auto`` picks ``slim`` or ``ghost`` by measured latency (:mod:`compression.students.latency_sizing`)."""
LATENCY_FAMILIES: tuple[str, ...] = ("ghost", "slim", "auto")
"""Families that can be sized by measured ONNX Runtime latency (binary and adder run no faster there)."""
SELECTIONS: tuple[str, ...] = ("default", "pu", "pu-half", "random", "dfnd")
"""Mining selections as :data:`pu_mining.selection.SELECTIONS` names them (a copy: the API does not load torch)."""
QUANTIZE_MODES: tuple[str, ...] = ("int8",)
MAX_SEED = 2**31 - 1
MAX_EPOCHS = 1000
MAX_TIME_BUDGET_MIN = 7 * 24 * 60
_MAX_SIDE = 4096
_MAX_POOL_NAME = 100
_MAX_CLASSES = 10_000


class OptionsError(ValueError):
    """Job options that cannot be used; ``problems`` lists each as ``{"field": ..., "reason": ...}``."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = [dict(problem) for problem in problems]
        summary = "; ".join(f"{p['field']}: {p['reason']}" for p in self.problems)
        super().__init__(f"invalid job options: {summary}")


class JobCancelled(Exception):  # noqa: N818 -- a signal, not an error
    """Raised by the compression pipeline when ``should_stop()`` became true; the work stopped at a checkpoint."""


# --------------------------------------------------------------------------------------------- value checks


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object) -> object:
    """JSON numbers only: no booleans, no strings, no NaN or infinity."""
    if value is None or _is_number(value):
        return value
    raise PydanticCustomError("finite_number", "must be a finite number, got {kind}", {"kind": _kind(value)})


def _integer(value: object) -> object:
    """Whole JSON numbers only (``3.0`` counts as 3): no booleans, no strings."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise PydanticCustomError("integer", "must be an integer, got {kind}", {"kind": _kind(value)})


def _student(value: object) -> object:
    if isinstance(value, str) and value in STUDENT_FAMILIES:
        return value
    shown = repr(value) if isinstance(value, str) else _kind(value)
    raise PydanticCustomError("student", "must be one of {families}, got {shown}", {
        "families": ", ".join(STUDENT_FAMILIES), "shown": shown})  # fmt: skip


def _choice(name: str, choices: tuple[str, ...]) -> Any:
    def check(value: object) -> object:
        if value is None or (isinstance(value, str) and value in choices):
            return value
        shown = repr(value) if isinstance(value, str) else _kind(value)
        raise PydanticCustomError(name, "must be one of {choices}, got {shown}", {
            "choices": ", ".join(choices), "shown": shown})  # fmt: skip

    return check


def _boolean(value: object) -> object:
    if isinstance(value, bool):
        return value
    raise PydanticCustomError("boolean", "must be true or false, got {kind}", {"kind": _kind(value)})


def _class_names(value: object) -> object:
    if value is None:
        return None
    if (
        isinstance(value, list | tuple)
        and 2 <= len(value) <= _MAX_CLASSES
        and all(isinstance(v, str) and v.strip() and len(v) <= _MAX_POOL_NAME and v.isprintable() for v in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise PydanticCustomError(
        "class_names", "must be a list of 2-{limit} distinct, non-empty names (1-{length} printable characters)",
        {"limit": _MAX_CLASSES, "length": _MAX_POOL_NAME},
    )  # fmt: skip


def _pool(value: object) -> object:
    if isinstance(value, str) and value and len(value) <= _MAX_POOL_NAME and value.isprintable():
        return value
    raise PydanticCustomError(
        "pool", "must be a pool name (1-{limit} printable characters), got {kind}",
        {"limit": _MAX_POOL_NAME, "kind": _kind(value)},
    )  # fmt: skip


def _shape(value: object) -> object:
    if value is None:
        return None
    sides = _integers(value) if isinstance(value, list | tuple) and len(value) == 3 else None
    if sides is None:
        raise PydanticCustomError("shape", "must be a list of three integers [C, H, W], e.g. [3, 32, 32]")
    shape = tuple(sides)
    if shape[0] not in (1, 3):
        raise PydanticCustomError("shape", "must have 1 or 3 channels, got {channels}", {"channels": shape[0]})
    if not all(1 <= side <= _MAX_SIDE for side in shape[1:]):
        raise PydanticCustomError(
            "shape", "height and width must be between 1 and {limit}, got {sides}",
            {"limit": _MAX_SIDE, "sides": str(shape[1:])},
        )  # fmt: skip
    return shape


def _integers(values: list[Any] | tuple[Any, ...]) -> list[int] | None:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer() for v in values):
        return None
    return [int(v) for v in values]


def _channels(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) not in (1, 3) or not all(map(_is_number, value)):
        raise PydanticCustomError("channels", "must be a list of 1 or 3 finite numbers (one per channel)")
    return tuple(float(v) for v in value)


def _deviations(value: object) -> object:
    checked = _channels(value)
    if isinstance(checked, tuple) and any(v <= 0 for v in checked):
        raise PydanticCustomError("channels", "every value must be > 0")
    return checked


Number = Annotated[float, BeforeValidator(_number)]
Integer = Annotated[int, BeforeValidator(_integer)]


class JobOptions(BaseModel):
    """Options of one compression job: every field's meaning and rule is its description."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="JobOptions")

    student: Annotated[str, BeforeValidator(_student)] = Field(
        "auto",
        description="Student family: auto (the default: slim or ghost, sized and chosen by the latency measured in "
        "ONNX Runtime on the worker, at most 0.4 x the teacher's unless latency_ratio / latency_ms say otherwise), "
        "ghost, binary, adder, slim (plain ResNet/VGG for CPUs), qnn4 / qnn2 (4- and 2-bit weights and activations, "
        "widened to a bit-ops budget).",
        json_schema_extra={"enum": list(STUDENT_FAMILIES)},
    )
    budget_ratio: Number = Field(0.25, gt=0, le=1, description="Student MACs / teacher MACs, in (0, 1].")
    time_budget_min: Number | None = Field(
        None,
        gt=0,
        le=MAX_TIME_BUDGET_MIN,
        description="Wall-clock budget of the training, minutes (at most a week).",
    )
    epochs: Integer | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="Training epochs, at most 1000; null: the family's default.",
    )
    seed: Integer = Field(0, ge=0, le=MAX_SEED, description="Random seed, for repeatable runs.")
    pool: Annotated[str, BeforeValidator(_pool)] = Field(
        "demo", description="Name of an unlabelled pool to mine (GET /api/v1/pools).", max_length=_MAX_POOL_NAME
    )
    input_shape: Annotated[tuple[int, int, int] | None, BeforeValidator(_shape)] = Field(
        None,
        description="[C, H, W] of the teacher's input, C in {1, 3}; null: from the model (needed for TorchScript).",
    )
    mean: Annotated[tuple[float, ...] | None, BeforeValidator(_channels)] = Field(
        None, description="Per-channel input mean (1 or 3 values); null: from the model, else none."
    )
    std: Annotated[tuple[float, ...] | None, BeforeValidator(_deviations)] = Field(
        None, description="Per-channel input standard deviation (1 or 3 values, each > 0)."
    )
    max_accuracy_drop: Number | None = Field(
        None,
        ge=0,
        le=100,
        description="Quality gate: largest accepted drop from the teacher's accuracy, in percentage points (0-100); "
        "null: no gate.",
    )
    holdout_fraction: Number = Field(
        0.2, ge=0, lt=1, description="Share of each class of the positives held out for evaluation, in [0, 1)."
    )

    selection: Annotated[str, BeforeValidator(_choice("selection", SELECTIONS))] = Field(
        "default",
        description="Which mined pool items train the student: default (PU score within per-class quotas; at "
        "least 6,000 items (an eighth of the pool where that is fewer), the next-ranked ones filling a rare task's "
        "selection), pu, pu-half, random or dfnd (the teacher's most confident items, no labels used).",
        json_schema_extra={"enum": list(SELECTIONS)},
    )
    class_names: Annotated[tuple[str, ...] | None, BeforeValidator(_class_names)] = Field(
        None,
        description="Names of the teacher's outputs, in order, for a job without positives (no-labels mode); "
        "null: the positives' class folders, or class_0, class_1, ...",
    )
    latency_ratio: Number | None = Field(
        None,
        gt=0,
        le=1,
        description="Latency budget: the student at most this fraction of the teacher's ONNX Runtime latency, "
        "measured on the worker, in (0, 1]; ghost, slim or auto students.",
    )
    latency_ms: Number | None = Field(
        None, gt=0, description="Latency budget: the student at most this many milliseconds per batch of latency_batch."
    )
    latency_batch: Integer | None = Field(
        None,
        ge=1,
        le=1024,
        description="Batch size of the latency budget; null: batches 1 and 32 for latency_ratio, 1 for latency_ms.",
    )
    quantize: Annotated[str | None, BeforeValidator(_choice("quantize", QUANTIZE_MODES))] = Field(
        None,
        description="int8: also quantize the exported student (static QDQ, per-channel weights) and keep the int8 "
        "file when it loses at most quantize_max_loss points; null: float only.",
        json_schema_extra={"enum": [*QUANTIZE_MODES, None]},
    )
    quantize_max_loss: Number = Field(
        0.5,
        ge=0,
        lt=100,
        description="Largest accuracy loss (percentage points; agreement loss without labels) of the int8 file "
        "against the float student before the float file is kept instead.",
    )
    search: Annotated[bool, BeforeValidator(_boolean)] = Field(
        False,
        description="Binary students only: search the per-stage widths (evolutionary search under the ops and "
        "size budget, arXiv:1909.07378) before distilling.",
    )

    @model_validator(mode="after")
    def _student_choices(self) -> JobOptions:
        if self.latency_ratio is not None and self.latency_ms is not None:
            raise _field_error("latency_ms", "give latency_ratio or latency_ms, not both")
        latency = self.latency_ratio is not None or self.latency_ms is not None
        if latency and self.student not in LATENCY_FAMILIES:
            raise _field_error(
                "student", f"a latency budget needs one of {', '.join(LATENCY_FAMILIES)}, got {self.student!r}"
            )
        if self.latency_batch is not None and not latency:
            raise _field_error("latency_batch", "needs latency_ratio or latency_ms")
        if self.search and self.student != "binary":
            raise _field_error("search", f"the channel search is for binary students, got {self.student!r}")
        if self.quantize is not None and self.student in ("qnn4", "qnn2"):
            raise _field_error("quantize", f"{self.student} students are already low-bit (QDQ); leave quantize null")
        return self

    @model_validator(mode="after")
    def _per_channel(self) -> JobOptions:
        channels = self.input_shape[0] if self.input_shape is not None else None
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            if channels is not None and len(value) != channels:
                raise _field_error(name, f"has {len(value)} values but input_shape has {channels} channel(s)")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std) and channels is None:
            raise _field_error("std", f"has {len(self.std)} values but mean has {len(self.mean)}")
        return self

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise OptionsError(_problems(error)) from None

    @classmethod
    def from_dict(cls, data: object) -> JobOptions:
        """Options from a JSON object (``None`` or ``{}``: all defaults); :class:`OptionsError` lists every problem."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise OptionsError([{"field": "options", "reason": f"must be a JSON object, got {_kind(data)}"}])
        return cls(**{str(name): value for name, value in data.items()})

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> JobOptions:
        """The options of a stored job spec; version 1 specs held ``max_accuracy_drop`` as a fraction."""
        data = dict(spec.get("options") or {})
        drop = data.get("max_accuracy_drop")
        if spec.get("version", 1) < 2 and isinstance(drop, int | float) and _is_number(drop):
            data["max_accuracy_drop"] = float(drop) * 100.0
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (tuples become lists)."""
        return self.model_dump(mode="json")


def _field_error(field: str, reason: str) -> PydanticCustomError:
    return PydanticCustomError("option", "{reason}", {"field": field, "reason": reason})


_RANGES = {
    "budget_ratio": "in (0, 1] (a fraction of the teacher's MACs)",
    "time_budget_min": f"> 0 and at most {MAX_TIME_BUDGET_MIN} minutes (a week)",
    "epochs": f"between 1 and {MAX_EPOCHS}",
    "seed": f"between 0 and {MAX_SEED}",
    "max_accuracy_drop": "0-100 percentage points (2 means two points)",
    "holdout_fraction": "in [0, 1)",
    "latency_ratio": "in (0, 1] (a fraction of the teacher's latency)",
    "latency_ms": "> 0 milliseconds",
    "latency_batch": "between 1 and 1024",
    "quantize_max_loss": "in [0, 100) percentage points",
}
_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_KNOWN = ", ".join(sorted(JobOptions.model_fields))


def _problems(error: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``{"field", "reason"}`` items, sorted by field, with our wording."""
    problems = []
    for item in error.errors():
        context = item.get("ctx") or {}
        field = str(item["loc"][0]) if item["loc"] else str(context.get("field", "options"))
        kind = item["type"]
        if kind == "extra_forbidden":
            reason = f"unknown option; known options: {_KNOWN}"
        elif kind in _BOUND_ERRORS and field in _RANGES:
            reason = f"must be {_RANGES[field]}, got {item['input']}"
        else:
            reason = item["msg"]
        problems.append({"field": field, "reason": reason})
    return sorted(problems, key=lambda problem: problem["field"])
