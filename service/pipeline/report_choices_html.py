"""The report's "How the student was chosen" section: mining selection, student sizing, int8, latency side by side.

:func:`choices_section` renders, from the report dict (each part left out when its data is missing):

- the mining **selection** used, whether labels were used, and the per-class make-up (teacher-predicted classes) of
  the training data and of the items held back for evaluation (``report["mining"]``);
- **sizing** (``report["student"]["sizing"]``): the family, the budget kind and the sentence saying why this
  student (``auto``'s choice, the latency budget, the bit-ops budget, the binary channel search), with every
  latency measurement the search took;
- **latency side by side** (``report["student"]["latency_side_by_side"]``): teacher and students timed in one run
  at batch 1 and 32, with the machine;
- **int8** (``report["student"]["int8"]``): float and int8 files side by side, the verification and which file
  is kept.

Every string from the report is escaped; numbers that are not finite count as missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.pipeline.charts import escape as _e
from service.pipeline.charts import finite as _num

__all__ = ["CHOICES_ID", "CHOICES_TITLE", "choices_section"]

CHOICES_ID = "choices"
CHOICES_TITLE = "How the student was chosen"
NA = "n/a"
_SELECTIONS = {
    "default": "PU score within per-class quotas; for a rare task, filled up to a floor with the next-ranked items",
    "pu": "every item the PU classifier scores above zero (PU-s1)",
    "pu-half": "the better-scoring half of the PU selection (PU-s2)",
    "random": "pool items drawn at random, as many as the default selection takes",
    "dfnd": "the teacher's most confident pool items, no labels used (DFND)",
}


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ms(value: Any) -> str:
    number = _num(value)
    return NA if number is None else f"{number:.3f} ms"


def _pct(value: Any) -> str:
    number = _num(value)
    return NA if number is None else f"{number:.2%}"


def _count(value: Any) -> str:
    number = _num(value)
    return NA if number is None else f"{int(number):,}"


def _facts(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<dt>{_e(label)}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<dl class="facts">{body}</dl>' if body else ""


def _table(caption: str, head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    header = "".join(f'<th scope="col">{_e(cell)}</th>' for cell in head)
    cells = ["".join(f'<td class="num">{cell}</td>' for cell in row[1:]) for row in rows]
    body = "".join(f'<tr><th scope="row">{row[0]}</th>{rest}</tr>' for row, rest in zip(rows, cells, strict=True))
    return f"<table><caption>{_e(caption)}</caption><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _selection(report: Mapping[str, Any]) -> str:
    mining = _map(report.get("mining"))
    selection = mining.get("selection")
    if not isinstance(selection, str):
        return ""
    facts = [
        ("Selection", f"<strong>{_e(selection)}</strong>: {_e(_SELECTIONS.get(selection, ''))}"),
        ("Labels used", "yes" if mining.get("labels_used", True) else "no (no positives: DFND's noise adaptation)"),
        ("Training items", _e(_count(mining.get("selected")))),
        ("Held back for evaluation (never trained on)", _e(_count(mining.get("evaluation")))),
    ]
    training, held = _map(mining.get("class_histogram")), _map(mining.get("evaluation_classes"))
    names = list(dict.fromkeys([*training, *held]))
    rows = [[_e(name), _e(_count(training.get(name, 0))), _e(_count(held.get(name, 0)))] for name in names]
    table = _table(
        "Make-up of the mined data by the teacher's predicted class", ["Class", "Training", "Held back"], rows
    )
    return "<h3>Training data</h3>" + _facts(facts) + table


def _sizing(report: Mapping[str, Any]) -> str:
    sizing = _map(_map(report.get("student")).get("sizing"))
    if not sizing:
        return ""
    kinds = {"macs": "MACs", "latency": "Latency budget", "bitops": "Bit-ops"}
    facts = [
        ("Family", _e(sizing.get("family", NA))),
        ("Sized by", _e(kinds.get(str(sizing.get("budget")), str(sizing.get("budget", NA))))),
        ("Why", _e(sizing.get("reason", NA))),
    ]
    search = _map(sizing.get("search"))
    if search:
        facts.append(("Searched stage widths", _e(", ".join(map(str, search.get("stage_widths") or [])))))
        facts.append(("Search cost", _e(f"{search.get('candidates_trained')} candidates, {search.get('search_s')} s")))
    rows = []
    for row in sizing.get("measured") or []:
        row = _map(row)
        timings = [
            f"batch {key[1:]}: {_ms(_map(value).get('ms'))}"
            + (f" ({_num(_map(value).get('ratio')):.2f}x teacher)" if _num(_map(value).get("ratio")) else "")
            for key, value in row.items()
            if key.startswith("b") and isinstance(value, Mapping)
        ]
        fits = "yes" if row.get("fits") else "no"
        rows.append([_e(row.get("label", "")), _e(_count(row.get("macs"))), _e("; ".join(timings)), fits])
    table = _table("Candidates timed by the latency search", ["Candidate", "MACs", "Latency", "Fits"], rows)
    return "<h3>Student size</h3>" + _facts(facts) + table


def _latency(report: Mapping[str, Any]) -> str:
    side = _map(_map(report.get("student")).get("latency_side_by_side"))
    rows_in = _map(side.get("rows"))
    if not rows_in:
        return ""
    batches = sorted({str(b) for rows in rows_in.values() for b in _map(rows)}, key=lambda b: (len(b), b))
    head = ["File"] + [f"Batch {b}: min / median (speed-up)" for b in batches]
    rows = []
    for name, per_batch in rows_in.items():
        cells = [_e(name)]
        for batch in batches:
            figures = _map(_map(per_batch).get(batch))
            speedup = _num(figures.get("speedup"))
            cells.append(
                _e(f"{_ms(figures.get('min_ms'))} / {_ms(figures.get('median_ms'))}")
                + (f" ({speedup:.2f}x)" if speedup is not None else "")
            )
        rows.append(cells)
    caption = f"ONNX Runtime latency, timed side by side on {side.get('machine', NA)}, {side.get('threads')} thread(s)"
    note = f'<p class="muted">{_e(side["note"])}</p>' if side.get("note") else ""
    return "<h3>Latency, side by side</h3>" + _table(caption, head, rows) + note


def _int8(report: Mapping[str, Any]) -> str:
    int8 = _map(_map(report.get("student")).get("int8"))
    if not int8:
        return ""
    low_high = int8.get("agreement_interval") or [None, None]
    kept = int8.get("kept")
    verdict = (
        f"<strong>{_e(int8.get('file'))}</strong> kept (download it with the other artefacts)"
        if kept == "int8"
        else "<strong>float file kept</strong>: "
        + (_e(int8["error"]) if int8.get("error") else "the int8 form lost more than the limit")
    )
    agreement = (
        f"{_pct(int8.get('top1_agreement'))} (95 % CI {_pct(low_high[0])}-{_pct(low_high[1])}) on "
        f"{_count(int8.get('num_images'))} {int8.get('verified_on', 'images')}"
    )
    facts = [
        ("Kept", verdict),
        ("Top-1 agreement with the float student", _e(agreement)),
        ("Loss against the float student", _e(f"{_pct(int8.get('loss'))} (limit {_pct(int8.get('max_loss'))})")),
        ("Calibration", _e(f"{_count(int8.get('calibration_images'))} transfer images")),
    ]
    rows = [
        ["Accuracy", _e(_pct(int8.get("float_accuracy"))), _e(_pct(int8.get("int8_accuracy")))],
        ["File size", _e(f"{_count(int8.get('float_bytes'))} bytes"), _e(f"{_count(int8.get('int8_bytes'))} bytes")],
    ]
    return "<h3>int8</h3>" + _facts(facts) + _table("Float and int8 students", ["Measure", "Float", "int8"], rows)


def choices_section(report: Mapping[str, Any]) -> str:
    """The section's HTML (empty when the report holds none of its parts)."""
    body = _selection(report) + _sizing(report) + _latency(report) + _int8(report)
    if not body:
        return ""
    return (
        f'<section id="{CHOICES_ID}" aria-labelledby="{CHOICES_ID}-heading">'
        f'<h2 id="{CHOICES_ID}-heading">{_e(CHOICES_TITLE)}</h2>{body}</section>'
    )
