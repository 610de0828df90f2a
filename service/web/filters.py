"""The template filters of the pages: times, percentages, durations, byte counts."""

from __future__ import annotations

from datetime import UTC, datetime

from service.text import format_duration
from service.web import web


@web.app_template_filter("condense_time")
def format_time(timestamp: float | None) -> str:
    """A Unix time as ``2025-01-31 14:05:09 UTC`` (empty for None)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(float(timestamp), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@web.app_template_filter("condense_iso_time")
def format_iso_time(timestamp: float | None) -> str:
    """A Unix time as ISO 8601 (for ``<time datetime=...>``; empty for None)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(float(timestamp), tz=UTC).isoformat(timespec="seconds")


@web.app_template_filter("condense_percent")
def format_percent(fraction: float | None) -> str:
    """0.425 -> ``42.5 %`` (empty for None)."""
    if fraction is None:
        return ""
    return f"{float(fraction) * 100:.1f} %"


@web.app_template_filter("condense_duration")
def format_eta(seconds: float | None) -> str:
    """Seconds as ``1:15`` or ``1:02:05`` (empty for None)."""
    return "" if seconds is None else format_duration(seconds)


@web.app_template_filter("condense_bytes")
def format_bytes(size: int | None) -> str:
    """A byte count in binary units: ``2.0 KiB``, ``512 B``."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
