"""Student registry: one factory, :func:`create_student`, backed by registered constructors.

Constructors register themselves with :func:`register_student` when their module is imported by
``compression.students.__init__`` (explicit imports there, no star-import side effects).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from compression.families import FAMILIES as LAYER_FAMILIES

StudentConstructor = Callable[..., nn.Module]


@dataclass(frozen=True)
class StudentInfo:
    """What the registry knows about one student architecture."""

    name: str
    family: str
    description: str
    constructor: StudentConstructor


_STUDENTS: dict[str, StudentInfo] = {}

# A family name on its own picks that family's default architecture: ``create_student("ghost")``.
_FAMILY_DEFAULTS: dict[str, str] = {}

FAMILIES = tuple(LAYER_FAMILIES)


def register_student(
    name: str, *, family: str, description: str, family_default: bool = False
) -> Callable[[StudentConstructor], StudentConstructor]:
    """Decorator that registers a student constructor under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families are {', '.join(FAMILIES)}")

    def decorate(constructor: StudentConstructor) -> StudentConstructor:
        if name in _STUDENTS or name in FAMILIES:
            raise ValueError(f"student name {name!r} is already taken")
        _STUDENTS[name] = StudentInfo(name, family, description, constructor)
        if family_default:
            if family in _FAMILY_DEFAULTS:
                raise ValueError(f"family {family!r} already has a default: {_FAMILY_DEFAULTS[family]!r}")
            _FAMILY_DEFAULTS[family] = name
        return constructor

    return decorate


def list_students(family: str | None = None) -> list[str]:
    """Names of the registered students, sorted; only those of ``family`` when it is given."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families are {', '.join(FAMILIES)}")
    return sorted(n for n, info in _STUDENTS.items() if family is None or info.family == family)


def family_defaults() -> dict[str, str]:
    """Family name -> the architecture that family name alone resolves to."""
    return dict(_FAMILY_DEFAULTS)


def resolve_student(name: str) -> StudentInfo:
    """Registry entry for an architecture name or a family name; ValueError listing the names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"student name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _FAMILY_DEFAULTS.get(key, key)
    if key not in _STUDENTS:
        known = ", ".join(list_students())
        families = ", ".join(sorted(_FAMILY_DEFAULTS))
        raise ValueError(f"unknown student {name!r}; known students: {known}; or a family name: {families}")
    return _STUDENTS[key]
