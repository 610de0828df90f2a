"""The report's figures as text, each with its image count and 95 % interval: one wording for every reader.

The HTML report (:mod:`service.pipeline.report_html`), the job page (:mod:`service.web.results`) and the CLI
summaries (``condense compress``, ``condense submit --wait``) all word a figure through these functions, so an
accuracy never appears without how many images it rests on and how uncertain it is. Figures on fewer than
:data:`~compression.metrics.intervals.ROUGH_BELOW` images say plainly that they are rough.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compression.metrics.intervals import ROUGH_BELOW, PairedDifference, Proportion
from service.pipeline.charts import finite
from service.pipeline.report import Evaluation, Gate, LabelledSet, Summary

__all__ = [
    "GATE_VERDICTS",
    "ROUGH_NOTE",
    "FigureRow",
    "drop_text",
    "evaluation_rows",
    "gate_text",
    "held_out_recall_text",
    "proportion_text",
    "set_name",
    "summary_lines",
]

ROUGH_NOTE = f"rough: fewer than {ROUGH_BELOW} images"
GATE_VERDICTS = {
    "passed": "passed",
    "failed": "FAILED",
    "undecided": "UNDECIDED (too few images to decide)",
}
_SET_NAMES = {
    "test": "test set",
    "held_out_positives": "held-out positives",
    "training_positives": "training positives (trained on)",
    "held_back_pool": "held-back pool images",
}


def set_name(kind: str | None) -> str:
    """A set's kind in words: ``held_out_positives`` -> ``held-out positives``."""
    return "n/a" if kind is None else _SET_NAMES.get(kind, kind)


def proportion_text(figure: Proportion | None) -> str:
    """``91.20 % (95 % interval 88.10-93.60 %, 1,000 images)``; ``, rough`` added under 200 images."""
    if figure is None or figure.value is None:
        return "n/a (no images)"
    rough = f"; {ROUGH_NOTE}" if figure.rough else ""
    level, low, high = figure.confidence * 100, figure.low * 100, figure.high * 100
    return f"{figure.value * 100:.2f} % ({level:.0f} % interval {low:.2f}-{high:.2f} %, {figure.n:,} images{rough})"


def drop_text(drop: PairedDifference | None) -> str:
    """Teacher minus student in points: ``1.20 points (95 % interval -0.40 to 2.90, 1,000 images)``."""
    if drop is None or drop.value is None:
        return "n/a (no images)"
    rough = f"; {ROUGH_NOTE}" if drop.rough else ""
    level, low, high = drop.confidence * 100, drop.low * 100, drop.high * 100
    return f"{drop.value * 100:.2f} points ({level:.0f} % interval {low:.2f} to {high:.2f}, {drop.n:,} images{rough})"


def held_out_recall_text(mining: Mapping[str, Any]) -> str | None:
    """The miner's held-out recall from a report's ``mining`` part, with its interval and count where the report has
    them: ``83.00 % (95 % interval 55.20-95.30 %, 12 held-out positives)``; None without a recall. Malformed
    values are left out rather than shown."""
    recall = finite(mining.get("holdout_recall"))
    if recall is None:
        return None
    details = []
    interval = mining.get("holdout_recall_interval")
    if isinstance(interval, list | tuple) and len(interval) == 2:
        low, high = finite(interval[0]), finite(interval[1])
        if low is not None and high is not None:
            details.append(f"95 % interval {low * 100:.2f}-{high * 100:.2f} %")
    holdout = finite(mining.get("holdout"))
    if holdout is not None:
        details.append(f"{round(holdout):,} held-out positives")
    return f"{recall * 100:.2f} %" + (f" ({', '.join(details)})" if details else "")


def gate_text(gate: Gate) -> str:
    """The gate's verdict and its reason on one line."""
    return f"{GATE_VERDICTS.get(gate.outcome, gate.outcome)}: {gate.reason}"


@dataclass(frozen=True)
class FigureRow:
    """One figure of the evaluation: what it is, on which set, its value, interval, count and meaning."""

    label: str
    on: str
    value: str
    low: str
    high: str
    images: int
    rough: bool
    meaning: str
    headline: bool


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %"


def _rows_for(labelled: LabelledSet, headline: bool) -> list[FigureRow]:
    rows = []
    for label, figure in (("Teacher accuracy", labelled.teacher), ("Student accuracy", labelled.student)):
        if figure.value is None:
            continue
        rows.append(
            FigureRow(
                label,
                set_name(labelled.kind),
                _pct(figure.value),
                _pct(figure.low),
                _pct(figure.high),
                figure.n,
                figure.rough,
                labelled.meaning,
                headline,
            )
        )
    drop = labelled.drop
    if drop.value is not None:
        rows.append(
            FigureRow(
                "Accuracy drop (teacher minus student, paired)",
                set_name(labelled.kind),
                f"{drop.value * 100:.2f} points",
                f"{drop.low * 100:.2f} points",
                f"{drop.high * 100:.2f} points",
                drop.n,
                drop.rough,
                "The same images scored for both models; the interval is Newcombe's for paired data.",
                headline,
            )
        )
    return rows


def evaluation_rows(evaluation: Evaluation) -> list[FigureRow]:
    """Every figure of the evaluation, the headline set first."""
    rows: list[FigureRow] = []
    headline = evaluation.headline
    for labelled in (evaluation.test, evaluation.held_out):
        if labelled is not None:
            rows.extend(_rows_for(labelled, labelled is headline))
    pool = evaluation.pool
    if pool is not None and pool.agreement.value is not None:
        figure = pool.agreement
        rows.append(
            FigureRow(
                "Agreement with the teacher",
                set_name(pool.kind),
                _pct(pool.agreement.value),
                _pct(figure.low),
                _pct(figure.high),
                figure.n,
                figure.rough,
                pool.meaning,
                False,
            )
        )
    return rows


def summary_lines(summary: Summary, width: int = 20) -> list[str]:
    """The CLI's lines for a job's figures and gate (``condense compress``, ``condense submit --wait``)."""
    if summary.evaluated_on is None:  # the no-labels mode without a test set
        lines = [f"{'accuracy':<{width}} not measured: no labelled images (send --test for an accuracy)"]
    else:
        on = set_name(summary.evaluated_on)
        lines = [
            f"{'teacher accuracy':<{width}} {proportion_text(summary.teacher_accuracy)} on the {on}",
            f"{'student accuracy':<{width}} {proportion_text(summary.student_accuracy)} on the {on}",
            f"{'accuracy drop':<{width}} {drop_text(summary.accuracy_drop)}",
        ]
    if summary.agreement is not None:
        lines.append(f"{'agreement':<{width}} {proportion_text(summary.agreement)} on held-back pool images")
    if summary.gate is not None:
        lines.append(f"{'quality gate':<{width}} {gate_text(summary.gate)}")
    return lines
