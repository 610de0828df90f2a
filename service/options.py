"""What a user asks of one compression job: :class:`JobOptions`, validated from JSON with every problem listed.

:meth:`JobOptions.from_dict` takes the ``options`` object of ``POST /api/v1/jobs`` (or ``condense submit
--options``) and checks every field before anything is queued. It does not stop at the first problem: it collects
all of them as ``{"field": ..., "reason": ...}`` dicts and raises one :class:`OptionsError` (a ValueError) carrying
the list, which the API returns as a 422 with ``fields``. Unknown fields are errors (a typo such as ``epoch`` must not
be silently ignored). :meth:`JobOptions.to_dict` gives the JSON stored on the job row and read back by the worker
(``from_dict(options.to_dict()) == options``).

``max_accuracy_drop`` is the quality gate: the largest accepted drop of accuracy from teacher to student, as a
fraction (0.02 = two percentage points); ``condense submit`` exits non-zero when the job's result breaks it.

| field | type | default | rule |
|---|---|---|---|
| ``student`` | str | ``"ghost"`` | ``ghost``, ``binary`` or ``adder`` |
| ``budget_ratio`` | number | 0.25 | student MACs / teacher MACs, in (0, 1] |
| ``time_budget_min`` | number or null | null | wall-clock budget of the training in minutes, > 0 |
| ``epochs`` | int or null | null (the family's default) | >= 1 |
| ``seed`` | int | 0 | 0 .. 2**31 - 1 |
| ``pool`` | str | ``"demo"`` | name of an unlabelled pool (``GET /api/v1/pools``) |
| ``input_shape`` | [C, H, W] or null | null (from the model) | C in {1, 3}; H, W in 1 .. 4096; needed for TorchScript |
| ``mean`` / ``std`` | list of C numbers or null | null (from the model, else none) | one per channel; std > 0 |
| ``max_accuracy_drop`` | number or null | null (no gate) | teacher minus student accuracy, a fraction in [0, 1] |
| ``holdout_fraction`` | number | 0.2 | share of each class of the positives held out for validation, in [0, 1) |

:class:`JobCancelled` is the exception the compression pipeline raises when its ``should_stop`` callback turned true
(a user's cancel, or a worker shutting down); the worker decides which it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["MAX_SEED", "STUDENT_FAMILIES", "JobCancelled", "JobOptions", "OptionsError"]

STUDENT_FAMILIES: tuple[str, ...] = ("ghost", "binary", "adder")
MAX_SEED = 2**31 - 1
_MAX_SIDE = 4096
_MAX_POOL_NAME = 100


class OptionsError(ValueError):
    """Job options that cannot be used; ``problems`` lists each as ``{"field": ..., "reason": ...}``."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = [dict(problem) for problem in problems]
        summary = "; ".join(f"{p['field']}: {p['reason']}" for p in self.problems)
        super().__init__(f"invalid job options: {summary}")


class JobCancelled(Exception):  # noqa: N818 -- a signal, not an error
    """Raised by the compression pipeline when ``should_stop()`` became true; the work stopped at a checkpoint."""


@dataclass(frozen=True)
class JobOptions:
    """Options of one compression job (see the module docstring for each field's meaning and rule)."""

    student: str = "ghost"
    budget_ratio: float = 0.25
    time_budget_min: float | None = None
    epochs: int | None = None
    seed: int = 0
    pool: str = "demo"
    input_shape: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_accuracy_drop: float | None = None
    holdout_fraction: float = 0.2

    def __post_init__(self) -> None:
        # Built directly (not through from_dict): the same checks, raised as one OptionsError.
        checked = _check(asdict(self))
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: object) -> JobOptions:
        """Options from a JSON object (``None`` or ``{}``: all defaults); :class:`OptionsError` lists every problem."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise OptionsError([{"field": "options", "reason": f"must be a JSON object, got {_kind(data)}"}])
        known = {f.name for f in fields(cls)}
        problems = [
            {"field": str(name), "reason": f"unknown option; known options: {', '.join(sorted(known))}"}
            for name in data
            if name not in known
        ]
        values = {name: value for name, value in data.items() if name in known}
        try:
            checked = _check({**{f.name: f.default for f in fields(cls)}, **values})
        except OptionsError as error:
            problems += error.problems
        if problems:
            raise OptionsError(sorted(problems, key=lambda p: p["field"]))
        return cls(**checked)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (tuples become lists)."""
        result: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            result[f.name] = list(value) if isinstance(value, tuple) else value
        return result


# ------------------------------------------------------------------------------------------------------- checks


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


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, reason: str) -> None:
        self.items.append({"field": field, "reason": reason})


def _number(problems: _Problems, name: str, value: object, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not _is_number(value):
        problems.add(name, f"must be a finite number, got {_kind(value)}")
        return None
    return float(value)  # type: ignore[arg-type]


def _check(values: dict[str, Any]) -> dict[str, Any]:
    """Validated, normalised field values; OptionsError with every problem found."""
    problems = _Problems()
    out: dict[str, Any] = {}

    student = values["student"]
    if not isinstance(student, str) or student not in STUDENT_FAMILIES:
        shown = repr(student) if isinstance(student, str) else _kind(student)
        problems.add("student", f"must be one of {', '.join(STUDENT_FAMILIES)}, got {shown}")
    out["student"] = student

    ratio = _number(problems, "budget_ratio", values["budget_ratio"])
    if ratio is not None and not 0.0 < ratio <= 1.0:
        problems.add("budget_ratio", f"must be in (0, 1] (a fraction of the teacher's MACs), got {ratio:g}")
    out["budget_ratio"] = ratio

    minutes = _number(problems, "time_budget_min", values["time_budget_min"], optional=True)
    if minutes is not None and minutes <= 0:
        problems.add("time_budget_min", f"must be > 0 minutes, got {minutes:g}")
    out["time_budget_min"] = minutes

    epochs = values["epochs"]
    if epochs is not None:
        if not _is_int(epochs):
            problems.add("epochs", f"must be an integer, got {_kind(epochs)}")
        elif int(epochs) < 1:
            problems.add("epochs", f"must be >= 1, got {int(epochs)}")
        else:
            epochs = int(epochs)
    out["epochs"] = epochs

    seed = values["seed"]
    if not _is_int(seed):
        problems.add("seed", f"must be an integer, got {_kind(seed)}")
    elif not 0 <= int(seed) <= MAX_SEED:
        problems.add("seed", f"must be between 0 and {MAX_SEED}, got {int(seed)}")
    else:
        seed = int(seed)
    out["seed"] = seed

    pool = values["pool"]
    if not isinstance(pool, str) or not pool or len(pool) > _MAX_POOL_NAME or not pool.isprintable():
        problems.add("pool", f"must be a pool name (1-{_MAX_POOL_NAME} printable characters), got {_kind(pool)}")
    out["pool"] = pool

    shape = values["input_shape"]
    channels: int | None = None
    if shape is not None:
        if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(_is_int(v) for v in shape):
            problems.add("input_shape", "must be a list of three integers [C, H, W], e.g. [3, 32, 32]")
        else:
            shape = tuple(int(v) for v in shape)
            if shape[0] not in (1, 3):
                problems.add("input_shape", f"must have 1 or 3 channels, got {shape[0]}")
            elif not all(1 <= side <= _MAX_SIDE for side in shape[1:]):
                problems.add("input_shape", f"height and width must be between 1 and {_MAX_SIDE}, got {shape[1:]}")
            else:
                channels = shape[0]
    out["input_shape"] = shape

    lengths: dict[str, int] = {}
    for name in ("mean", "std"):
        value = values[name]
        if value is not None:
            if not isinstance(value, list | tuple) or len(value) not in (1, 3) or not all(map(_is_number, value)):
                problems.add(name, "must be a list of 1 or 3 finite numbers (one per channel)")
            else:
                value = tuple(float(v) for v in value)
                lengths[name] = len(value)
                if name == "std" and any(v <= 0 for v in value):
                    problems.add(name, "every value must be > 0")
                if channels is not None and len(value) != channels:
                    problems.add(name, f"has {len(value)} values but input_shape has {channels} channel(s)")
        out[name] = value
    if len(lengths) == 2 and lengths["mean"] != lengths["std"] and channels is None:
        problems.add("std", f"has {lengths['std']} values but mean has {lengths['mean']}")

    drop = _number(problems, "max_accuracy_drop", values["max_accuracy_drop"], optional=True)
    if drop is not None and not 0.0 <= drop <= 1.0:
        problems.add("max_accuracy_drop", f"must be a fraction in [0, 1] (0.02 = two points), got {drop:g}")
    out["max_accuracy_drop"] = drop

    holdout = _number(problems, "holdout_fraction", values["holdout_fraction"])
    if holdout is not None and not 0.0 <= holdout < 1.0:
        problems.add("holdout_fraction", f"must be in [0, 1), got {holdout:g}")
    out["holdout_fraction"] = holdout

    if problems.items:
        raise OptionsError(problems.items)
    return out
