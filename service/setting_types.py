"""The value types of :class:`service.settings.Settings`: how each one reads the text of its ``CONDENSE_*`` variable.

Each type is an ``Annotated`` pydantic type whose before-validator turns the environment's text into the value
(``"512M"`` -> 536870912, ``"off"`` -> False, ``"~/data"`` -> an absolute path) and passes values that are not text
on to pydantic, so Settings built from Python values are checked by the same rules. Limits (``ge``,
``pattern``, ``min_length``) sit on the fields themselves; :func:`reason` words a failed check as the one-line
reason of a :class:`~service.settings.SettingsError`. :func:`setting` declares a field with its variable's name.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AllowInfNan, BeforeValidator, Field
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = [
    "AbsolutePath",
    "Addresses",
    "Bind",
    "Flag",
    "Seconds",
    "Size",
    "WholeNumber",
    "absolute_path",
    "env_name",
    "field_extra",
    "hide_password",
    "is_size",
    "one_of",
    "parse_bytes",
    "reason",
    "setting",
    "url_schemes",
]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; plain digits are bytes; K, M, G, T are powers of 1024 (``MiB``, ``MB`` alike)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"expected a size such as 1048576, 512M or 2G, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def absolute_path(text: str) -> Path:
    """A path from the environment: ``~`` expanded, relative to the working directory of the command."""
    return Path(text).expanduser().absolute()


def hide_password(url_text: str) -> str:
    """``url_text`` with the password of its user part (if any) replaced by ``***``."""
    parts = urlsplit(url_text)
    if parts.password is None:
        return url_text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _problem(text: str) -> PydanticCustomError:
    """A failed check worded by us (the text is a context value, never a template: it may hold braces)."""
    return PydanticCustomError("setting", "{reason}", {"reason": text})


def _whole_number(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        raise _problem("expected a whole number") from None


def _seconds(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        raise _problem("expected a number of seconds") from None


def _size(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse_bytes(value)
    except ValueError as error:
        raise _problem(str(error)) from None


def _flag(value: object) -> object:
    if not isinstance(value, str):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _problem("expected 1 or 0 (also true/false, yes/no, on/off)")


def _bind(value: object) -> object:
    if not isinstance(value, str) or value.startswith("unix:"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _problem("expected HOST:PORT (e.g. 0.0.0.0:8000) or unix:/path/to.sock")
    return value


def _addresses(value: object) -> object:
    """``*``, or comma-separated IP addresses and networks (``10.0.0.0/8``; host bits unset, as gunicorn wants)."""
    if not isinstance(value, str):
        return value
    items = [item.strip() for item in value.split(",") if item.strip()]
    if items == ["*"]:
        return "*"
    bad = []
    for item in items:
        try:
            ipaddress.ip_network(item)
        except ValueError:
            bad.append(item)
    if bad or not items:
        shown = ", ".join(repr(item) for item in bad) or "nothing"
        raise _problem(f"expected '*' or IP addresses / networks separated by commas, not {shown}")
    return ",".join(items)


def _path(value: object) -> object:
    return absolute_path(value) if isinstance(value, str) else value


def url_schemes(schemes: tuple[str, ...]) -> BeforeValidator:
    """For ``Annotated[str, url_schemes(...)]``: a URL with one of these schemes (``""``: a plain path)."""

    def check(value: object) -> object:
        if isinstance(value, str) and urlsplit(value).scheme.lower() not in schemes:
            shown = ", ".join(f"{s}:" for s in schemes if s) + (" or a plain path" if "" in schemes else "")
            raise _problem(f"expected a URL starting with {shown}")
        return value

    return BeforeValidator(check)


def one_of(choices: tuple[str, ...]) -> BeforeValidator:
    """For ``Annotated[str, one_of(...)]``: one of ``choices`` (upper case), written in any case."""

    def check(value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.upper() not in choices:
            raise _problem(f"expected one of {', '.join(choices)}")
        return value.upper()

    return BeforeValidator(check)


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
Seconds = Annotated[float, BeforeValidator(_seconds), AllowInfNan(False)]
"""A number of seconds (never infinity or NaN); the field's ``ge`` is its minimum."""
Size = Annotated[int, BeforeValidator(_size)]
"""A number of bytes, from text such as ``1048576``, ``512M`` or ``2GiB`` (:func:`parse_bytes`)."""
Flag = Annotated[bool, BeforeValidator(_flag)]
Bind = Annotated[str, BeforeValidator(_bind)]
Addresses = Annotated[str, BeforeValidator(_addresses)]
AbsolutePath = Annotated[Path, BeforeValidator(_path)]


def setting(
    env: str,
    default: Any,
    description: str,
    *,
    shown_default: str | None = None,
    expected: str | None = None,
    **limits: Any,
) -> Any:
    """A field of Settings set by the variable ``env``.

    ``shown_default`` is the default as ``docs/settings.md`` shows it when the value alone does not say it (one
    derived from the data directory, or what happens when unset); ``expected`` words the field's ``pattern`` in an
    error. ``limits`` are pydantic's (``ge``, ``pattern``, ``min_length``, ``repr``).
    """
    extra: dict[str, Any] = {"env": env}
    if shown_default is not None:
        extra["shown_default"] = shown_default
    if expected is not None:
        extra["expected"] = expected
    return Field(default, description=description, json_schema_extra=extra, **limits)


def field_extra(field: FieldInfo) -> dict[str, Any]:
    """The ``json_schema_extra`` of a field made by :func:`setting`."""
    extra = field.json_schema_extra
    if not isinstance(extra, dict):
        raise TypeError(f"a settings field needs setting(...), got json_schema_extra={extra!r}")
    return extra


def env_name(field: FieldInfo) -> str:
    """The ``CONDENSE_*`` variable that sets a field."""
    return str(field_extra(field)["env"])


def is_size(field: FieldInfo) -> bool:
    """Whether a field is a :data:`Size` (a number of bytes)."""
    return any(isinstance(item, BeforeValidator) and item.func is _size for item in field.metadata)


def _minimum(field: FieldInfo) -> Any:
    return next((limit.ge for limit in field.metadata if hasattr(limit, "ge")), None)


def reason(error: ErrorDetails, field: FieldInfo) -> str:
    """What the value of a field should have been, for one of pydantic's errors about it."""
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "setting":
        return str(context["reason"])
    if kind in ("greater_than_equal", "finite_number"):
        minimum = _minimum(field)
        if field.annotation is float:
            return f"must be a finite number >= {minimum:g}"
        if is_size(field):
            return f"must be at least {minimum} byte" + ("s" if minimum != 1 else "")
        return f"must be >= {minimum}"
    if kind == "string_pattern_mismatch":
        return f"expected {field_extra(field).get('expected', context.get('pattern'))}"
    if kind == "string_too_short":
        return f"must be at least {context['min_length']} characters (got {len(error['input'])})"
    return error["msg"]
