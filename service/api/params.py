"""Reading request values that clients control (query parameters, headers, JSON text) into 4xx, never a 500.

Whole numbers are ASCII digits only (``str.isdigit`` also accepts other scripts' digits, which ``int`` then reads
differently or refuses) and at most 18 of them; JSON text is parsed with the nesting depth and number sizes a job's
options can need, so a hostile body is a 400 naming its field instead of a ``RecursionError`` or ``ValueError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from flask import request

from service.errors import ServiceError

__all__ = ["MAX_JSON_DEPTH", "parse_json", "refuse_repeated_parts", "whole_number"]

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects accepted in JSON a client sends (options need 2)."""
_DIGITS_RE = re.compile(r"^[0-9]{1,18}$")


def whole_number(text: str | None, field: str, *, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    """``text`` as a whole number in ``[minimum, maximum]``; 400 naming ``field`` otherwise."""
    if text is None or text == "":
        return default
    stripped = text.strip()
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
    if not _DIGITS_RE.match(stripped):
        raise ServiceError.field(400, field, f"must be a whole number {bounds} (ASCII digits)")
    value = int(stripped)
    if value < minimum or (maximum is not None and value > maximum):
        raise ServiceError.field(400, field, f"must be a whole number {bounds}, got {value}")
    return value


def _depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text``, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(text: str | bytes, field: str) -> Any:
    """Parse JSON a client sent; 400 naming ``field`` if it is not JSON, too deep or holds too long a number."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceError.field(400, field, "not valid JSON (not UTF-8)") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise ServiceError.field(400, field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ServiceError.field(400, field, f"not valid JSON ({error})") from None
    except (ValueError, RecursionError) as error:  # a number of thousands of digits
        raise ServiceError.field(400, field, f"not usable JSON ({str(error).split(':')[0]})") from None


def refuse_repeated_parts(names: Iterable[str]) -> None:
    """400 naming the part when a multipart request carries one of ``names`` more than once (none is ignored)."""
    for name in names:
        count = len(request.files.getlist(name)) + len(request.form.getlist(name))
        if count > 1:
            raise ServiceError.field(400, name, f"sent {count} times; send each part once")
