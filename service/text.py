"""Small text formatting shared by the pages and the command line."""

from __future__ import annotations

__all__ = ["format_duration", "format_ratio"]


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_ratio(before: float | None, after: float | None, better: str, worse: str) -> tuple[str, str]:
    """Teacher (``before``) over student (``after``) in words, with its tone: ``("3.5x smaller", "good")``,
    ``("1.2x slower", "bad")``; ``("", "")`` when unknown. The pages, the jobs list and ``report.html`` word every
    ratio this way, so a student that got worse is flagged wherever it is shown."""
    if before is None or after is None or before < 0 or after < 0 or before != before or after != after:
        return "", ""
    if after == 0:
        return ("none left", "good") if before > 0 else ("", "")
    if before == 0:
        return "", ""
    ratio = before / after
    if ratio >= 1:
        return f"{ratio:.1f}x {better}", "good" if ratio >= 1.05 else ""
    return f"{1 / ratio:.1f}x {worse}", "bad" if 1 / ratio >= 1.05 else ""
