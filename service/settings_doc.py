"""The table of ``docs/settings.md``, rendered from the fields of :class:`~service.settings.Settings`.

Each field carries its ``CONDENSE_*`` variable, default and meaning; this module only renders them
(``python -m service.settings_doc`` prints the table) and ``tests/service/test_settings.py`` fails when the file is
stale. A default the value alone does not say (one derived from the data directory, or what happens when unset)
is the field's ``shown_default``.
"""

from __future__ import annotations

from pydantic.fields import FieldInfo

from service.setting_types import env_name, field_extra, is_size
from service.settings import Settings

__all__ = ["markdown_table", "shown_default"]

_BINARY_UNITS = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))


def _size(value: int) -> str:
    """``536870912`` -> ``512M``: the largest binary unit that divides the size."""
    return next((f"{value // size}{unit}" for unit, size in _BINARY_UNITS if value % size == 0), str(value))


def shown_default(field: FieldInfo) -> str:
    """A field's default as the table shows it."""
    shown = field_extra(field).get("shown_default")
    if shown is not None:
        return str(shown)
    value = field.get_default()
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, int) and is_size(field):
        text = _size(value)
    else:
        text = str(value)
    return f"`{text}`"


def markdown_table() -> str:
    """The variables as the Markdown table of ``docs/settings.md``."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for field in Settings.model_fields.values():
        lines.append(f"| `{env_name(field)}` | {shown_default(field)} | {field.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
