"""Render a compression job's ``report.json`` as one self-contained ``report.html``.

:func:`render_report_html` turns the report dict that :mod:`service.pipeline` writes into a single HTML5 document:
the Jinja template ``templates/report.html`` with its stylesheet ``templates/report.css`` inlined, charts drawn as
inline SVG (:mod:`service.pipeline.charts`), the mined-image thumbnail grid embedded as a ``data:`` URI. No
JavaScript, no external stylesheet, font or image, so the file opens offline, from an e-mail attachment or an
artefact store, and prints.

Sections (each left out when its data is missing; single missing figures show as "n/a"):

- header: student family, the quality gate (passed/failed, the accuracy drop against the allowed drop) and a few
  key figures;
- before/after: teacher against student (accuracy on the held-out positives, top-1 agreement, parameters, MACs,
  multiplications, additions, weight bytes, latency at batch 1 and 32) with a ratio column ("4.2x smaller");
- per-class accuracy;
- training curves: validation accuracy and agreement per epoch, training loss;
- PU mining: its figures, the score histogram with the selection threshold at 0, the teacher-class histogram of
  the selected items, the thumbnail grid;
- time per stage;
- reproducibility manifest (seed, hashes, pool, the number of mined ids, package versions) and the job options.

Every string taken from the report goes through :func:`html.escape` (class names, file names and pool names come
from users), and numbers that are not finite real numbers count as missing, so a malformed or partial report
renders instead of raising.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from service.pipeline.charts import BLUE, GREEN, ORANGE, Svg
from service.pipeline.charts import escape as _e
from service.pipeline.charts import finite as _num
from service.pipeline.figures import GATE_VERDICTS, held_out_recall_text, proportion_text, set_name
from service.pipeline.figures_html import figures_table, per_class_table
from service.pipeline.report import Evaluation, Report
from service.pipeline.report_choices_html import CHOICES_ID, CHOICES_TITLE, choices_section
from service.text import format_ratio

__all__ = ["render_report_html"]

NA = "n/a"
_TEMPLATES = Path(__file__).with_name("templates")
_MAX_BARS = 30  # horizontal bar charts: the largest items; the rest are summed into one bar


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]), keep_trailing_newline=True
    )


def _map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def _get(data: Any, *keys: Any) -> Any:
    """Nested lookup that answers None for anything missing or of the wrong shape; tries int keys as strings too."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        if key in data:
            data = data[key]
        elif str(key) in data:
            data = data[str(key)]
        else:
            return None
    return data


def _numbers(value: Any) -> list[float] | None:
    """A list of finite real numbers as floats; None if ``value`` is not a list or holds anything else."""
    if not isinstance(value, list):
        return None
    numbers = [_num(v) for v in value]
    return None if None in numbers else numbers  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# Number formatting
# ----------------------------------------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    """A fraction in [0, 1] as a percentage with 2 decimals: ``0.95`` -> ``95.00 %``."""
    number = _num(value)
    return NA if number is None else f"{number * 100:.2f} %"


def _count(value: Any) -> str:
    """An integer count with thousands separators: ``1072741`` -> ``1,072,741``; non-integers keep 2 decimals."""
    number = _num(value)
    if number is None:
        return NA
    return f"{round(number):,}" if number == round(number) else f"{number:,.2f}"


def _bytes(value: Any) -> str:
    """A byte count in binary units: ``4300000`` -> ``4.10 MiB``."""
    number = _num(value)
    if number is None:
        return NA
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(number) >= size:
            return f"{number / size:.2f} {unit}"
    return f"{round(number):,} B"


def _ms(value: Any) -> str:
    """Milliseconds: ``2.1`` -> ``2.10 ms`` (3 significant figures below 1 ms)."""
    number = _num(value)
    if number is None:
        return NA
    return f"{number:.2f} ms" if number >= 1 else f"{number:.3g} ms"


def _points(value: Any, signed: bool = False) -> str:
    """Percentage points: ``1.5`` -> ``1.50 points`` (``+1.50 points`` when signed)."""
    number = _num(value)
    if number is None:
        return NA
    return f"{number:+.2f} points" if signed else f"{number:.2f} points"


def _seconds(value: Any) -> str:
    """A duration: ``0.5`` -> ``0.50 s``; ``300`` -> ``5 min 0 s``; ``4000`` -> ``1 h 6 min``."""
    number = _num(value)
    if number is None:
        return NA
    if number < 10:
        return f"{number:.2f} s"
    if number < 60:
        return f"{number:.1f} s"
    whole = round(number)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _plain(value: Any) -> str:
    """A scalar for a table cell: numbers grouped, None as n/a, anything else as its text (escape it afterwards)."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _count(value) if _num(value) is not None else NA
    return str(value)


def _ratio(teacher: Any, student: Any, better: str, worse: str) -> tuple[str, str]:
    """Teacher over student as ``"4.2x smaller"`` (or ``"1.3x larger"``), with a CSS class; empty when unknown."""
    return format_ratio(_num(teacher), _num(student), better, worse)


# ----------------------------------------------------------------------------------------------------------------
# SVG charts
# ----------------------------------------------------------------------------------------------------------------


def _figure(svg: str, caption: str) -> str:
    """A chart in a <figure> with a <figcaption> (caption already escaped); empty when there is no chart."""
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>" if svg else ""


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A <dl> of label/value pairs (values already escaped HTML)."""
    body = "".join(f"<dt>{_e(label)}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<dl class="facts">{body}</dl>' if body else ""


def _section(ident: str, title: str, body: str) -> str:
    return (
        f'<section id="{ident}" aria-labelledby="{ident}-heading"><h2 id="{ident}-heading">{_e(title)}</h2>'
        f"{body}</section>"
    )


_SECTION_TITLES = {
    "evaluation": "How good is the student",
    "before-after": "Teacher and student",
    "per-class": "Accuracy per class",
    "training": "Training",
    "mining": "PU mining",
    CHOICES_ID: CHOICES_TITLE,
    "stages": "Time per stage",
    "manifest": "Reproducibility",
}


def _header(report: Mapping[str, Any], evaluation: Evaluation | None) -> str:
    family = _get(report, "job", "student")
    teacher, student = _map(report.get("teacher")), _map(report.get("student"))
    parts = ["<header>", "<h1>Compression report</h1>"]
    sub = [f"Student family: <strong>{_e(family) if family is not None else NA}</strong>"]
    headline = None if evaluation is None else evaluation.headline
    if headline is not None:
        sub.append(f"evaluated on {_e(_count(headline.images))} images of the {_e(set_name(headline.kind))}")
    parts.append(f'<p class="subtitle">{" · ".join(sub)}</p>')

    gate = report.get("gate")
    if isinstance(gate, Mapping):
        outcome = gate.get("outcome")
        state = outcome if outcome in GATE_VERDICTS else "unknown"
        verdict = f"Quality gate {GATE_VERDICTS[state]}" if state != "unknown" else "Quality gate: n/a"
        reason = gate.get("reason")
        parts.append(
            f'<p class="gate {state}" role="status">{_e(verdict)}'
            f"{': ' + _e(reason) if isinstance(reason, str) else ''}</p>"
        )

    cards: list[str] = []

    def card(label: str, value: str, note: str = "") -> None:
        note_html = f'<span class="note">{note}</span>' if note else ""
        cards.append(f'<li><span class="label">{label}</span><span class="value">{value}</span>{note_html}</li>')

    if headline is not None and headline.student.value is not None:
        note = f"{_pct(headline.student.low)}-{_pct(headline.student.high)} (95 %), {_count(headline.images)} images"
        card("Student accuracy", _pct(headline.student.value), _e(note + f"; teacher {_pct(headline.teacher.value)}"))
    pool = None if evaluation is None else evaluation.pool
    if pool is not None and pool.agreement.value is not None:
        note = f"{_pct(pool.agreement.low)}-{_pct(pool.agreement.high)} (95 %), {_count(pool.images)} pool images"
        card("Agreement with the teacher", _pct(pool.agreement.value), _e(note))
    for key, label, better, worse in (
        ("weight_bytes", "Weights", "smaller", "larger"),
        ("macs", "MACs", "fewer", "more"),
    ):
        text, _ = _ratio(teacher.get(key), student.get(key), better, worse)
        if text:
            card(label, _e(text), f"{_e(_compact(key, student.get(key)))} vs {_e(_compact(key, teacher.get(key)))}")
    text, _ = _ratio(
        _get(teacher, "latency", 1, "median_ms"), _get(student, "latency", 1, "median_ms"), "faster", "slower"
    )
    if text:
        card("Latency, batch 1", _e(text), f"{_ms(_get(student, 'latency', 1, 'median_ms'))} median")
    if cards:
        parts.append(f'<ul class="cards">{"".join(cards)}</ul>')
    parts.append("</header>")
    return "".join(parts)


def _compact(key: str, value: Any) -> str:
    """A short figure for the header cards: bytes in binary units, counts as ``28.1 M``."""
    number = _num(value)
    if key in ("weight_bytes", "onnx_bytes") or number is None:
        return _fmt_metric(key, value)
    for suffix, size in ((" G", 1e9), (" M", 1e6), (" k", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f}{suffix}"
    return _count(number)


def _fmt_metric(key: str, value: Any) -> str:
    if key in ("weight_bytes", "onnx_bytes"):
        return _bytes(value)
    return _count(value)


def _before_after(report: Mapping[str, Any], evaluation: Evaluation | None) -> str:
    teacher, student = _map(report.get("teacher")), _map(report.get("student"))
    if not teacher and not student:
        return ""
    rows: list[tuple[str, str, str, str, str]] = []
    headline = None if evaluation is None else evaluation.headline
    if headline is not None:
        t_acc, s_acc = headline.teacher.value, headline.student.value
        diff = "" if t_acc is None or s_acc is None else _points((s_acc - t_acc) * 100, signed=True)
        diff_class = "" if not diff else "bad" if s_acc < t_acc else "good"  # type: ignore[operator]
        rows.append(
            (
                f"Accuracy on the {set_name(headline.kind)}",
                proportion_text(headline.teacher),
                proportion_text(headline.student),
                diff,
                diff_class,
            )
        )
    pool = None if evaluation is None else evaluation.pool
    if pool is not None:
        rows.append(("Top-1 agreement with the teacher", "—", proportion_text(pool.agreement), "", ""))
    for key, label, better, worse in (
        ("parameters", "Parameters", "smaller", "larger"),
        ("macs", "MACs", "fewer", "more"),
        ("multiplications", "Multiplications", "fewer", "more"),
        ("additions", "Additions", "fewer", "more"),
        ("binary_ops", "Binary operations", "fewer", "more"),
        ("weight_bytes", "Weight bytes", "smaller", "larger"),
        ("onnx_bytes", "ONNX file", "smaller", "larger"),
    ):
        if key in ("binary_ops", "onnx_bytes") and not _num(student.get(key)) and not _num(teacher.get(key)):
            continue  # only shown when the student has them
        text, css = _ratio(teacher.get(key), student.get(key), better, worse)
        rows.append((label, _fmt_metric(key, teacher.get(key)), _fmt_metric(key, student.get(key)), text, css))
    for batch in (1, 32):
        t_ms, s_ms = _get(teacher, "latency", batch, "median_ms"), _get(student, "latency", batch, "median_ms")
        text, css = _ratio(t_ms, s_ms, "faster", "slower")
        rows.append((f"Latency, batch {batch} (median)", _ms(t_ms), _ms(s_ms), text, css))
    body = "".join(
        f'<tr><th scope="row">{_e(label)}</th><td class="num">{_e(t)}</td><td class="num">{_e(s)}</td>'
        f'<td class="num{" " + css if css else ""}">{_e(ratio)}</td></tr>'
        for label, t, s, ratio, css in rows
    )
    notes = ["Accuracies with their 95 % interval and image count (see How good is the student)."]
    t_format = teacher.get("format")
    notes.append(
        "Latency: median time per batch in ONNX Runtime."
        + (f" Teacher supplied as {_e(t_format)}." if t_format is not None else "")
    )
    table = (
        "<table><caption>Before (teacher) and after (student) compression</caption>"
        '<thead><tr><th scope="col">Measure</th><th scope="col" class="num">Teacher</th>'
        '<th scope="col" class="num">Student</th><th scope="col" class="num">Change</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
        f'<p class="muted">{" ".join(notes)}</p>'
    )
    return _section("before-after", _SECTION_TITLES["before-after"], table)


def _per_class(evaluation: Evaluation | None) -> str:
    body = per_class_table(evaluation)
    return _section("per-class", _SECTION_TITLES["per-class"], body) if body else ""


def _evaluation(evaluation: Evaluation | None) -> str:
    body = figures_table(evaluation)
    return _section("evaluation", _SECTION_TITLES["evaluation"], body) if body else ""


def _training(report: Mapping[str, Any], svg: Svg) -> str:
    distillation = _map(report.get("distillation"))
    history = distillation.get("history")
    epochs = [h for h in history if isinstance(h, Mapping)] if isinstance(history, list) else []
    facts: list[tuple[str, str]] = []
    best = _num(distillation.get("best_epoch"))
    if best is not None:
        facts.append(("Best epoch", _e(_count(best))))
    if distillation.get("stopped_reason") is not None:
        facts.append(("Stopped", _e(distillation.get("stopped_reason"))))
    transfer = _map(distillation.get("transfer_set"))
    if transfer:
        facts.append(
            (
                "Transfer set",
                f"{_e(_count(transfer.get('positives')))} labelled positives + "
                f"{_e(_count(transfer.get('mined')))} mined images",
            )
        )
    charts = []
    rows: list[tuple[Mapping[str, Any], float]] = []
    for index, entry in enumerate(epochs):
        epoch = _num(entry.get("epoch"))
        rows.append((entry, epoch if epoch is not None else float(index)))
    if rows:
        xs = [x for _, x in rows]
        acc = [_num(h.get("val_accuracy")) for h, _ in rows]
        agree = [_num(h.get("val_agreement")) for h, _ in rows]
        loss = [_num(h.get("train_loss")) for h, _ in rows]
        chart = svg.line_chart(
            "Validation accuracy and agreement per epoch",
            [("accuracy", xs, acc, BLUE), ("agreement with teacher", xs, agree, ORANGE)],
            x_label="Epoch",
            y_label="validation",
            y_scale=100.0,
            y_suffix=" %",
            y_clamp=(0.0, 1.0),
            marker_x=best,
            marker_label="best" if best is not None else "",
        )
        charts.append(
            _figure(
                chart,
                "Validation accuracy (against the labels) and top-1 agreement with the teacher after each "
                "epoch; the dashed line marks the epoch kept.",
            )
        )
        chart = svg.line_chart(
            "Training loss per epoch",
            [("training loss", xs, loss, GREEN)],
            x_label="Epoch",
            y_label="loss",
            y_from_zero=True,
        )
        charts.append(_figure(chart, "Mean training loss (robust distillation objective) of each epoch."))
        facts.append(("Epochs run", _e(_count(max(xs)))))
    charts = [c for c in charts if c]
    if not facts and not charts:
        return ""
    body = _facts(facts) + (f'<div class="grid">{"".join(charts)}</div>' if charts else "")
    return _section("training", _SECTION_TITLES["training"], body)


def _mining(report: Mapping[str, Any], svg: Svg, thumbnails_png: bytes | None) -> str:
    mining = _map(report.get("mining"))
    if not mining and not thumbnails_png:
        return ""
    facts: list[tuple[str, str]] = []
    if mining:
        pool = mining.get("pool")
        version = mining.get("pool_version")
        pool_text = NA if pool is None else _e(pool) + (f" (version {_e(version)})" if version is not None else "")
        prior = _num(mining.get("prior"))
        estimated = mining.get("prior_estimated")
        prior_note = " (estimated)" if estimated is True else " (given)" if estimated is False else ""
        recall = held_out_recall_text(mining) or NA
        facts += [
            ("Pool", pool_text),
            ("Pool items", _e(_count(mining.get("pool_items")))),
            ("Candidates", _e(_count(mining.get("candidates")))),
            ("Selected", _e(_count(mining.get("selected")))),
            ("Class prior", _e((NA if prior is None else f"{prior:.3f}") + (prior_note if prior is not None else ""))),
            ("Held-out recall", _e(recall)),
        ]
        if _num(mining.get("filled")):
            floor = _count(mining.get("min_selection"))
            facts.append(("Filled below the PU threshold", _e(f"{_count(mining.get('filled'))} to reach {floor}")))
        for key, label in (
            ("duplicates_of_positives", "Duplicates of positives removed"),
            ("duplicates_within_selection", "Duplicates within the selection removed"),
        ):
            if key in mining:
                facts.append((label, _e(_count(mining.get(key)))))
        seconds = _map(mining.get("seconds"))
        timed = [f"{_e(k)} {_e(_seconds(v))}" for k, v in seconds.items() if _num(v) is not None]
        if timed:
            facts.append(("Time by step", ", ".join(timed)))
    charts = []
    hist = _map(mining.get("score_histogram"))
    edges, counts = _numbers(hist.get("edges")), _numbers(hist.get("counts"))
    if (
        edges is not None
        and counts is not None
        and counts
        and len(edges) == len(counts) + 1
        and all(b > a for a, b in itertools.pairwise(edges))
        and min(counts) >= 0
    ):
        chart = svg.histogram("PU score histogram of the candidates", edges, counts)
        charts.append(
            _figure(
                chart,
                "PU classifier scores of the candidate pool items; items scoring at or above the threshold "
                "0 (blue) are selected.",
            )
        )
    classes = _map(mining.get("class_histogram"))
    items = [(str(k), v) for k, v in ((k, _num(v)) for k, v in classes.items()) if v is not None]
    if items:
        items.sort(key=lambda kv: -kv[1])
        if len(items) > _MAX_BARS:
            rest = sum(v for _, v in items[_MAX_BARS - 1 :])
            items = [*items[: _MAX_BARS - 1], (f"{len(items) - _MAX_BARS + 1} other classes", rest)]
        chart = svg.bars("Teacher classes of the selected items", items, _count, BLUE, "selected items")
        charts.append(_figure(chart, "How many selected pool items the teacher assigns to each class."))
    charts = [c for c in charts if c]
    thumbs = ""
    if thumbnails_png:
        data = base64.b64encode(bytes(thumbnails_png)).decode("ascii")
        selected = _num(mining.get("selected"))
        of = f" of the {_count(selected)} selected" if selected is not None else " selected"
        thumbs = (
            f'<figure><img class="thumbs" src="data:image/png;base64,{data}" '
            f'alt="A grid of thumbnails of pool images chosen by PU mining"><figcaption>A sample of the pool '
            f"images{_e(of)} by PU mining (the transfer data the student learnt from).</figcaption></figure>"
        )
    body = _facts(facts) + (f'<div class="grid">{"".join(charts)}</div>' if charts else "") + thumbs
    return _section("mining", _SECTION_TITLES["mining"], body)


def _stages(report: Mapping[str, Any], svg: Svg) -> str:
    stages = _map(report.get("stages_s"))
    items = [(str(k), v) for k, v in ((k, _num(v)) for k, v in stages.items()) if v is not None and v >= 0]
    if not items:
        return ""
    total = sum(v for _, v in items)
    chart = svg.bars("Time per stage", items, _seconds, GREEN, "seconds")
    body = _figure(chart, f"Wall-clock time of each stage of the job; {_e(_seconds(total))} in all.")
    return _section("stages", _SECTION_TITLES["stages"], body)


def _manifest(report: Mapping[str, Any]) -> str:
    manifest = _map(report.get("manifest"))
    options = _map(_get(report, "job", "options"))
    if not manifest and not options:
        return ""
    rows: list[tuple[str, str]] = []
    if manifest:
        rows.append(("Seed", _e(_plain(manifest.get("seed")))))
        for key, label in (("teacher_sha256", "Teacher SHA-256"), ("positives_sha256", "Positives SHA-256")):
            value = manifest.get(key)
            rows.append((label, f"<code>{_e(value)}</code>" if value is not None else NA))
        pool = manifest.get("pool")
        if isinstance(pool, Mapping):
            name, version = pool.get("name"), pool.get("version")
            text = NA if name is None else _e(name) + (f" (version {_e(version)})" if version is not None else "")
        else:
            text = _e(_plain(pool))
        rows.append(("Pool", text))
        mined = manifest.get("mined_ids")
        rows.append(
            ("Mined item ids", f"{_count(len(mined))} ids (listed in report.json)" if isinstance(mined, list) else NA)
        )
        known = {"seed", "teacher_sha256", "positives_sha256", "pool", "mined_ids", "packages"}
        for key, value in manifest.items():
            if key not in known and (value is None or isinstance(value, str | int | float | bool)):
                rows.append((str(key).replace("_", " ").capitalize(), _e(_plain(value))))
        packages = _map(manifest.get("packages"))
        if packages:
            rows.append(
                ("Packages", ", ".join(f"<code>{_e(k)} {_e(_plain(v))}</code>" for k, v in sorted(packages.items())))
            )
    body = "".join(f'<tr><th scope="row">{_e(label)}</th><td>{value}</td></tr>' for label, value in rows)
    html_parts = []
    if body:
        html_parts.append(f"<table><caption>What this run used, to reproduce it</caption><tbody>{body}</tbody></table>")
    if options:
        option_rows = "".join(
            f'<tr><th scope="row"><code>{_e(k)}</code></th><td><code>{_e(_json_short(v))}</code></td></tr>'
            for k, v in sorted(options.items(), key=lambda kv: str(kv[0]))
        )
        html_parts.append(f"<h3>Job options</h3><table><tbody>{option_rows}</tbody></table>")
    return _section("manifest", _SECTION_TITLES["manifest"], "".join(html_parts))


def _json_short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_report_html(report: Report | Mapping[str, Any], thumbnails_png: bytes | None = None) -> str:
    """Render a compression report (the dict of ``report.json``) as one self-contained HTML5 document.

    Args:
        report: the :class:`~service.pipeline.report.Report`, or the dict of a ``report.json``; in a dict any field
            may be missing or None (sections without data are left out, single missing figures show as "n/a").
        thumbnails_png: an optional PNG of a grid of mined-image thumbnails, embedded as a ``data:`` URI.

    Returns:
        The HTML text (inline CSS and SVG; no script, no external reference).

    Raises:
        TypeError: if ``report`` is not a mapping.
    """
    evaluation: Evaluation | None = None
    if isinstance(report, Report):
        evaluation, report = report.evaluation, report.to_dict()
    elif isinstance(report, Mapping):
        try:
            evaluation = Evaluation.from_dict(report["evaluation"])
        except (KeyError, TypeError, ValueError, AttributeError):
            evaluation = None  # a partial or older report: its other sections still render
    else:
        raise TypeError(f"report must be a Report or a dict, got {type(report).__name__}")
    svg = Svg()
    sections = {
        "evaluation": _evaluation(evaluation),
        "before-after": _before_after(report, evaluation),
        "per-class": _per_class(evaluation),
        "training": _training(report, svg),
        "mining": _mining(report, svg, thumbnails_png),
        CHOICES_ID: choices_section(report),
        "stages": _stages(report, svg),
        "manifest": _manifest(report),
    }
    present = [(ident, _SECTION_TITLES[ident]) for ident, html in sections.items() if html]
    family = _get(report, "job", "student")
    return (
        _environment()
        .get_template("report.html")
        .render(
            title="Condense compression report" + (f": {family} student" if family is not None else ""),
            css=Markup((_TEMPLATES / "report.css").read_text(encoding="utf-8")),
            header=Markup(_header(report, evaluation)),
            nav=present,
            sections=[Markup(html) for html in sections.values() if html],
            report_format=_plain(report.get("format")),
        )
    )
