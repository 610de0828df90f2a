"""The results part of the job page: artefacts, the quality gate, the evaluation's figures (each with its image
count and 95 % interval) and the before/after table, from ``report.json``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from service.jobs.service import JobService
from service.pipeline.figures import GATE_VERDICTS
from service.pipeline.figures_html import figures_table
from service.pipeline.report import Evaluation
from service.text import format_ratio
from service.web.job_charts import mining_summary, training_charts
from storage import BlobNotFoundError, Job

__all__ = [
    "ARTIFACT_ORDER",
    "ComparisonRow",
    "comparison_rows",
    "last_event_id",
    "list_figures",
    "read_report",
    "results_context",
]

logger = logging.getLogger(__name__)

_EVENT_SCAN_BATCH = 1000
_REPORT_NAME = "report.json"
_REPORT_MAX_BYTES = 4 * 1024 * 1024
ARTIFACT_ORDER = ("student.onnx", "report.html", "report.json")


@dataclass(frozen=True)
class ComparisonRow:
    """One row of the before/after table: a measure, the teacher's and the student's value, and the change."""

    label: str
    teacher: str
    student: str
    change: str
    tone: str = ""  # "good", "bad" (a slow-down, a drop: shown as a warning) or ""


_SIDES = {"teacher": ("teacher", "before"), "student": ("student", "after")}
_WORDS = {"parameters": ("smaller", "larger"), "macs": ("fewer", "more"), "latency": ("faster", "slower")}
_MEASURES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("accuracy", "Accuracy", ("accuracy", "top1_accuracy", "acc")),
    ("parameters", "Parameters", ("parameters", "params", "num_parameters")),
    ("macs", "MACs", ("macs",)),
    ("latency", "Latency (batch 1, median)", ("latency_ms", "latency")),
)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _latency_ms(value: object) -> float | None:
    """Milliseconds from a number or a profile's ``{"1": {"median_ms": ...}, ...}`` (batch 1, else the first)."""
    number = _finite(value)
    if number is not None or not isinstance(value, Mapping):
        return number
    for key in ("median_ms", "mean_ms", "ms"):
        if key in value:
            return _finite(value[key])
    stats = value.get("1", value.get(1))
    if stats is None and value:
        stats = next(iter(value.values()))
    return _latency_ms(stats) if isinstance(stats, Mapping) else None


def _candidates(sources: Sequence[Mapping[str, Any]], side: str, aliases: tuple[str, ...]) -> Iterator[object]:
    """The values a source gives for a measure of ``side``, in order (see :func:`comparison_rows` for the layouts)."""
    for source in sources:
        for nested_key in _SIDES[side]:
            nested = source.get(nested_key)
            if isinstance(nested, Mapping):
                for holder in (nested, nested.get("profile")):
                    if isinstance(holder, Mapping):
                        yield from (holder[alias] for alias in aliases if alias in holder)
        yield from (source[f"{side}_{alias}"] for alias in aliases if f"{side}_{alias}" in source)
        if side == "student":
            yield from (source[alias] for alias in aliases if alias in source)


def _format_measure(measure: str, value: float) -> str:
    if measure == "accuracy":
        return f"{value * 100:.2f} %"
    if measure == "latency":
        return f"{value:.3g} ms"
    return f"{round(value):,}"


def _change(measure: str, teacher: float | None, student: float | None) -> tuple[str, str]:
    """The change in words and its tone: ``+0.40 points``, ``3.5x smaller``, ``1.2x slower`` (bad)."""
    if teacher is None or student is None:
        return "", ""
    if measure == "accuracy":
        points = (student - teacher) * 100
        return f"{points:+.2f} points", ""  # the quality gate judges the drop
    return format_ratio(teacher, student, *_WORDS[measure])


def comparison_rows(report: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None = None) -> list[ComparisonRow]:
    """The before/after table from a job's ``report.json`` (and its metrics as a fallback): only what is there.

    Each measure (accuracy, parameters, MACs, latency at batch 1) is looked up for the teacher and the student in
    these layouts, first match wins: a nested object (``report["teacher"]["accuracy"]``, also ``"before"`` /
    ``"after"`` and a nested ``"profile"``), a prefixed key (``teacher_accuracy``, ``student_macs``), and for the
    student the plain key (``parameters``, ``macs``, ``latency`` as in ``condense distill --json``). Latency is
    milliseconds or a profile's ``{"1": {"median_ms": ...}}``. Values that are not finite numbers are skipped (the
    next layout is tried); a measure with neither value gives no row.
    """
    sources = [source for source in (report, metrics) if source is not None]
    for source in sources:
        if not isinstance(source, Mapping):
            raise TypeError(f"report and metrics must be mappings, got {type(source).__name__}")
    rows = []
    for measure, label, aliases in _MEASURES:
        values: dict[str, float | None] = {}
        convert = _latency_ms if measure == "latency" else _finite
        for side in _SIDES:
            found = (convert(raw) for raw in _candidates(sources, side, aliases))
            values[side] = next((value for value in found if value is not None), None)
        teacher, student = values["teacher"], values["student"]
        if teacher is None and student is None:
            continue
        change, tone = _change(measure, teacher, student)
        rows.append(
            ComparisonRow(
                label=label,
                teacher="—" if teacher is None else _format_measure(measure, teacher),
                student="—" if student is None else _format_measure(measure, student),
                change=change,
                tone=tone,
            )
        )
    return rows


def read_report(jobs: JobService, job: Job, artifacts: Sequence[Any]) -> dict[str, Any] | None:
    """The job's ``report.json`` as a dict, or None (none, too big, unreadable: logged, the page goes on)."""
    for artifact in artifacts:
        if artifact.name != _REPORT_NAME:
            continue
        if artifact.size > _REPORT_MAX_BYTES:
            logger.warning("job %s: report.json is %d bytes; not shown on the page", job.id, artifact.size)
            return None
        try:
            with jobs.blobs.open_read(artifact.blob_key) as handle:
                data = json.loads(handle.read(_REPORT_MAX_BYTES + 1))
        except (BlobNotFoundError, OSError, ValueError) as error:
            logger.warning("job %s: cannot read report.json: %s", job.id, error)
            return None
        return data if isinstance(data, dict) else None
    return None


def results_context(jobs: JobService, job: Job) -> dict[str, Any]:
    artifacts = jobs.metadata.list_artifacts(job.id)
    rank = {name: index for index, name in enumerate(ARTIFACT_ORDER)}
    artifacts = sorted(artifacts, key=lambda a: (rank.get(a.name, len(rank)), a.name))
    report = read_report(jobs, job, artifacts)
    evaluation = _evaluation(report)
    comparison = comparison_rows(report, job.metrics)
    if evaluation is not None:  # accuracies are shown with counts and intervals in the figures table instead
        comparison = [row for row in comparison if row.label != "Accuracy"]
    return {
        "job": job,
        "artifacts": artifacts,
        "comparison": comparison,
        "gate": _gate(report),
        "figures": Markup(figures_table(evaluation, "job-figures")) if evaluation is not None else None,
        "charts": training_charts(report),
        "mining": mining_summary(report),
        "has_report_html": any(artifact.name == "report.html" for artifact in artifacts),
    }


def _evaluation(report: Mapping[str, Any] | None) -> Evaluation | None:
    """The report's typed evaluation; None for a report without one (an older format, or unreadable)."""
    try:
        return Evaluation.from_dict(report["evaluation"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _gate(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The quality gate's verdict from ``report["gate"]`` (``outcome``, ``passed``, ``verdict``, ``reason``)."""
    gate = report.get("gate") if report is not None else None
    if not isinstance(gate, Mapping):
        return None
    outcome = gate.get("outcome")
    if outcome not in GATE_VERDICTS:
        return None
    reason = gate.get("reason")
    return {
        "outcome": outcome,
        "passed": outcome == "passed",
        "verdict": GATE_VERDICTS[outcome],
        "reason": reason if isinstance(reason, str) else "",
    }


def last_event_id(jobs: JobService, job_id: str) -> int:
    """The id of the job's latest event (the page's live stream starts after it); 0 when there is none."""
    last = 0
    while True:
        batch = jobs.metadata.events_since(job_id, last, _EVENT_SCAN_BATCH)
        if batch:
            last = batch[-1].id
        if len(batch) < _EVENT_SCAN_BATCH:
            return last


def list_figures(jobs: JobService, job: Job, artifacts: Sequence[Any]) -> dict[str, str]:
    """The jobs list's figures of a succeeded job: accuracy (with its interval when the report has one), the
    student's ONNX size, its speed-up at batch 1 in the same words as the report (``1.2x slower`` flagged), and the
    family the job's sizing chose (``family``: what ``auto`` became)."""
    metrics = job.metrics or {}
    figures = {"accuracy": "", "size": "", "speed": "", "speed_tone": ""}
    figure = metrics.get("student_accuracy")
    if isinstance(figure, Mapping):  # the report's Proportion: value, 95 % interval, image count
        accuracy = _finite(figure.get("value"))
        low, high, images = _finite(figure.get("low")), _finite(figure.get("high")), figure.get("n")
        if accuracy is not None and low is not None and high is not None and isinstance(images, int):
            figures["accuracy"] = f"{accuracy * 100:.1f} % ({low * 100:.1f}–{high * 100:.1f}, {images:,} images)"
        figure = None
    accuracy = _finite(figure)
    if accuracy is not None:
        figures["accuracy"] = f"{accuracy * 100:.1f} %"
        interval = metrics.get("student_accuracy_interval")
        if isinstance(interval, Sequence) and len(interval) == 2 and all(_finite(v) is not None for v in interval):
            figures["accuracy"] += f" ({interval[0] * 100:.1f}–{interval[1] * 100:.1f})"
    onnx = next((artifact for artifact in artifacts if artifact.name == "student.onnx"), None)
    if onnx is not None:
        figures["size"] = f"{onnx.size / 1024:,.0f} KiB" if onnx.size >= 1024 else f"{onnx.size} B"
    report = read_report(jobs, job, artifacts) or {}
    teacher, student = report.get("teacher"), report.get("student")
    sizing = student.get("sizing") if isinstance(student, Mapping) else None
    if isinstance(sizing, Mapping) and isinstance(sizing.get("family"), str):
        figures["family"] = sizing["family"]  # what ``auto`` chose
    if isinstance(teacher, Mapping) and isinstance(student, Mapping):
        figures["speed"], figures["speed_tone"] = format_ratio(
            _latency_ms(teacher.get("latency")), _latency_ms(student.get("latency")), "faster", "slower"
        )
    return figures
