"""``condense submit --wait --summary-md PATH``: the job's outcome as Markdown, appended to ``PATH``.

Made for CI summary pages (GitHub Actions' ``$GITHUB_STEP_SUMMARY``; a file kept as an artefact elsewhere): the
status, the quality gate's verdict, and the before/after table of ``report.json`` with the ratios in the report's
words ("3.5x smaller", "1.2x slower" marked as a warning).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.text import format_ratio

__all__ = ["append_summary", "summary_markdown"]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _latency(profile: Mapping[str, Any]) -> float | None:
    latency = profile.get("latency")
    if isinstance(latency, Mapping):
        stats = latency.get("1")
        if isinstance(stats, Mapping):
            return _number(stats.get("median_ms"))
    return None


def _cell(text: str, tone: str) -> str:
    return f"⚠️ **{text}**" if tone == "bad" else text


def summary_markdown(job: Mapping[str, Any], report: Mapping[str, Any] | None, gate: tuple[bool | None, str]) -> str:
    """The Markdown summary of a finished job (``gate``: the verdict and its reason)."""
    passed, reason = gate
    lines = [f"### Condense job `{job.get('id', '')}`: {job.get('status', '')}", ""]
    if job.get("error"):
        lines += [f"> {job['error']}", ""]
    verdict = "no quality gate" if passed is None else ("✅ passed" if passed else "❌ FAILED")
    lines += [f"**Quality gate:** {verdict}" + (f" ({reason})" if passed is not None else ""), ""]
    teacher = report.get("teacher") if isinstance(report, Mapping) else None
    student = report.get("student") if isinstance(report, Mapping) else None
    if isinstance(teacher, Mapping) and isinstance(student, Mapping):
        lines += ["| measure | teacher | student | change |", "|---|---:|---:|---|"]
        t_acc, s_acc = _number(teacher.get("accuracy")), _number(student.get("accuracy"))
        if t_acc is not None and s_acc is not None:
            lines.append(f"| accuracy | {t_acc:.2%} | {s_acc:.2%} | {(s_acc - t_acc) * 100:+.2f} points |")
        for key, label, better, worse in (
            ("parameters", "parameters", "smaller", "larger"),
            ("macs", "MACs", "fewer", "more"),
            ("weight_bytes", "weight bytes", "smaller", "larger"),
        ):
            t, s = _number(teacher.get(key)), _number(student.get(key))
            if t is not None and s is not None:
                lines.append(f"| {label} | {t:,.0f} | {s:,.0f} | {_cell(*format_ratio(t, s, better, worse))} |")
        t_ms, s_ms = _latency(teacher), _latency(student)
        if t_ms is not None and s_ms is not None:
            text, tone = format_ratio(t_ms, s_ms, "faster", "slower")
            lines.append(f"| latency, batch 1 | {t_ms:.3g} ms | {s_ms:.3g} ms | {_cell(text, tone)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def append_summary(
    path: str | os.PathLike[str], job: Mapping[str, Any], out_dir: str | os.PathLike[str], gate: tuple[bool | None, str]
) -> None:
    """Append :func:`summary_markdown` to ``path``, reading ``report.json`` from ``out_dir`` when it was saved."""
    report = None
    report_path = Path(out_dir) / "report.json"
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            report = None
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(summary_markdown(job, report, gate))
