"""Small text formatting shared by the pages and the command line."""

from __future__ import annotations

__all__ = ["format_duration"]


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
