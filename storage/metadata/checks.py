"""Argument checks of the metadata store: every bad argument becomes a :class:`TypeError` or :class:`ValueError`
saying which argument and why, before any SQL runs."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from storage.metadata.records import JOB_STATUSES

__all__ = [
    "check_int",
    "check_job_id",
    "check_number",
    "check_status",
    "check_text",
    "check_user_name",
    "dump_json",
]

_USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def check_text(value: object, what: str, *, max_len: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    return value


def check_user_name(value: object, what: str = "user name") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not _USER_NAME_RE.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: 1-64 characters, letters, digits and '_.@-', starting with a letter or digit"
        )
    return value


def check_int(value: object, what: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


def check_number(
    value: object, what: str, *, minimum: float, maximum: float | None = None, strict: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value}")
    if number < minimum or (strict and number == minimum) or (maximum is not None and number > maximum):
        low = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(
            f"{what} must be {low}" + (f" and <= {maximum:g}" if maximum is not None else "") + f", got {value}"
        )
    return number


def check_status(value: object, what: str = "status") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value not in JOB_STATUSES:
        raise ValueError(f"unknown {what} {value!r}; one of {', '.join(JOB_STATUSES)}")
    return value


def dump_json(value: object, what: str) -> str:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from None
    except ValueError as exc:  # NaN / infinity, circular references
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def check_job_id(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"job_id must be a str, got {type(value).__name__}")
    return value
