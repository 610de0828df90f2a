"""The evaluation's figures as HTML tables, for the HTML report and the job page.

:func:`figures_table` lists every accuracy and agreement with its image count, 95 % interval and whether it is
rough; :func:`per_class_table` breaks the headline set down by class. Every string is escaped.
"""

from __future__ import annotations

from html import escape

from service.pipeline.figures import ROUGH_NOTE, evaluation_rows, set_name
from service.pipeline.report import Evaluation

__all__ = ["figures_table", "per_class_table"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def figures_table(evaluation: Evaluation | None, table_id: str = "figures") -> str:
    """A lead paragraph and a table of every figure (empty without any)."""
    rows = [] if evaluation is None else evaluation_rows(evaluation)
    if evaluation is None or not rows:
        return ""
    body = []
    for row in rows:
        precision = f'<strong class="rough">{escape(ROUGH_NOTE)}</strong>' if row.rough else "enough images"
        css = ' class="headline"' if row.headline else ""
        body.append(
            f'<tr{css}><th scope="row">{escape(row.label)}</th>'
            f'<td>{escape(row.on)}</td><td class="num">{escape(row.value)}</td>'
            f'<td class="num">{escape(row.low)} to {escape(row.high)}</td>'
            f'<td class="num">{row.images:,}</td><td>{precision}</td>'
            f'<td class="muted">{escape(row.meaning)}</td></tr>'
        )
    headline = evaluation.headline
    lead = (
        f"The headline figures are those on the {escape(set_name(headline.kind))}."
        if headline is not None
        else "No labelled images were evaluated."
    )
    return (
        f"<p>{lead} Every figure has its image count and a 95 % interval (Wilson for a share; Newcombe's paired "
        "interval for the teacher-minus-student drop). A figure on few images is rough: its true value can lie "
        "anywhere in its interval.</p>"
        f'<table id="{escape(table_id)}"><caption>How good the student is, on images it never trained on</caption>'
        '<thead><tr><th scope="col">Figure</th><th scope="col">On</th><th scope="col" class="num">Value</th>'
        '<th scope="col" class="num">95 % interval</th><th scope="col" class="num">Images</th>'
        '<th scope="col">Precision</th><th scope="col">Meaning</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def per_class_table(evaluation: Evaluation | None) -> str:
    """Teacher and student accuracy per class on the headline set (empty without one)."""
    headline = None if evaluation is None else evaluation.headline
    if headline is None or not headline.per_class:
        return ""
    rows = []
    for entry in headline.per_class:
        t = None if entry.teacher is None else entry.teacher.value
        s = None if entry.student is None else entry.student.value
        diff = "" if t is None or s is None else f"{(s - t) * 100:+.2f} points"
        css = "" if not diff or s == t else " bad" if s < t else " good"  # type: ignore[operator]
        interval = "" if entry.student is None else f"{_pct(entry.student.low)} to {_pct(entry.student.high)}"
        rows.append(
            f'<tr><th scope="row">{escape(entry.name)}</th><td class="num">{entry.images:,}</td>'
            f'<td class="num">{_pct(t)}</td><td class="num">{_pct(s)}</td><td class="num">{interval}</td>'
            f'<td class="num{css}">{diff}</td></tr>'
        )
    return (
        f"<table><caption>Accuracy of teacher and student on the {escape(set_name(headline.kind))} of each class "
        f"({escape(ROUGH_NOTE)} in most classes)</caption>"
        '<thead><tr><th scope="col">Class</th><th scope="col" class="num">Images</th>'
        '<th scope="col" class="num">Teacher</th><th scope="col" class="num">Student</th>'
        '<th scope="col" class="num">Student, 95 % interval</th>'
        '<th scope="col" class="num">Difference</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
