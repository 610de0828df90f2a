"""Render a compression job's ``report.json`` as one self-contained ``report.html``.

:func:`render_report_html` turns the report dict that :mod:`service.pipeline` writes into a single HTML5 document:
inline CSS, charts drawn here as inline SVG, the mined-image thumbnail grid embedded as a ``data:`` URI. No
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
import html
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["render_report_html"]

NA = "n/a"

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
_BLUE = "#0072B2"
_ORANGE = "#D55E00"
_GREEN = "#009E73"
_GREY = "#9aa3ad"
_INK = "#1f2933"
_MUTED = "#616e7c"
_GRID = "#e4e7eb"

_HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'  # keeps labels readable over bars and lines
_MAX_BARS = 30  # horizontal bar charts: the largest items; the rest are summed into one bar
_MAX_MARKERS = 120  # line charts draw point markers (with tooltips) up to this many points per series

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1120px; padding: 24px 28px 40px; background: #fff; color: #1f2933;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 0 0 12px; padding-bottom: 4px; border-bottom: 1px solid #e4e7eb; }
h3 { font-size: 1rem; margin: 16px 0 8px; }
p { margin: 0 0 10px; }
section { margin-top: 32px; }
.subtitle { color: #616e7c; margin-bottom: 14px; }
.gate { display: inline-block; padding: 6px 12px; border-radius: 6px; font-weight: 600; margin-bottom: 14px;
  border: 1px solid; }
.gate.passed { background: #e3f9e5; color: #0e5a1f; border-color: #91d8a0; }
.gate.failed { background: #ffe3e3; color: #8a1c1c; border-color: #f29b9b; }
.gate.unknown { background: #f5f7fa; color: #3e4c59; border-color: #cbd2d9; }
.cards { list-style: none; display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px;
  padding: 0; margin: 0 0 14px; }
.cards li { border: 1px solid #e4e7eb; border-radius: 8px; padding: 10px 12px; background: #f8fafc; }
.cards .label { display: block; color: #616e7c; font-size: 0.85rem; }
.cards .value { display: block; font-size: 1.35rem; font-weight: 650; }
.cards .note { display: block; color: #616e7c; font-size: 0.82rem; }
nav ul { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 6px 16px; }
nav a { color: #0b5c99; }
table { border-collapse: collapse; margin: 0 0 8px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #616e7c; font-size: 0.88rem; padding-bottom: 6px; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #cbd2d9; font-size: 0.9rem; }
td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #f8fafc; }
.good { color: #0e5a1f; }
.bad { color: #8a1c1c; }
.muted { color: #616e7c; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.86rem;
  overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 18px; }
figure { margin: 0 0 12px; }
figcaption { color: #616e7c; font-size: 0.88rem; margin-top: 4px; }
svg.chart { max-width: 100%; height: auto; display: block; }
img.thumbs { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #e4e7eb; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 12px; }
.facts dt { color: #616e7c; }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
footer { margin-top: 40px; color: #616e7c; font-size: 0.82rem; border-top: 1px solid #e4e7eb; padding-top: 8px; }
@media (max-width: 520px) { .grid { grid-template-columns: 1fr; } body { padding: 12px; } }
@media print {
  @page { margin: 14mm; }
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav { display: none; }
  section { break-inside: auto; }
  figure, table, .cards, .gate { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  .grid { grid-template-columns: 1fr 1fr; }
  tbody tr:nth-child(even) { background: none; }
}
"""


# ----------------------------------------------------------------------------------------------------------------
# Reading the report defensively
# ----------------------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escape any value for HTML text and attribute values (also valid XML, so SVG fragments stay parseable)."""
    return html.escape(str(value), quote=True)


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


def _num(value: Any) -> float | None:
    """A finite real number as float, else None (bools, strings, NaN and infinities count as missing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


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
    t, s = _num(teacher), _num(student)
    if t is None or s is None or t < 0 or s < 0:
        return "", ""
    if s == 0:
        return ("none left", "good") if t > 0 else ("", "")
    if t == 0:
        return "", ""
    r = t / s
    if r >= 1:
        return f"{r:.1f}x {better}", "good" if r >= 1.05 else ""
    return f"{1 / r:.1f}x {worse}", "bad" if 1 / r >= 1.05 else ""


# ----------------------------------------------------------------------------------------------------------------
# SVG charts
# ----------------------------------------------------------------------------------------------------------------


def _f(value: float) -> str:
    """An SVG coordinate."""
    return f"{value:.1f}"


def _ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude * (1 + 1e-9))
    if integer:
        step = float(max(1, math.ceil(step)))
    start = math.floor(lo / step + 1e-9) * step
    ticks: list[float] = []
    value = start
    while value <= hi + step * 1e-6 and len(ticks) < 50:
        ticks.append(round(value, 10))
        value = start + len(ticks) * step
    if ticks[-1] < hi - step * 1e-6:
        ticks.append(round(start + len(ticks) * step, 10))
    return ticks


def _tick_formatter(ticks: Sequence[float], scale: float = 1.0, suffix: str = "") -> Callable[[float], str]:
    """Labels with just enough decimals for the tick step (``scale=100, suffix=" %"`` for fractions)."""
    step = abs(ticks[1] - ticks[0]) * scale if len(ticks) > 1 else 1.0
    fraction = f"{step:.6f}".rstrip("0").partition(".")[2]
    decimals = len(fraction)

    def fmt(value: float) -> str:
        text = f"{value * scale:,.{decimals}f}"
        return ("0" if text.strip("-0.,") == "" else text) + suffix

    return fmt


class _Svg:
    """Makes the inline SVG figures of one document (numbers the ``<title>`` ids so they stay unique)."""

    def __init__(self) -> None:
        self._next_id = 0

    def open(self, width: int, height: int, title: str, desc: str = "") -> list[str]:
        """The opening tag with role="img", a <title> (its accessible name) and an optional <desc>."""
        self._next_id += 1
        ident = f"chart-{self._next_id}"
        parts = [
            f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-labelledby="{ident}-title{f" {ident}-desc" if desc else ""}" '
            f'font-family="system-ui, sans-serif" font-size="12">',
            f'<title id="{ident}-title">{_e(title)}</title>',
        ]
        if desc:
            parts.append(f'<desc id="{ident}-desc">{_e(desc)}</desc>')
        return parts

    def line_chart(
        self,
        title: str,
        series: Sequence[tuple[str, Sequence[float], Sequence[float | None], str]],
        *,
        x_label: str,
        y_label: str,
        y_scale: float = 1.0,
        y_suffix: str = "",
        y_clamp: tuple[float, float] | None = None,
        y_from_zero: bool = False,
        marker_x: float | None = None,
        marker_label: str = "",
    ) -> str:
        """A line chart with axes, ticks, grid lines, a legend and point tooltips; None values leave gaps.

        ``series`` holds ``(name, xs, ys, colour)``; ``y_scale``/``y_suffix`` format the y ticks (100/" %" for
        fractions); ``y_clamp`` keeps the y ticks inside bounds; ``marker_x`` draws a dashed vertical line.
        """
        points = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys, strict=False) if y is not None]
        if not points:
            return ""
        width, height = 560, 300
        left, right, top, bottom = 62, 18, 34, 48
        xs_all = [p[0] for p in points]
        ys_all = [p[1] for p in points]
        x_ticks = _ticks(min(xs_all), max(xs_all), 6, integer=True)
        lo, hi = min(ys_all), max(ys_all)
        if y_from_zero:
            lo = min(lo, 0.0)
        y_ticks = _ticks(lo, hi, 5)
        if y_clamp is not None:
            kept = [t for t in y_ticks if y_clamp[0] - 1e-9 <= t <= y_clamp[1] + 1e-9]
            y_ticks = kept if len(kept) >= 2 else [y_clamp[0], y_clamp[1]]
        x0, x1 = x_ticks[0], x_ticks[-1]
        y0, y1 = min(y_ticks[0], lo), max(y_ticks[-1], hi)
        plot_w, plot_h = width - left - right, height - top - bottom

        def sx(x: float) -> float:
            return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

        def sy(y: float) -> float:
            return top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

        y_fmt = _tick_formatter(y_ticks, y_scale, y_suffix)
        x_fmt = _tick_formatter(x_ticks)
        desc = "; ".join(
            f"{name}: {len([y for y in ys if y is not None])} points from {y_fmt(_first(ys))} to {y_fmt(_last(ys))}"
            for name, _, ys, _ in series
            if any(y is not None for y in ys)
        )
        out = self.open(width, height, title, desc)
        out.append(_axes(left, top, plot_w, plot_h, x_ticks, y_ticks, sx, sy, x_fmt, y_fmt, x_label, y_label))
        if marker_x is not None and x0 <= marker_x <= x1:
            mx = _f(sx(marker_x))
            out.append(
                f'<line x1="{mx}" y1="{top}" x2="{mx}" y2="{top + plot_h}" stroke="{_MUTED}" stroke-dasharray="4 3"/>'
                f'<text x="{_f(sx(marker_x) + 4)}" y="{top + 12}" fill="{_MUTED}"{_HALO}>{_e(marker_label)}</text>'
            )
        legend_x = left
        for index, (name, xs, ys, colour) in enumerate(series):
            dash = ' stroke-dasharray="6 3"' if index % 2 else ""
            segment: list[str] = []
            segments: list[list[str]] = []
            for x, y in zip(xs, ys, strict=False):
                if y is None:
                    if segment:
                        segments.append(segment)
                    segment = []
                else:
                    segment.append(f"{_f(sx(x))},{_f(sy(y))}")
            if segment:
                segments.append(segment)
            for seg in segments:
                if len(seg) > 1:
                    out.append(
                        f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
                    )
            valid = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]
            if len(valid) <= _MAX_MARKERS:
                for x, y in valid:
                    tip = f"{name}, {x_label.lower()} {x_fmt(x)}: {y_fmt(y)}"
                    out.append(_marker(index, sx(x), sy(y), colour, tip))
            # legend entry
            out.append(
                f'<line x1="{legend_x}" y1="14" x2="{legend_x + 22}" y2="14" stroke="{colour}" stroke-width="2"{dash}/>'
                f"{_marker(index, legend_x + 11, 14, colour)}"
                f'<text x="{legend_x + 28}" y="18" fill="{_INK}">{_e(name)}</text>'
            )
            legend_x += 40 + 7 * len(name)
        out.append("</svg>")
        return "".join(out)

    def histogram(self, title: str, edges: Sequence[float], counts: Sequence[float], threshold: float = 0.0) -> str:
        """Vertical bars over ``edges``; bars at or above ``threshold`` coloured as selected, the threshold dashed."""
        width, height = 560, 300
        left, right, top, bottom = 62, 18, 34, 48
        plot_w, plot_h = width - left - right, height - top - bottom
        x0, x1 = edges[0], edges[-1]
        if x1 <= x0:
            return ""
        x_ticks = [t for t in _ticks(x0, x1, 6) if x0 - 1e-9 <= t <= x1 + 1e-9]
        y_ticks = _ticks(0.0, max(max(counts), 1.0), 5)
        y1 = y_ticks[-1]

        def sx(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * plot_w

        def sy(y: float) -> float:
            return top + plot_h - y / y1 * plot_h

        y_fmt = _tick_formatter(y_ticks)
        x_fmt = _tick_formatter(x_ticks if len(x_ticks) > 1 else [x0, x1])
        above = sum(c for c, lo in zip(counts, edges, strict=False) if lo >= threshold)
        total = sum(counts)
        desc = (
            f"{len(counts)} bins from {x0:.3g} to {x1:.3g}; {_count(total)} items, "
            f"{_count(above)} in bins at or above the threshold {threshold:g}"
        )
        out = self.open(width, height, title, desc)
        out.append(_axes(left, top, plot_w, plot_h, x_ticks, y_ticks, sx, sy, x_fmt, y_fmt, "PU score", "items"))
        for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=False):
            if c <= 0:
                continue
            selected = lo >= threshold
            bx, bw = sx(lo), max(sx(hi) - sx(lo) - 1.0, 0.8)
            out.append(
                f'<rect x="{_f(bx + 0.5)}" y="{_f(sy(c))}" width="{_f(bw)}" height="{_f(sy(0) - sy(c))}" '
                f'fill="{_BLUE if selected else _GREY}"><title>score {lo:.3g} to {hi:.3g}: {_e(_count(c))} items'
                f"{' (selected)' if selected else ''}</title></rect>"
            )
        if x0 <= threshold <= x1:
            tx = _f(sx(threshold))
            out.append(
                f'<line x1="{tx}" y1="{top - 14}" x2="{tx}" y2="{top + plot_h}" stroke="{_ORANGE}" stroke-width="2" '
                f'stroke-dasharray="5 3"/><text x="{_f(sx(threshold) + 5)}" y="{top - 5}" fill="{_ORANGE}"{_HALO}>'
                f"threshold {threshold:g}</text>"
            )
        out.append(
            f'<rect x="{left}" y="7" width="12" height="12" fill="{_BLUE}"/>'
            f'<text x="{left + 17}" y="18" fill="{_INK}">selected (score ≥ {threshold:g})</text>'
            f'<rect x="{left + 170}" y="7" width="12" height="12" fill="{_GREY}"/>'
            f'<text x="{left + 187}" y="18" fill="{_INK}">not selected</text>'
        )
        out.append("</svg>")
        return "".join(out)

    def bars(
        self, title: str, items: Sequence[tuple[str, float]], fmt: Callable[[float], str], colour: str, x_label: str
    ) -> str:
        """Horizontal bars, one row per ``(label, value)``, the value written at the end of each bar."""
        items = [(label, value) for label, value in items if value >= 0]
        if not items:
            return ""
        row, left_pad, right, top, bottom = 24, 12, 90, 10, 44
        label_w = min(220, max(60, 7 * max(len(label) for label, _ in items)))
        left = left_pad + label_w
        width = max(560, left + 300 + right)
        height = top + row * len(items) + bottom
        plot_w = width - left - right
        ticks = _ticks(0.0, max(max(v for _, v in items), 1e-12), 5)
        x1 = ticks[-1]

        def sx(x: float) -> float:
            return left + x / x1 * plot_w

        tick_fmt = _tick_formatter(ticks)
        desc = "; ".join(f"{label}: {fmt(value)}" for label, value in items)
        out = self.open(width, height, title, desc if len(desc) < 2000 else "")
        base = top + row * len(items)
        for t in ticks:
            x = _f(sx(t))
            out.append(
                f'<line x1="{x}" y1="{top}" x2="{x}" y2="{base}" stroke="{_GRID}"/>'
                f'<text x="{x}" y="{base + 16}" text-anchor="middle" fill="{_MUTED}">{_e(tick_fmt(t))}</text>'
            )
        for index, (label, value) in enumerate(items):
            y = top + index * row
            shown = label if len(label) * 7 <= label_w else label[: max(1, label_w // 7 - 1)] + "…"
            out.append(
                f'<text x="{left - 8}" y="{_f(y + row / 2 + 4)}" text-anchor="end" fill="{_INK}">{_e(shown)}'
                f"<title>{_e(label)}</title></text>"
                f'<rect x="{left}" y="{_f(y + 4)}" width="{_f(max(sx(value) - left, 0.0))}" height="{row - 8}" '
                f'fill="{colour}"><title>{_e(label)}: {_e(fmt(value))}</title></rect>'
                f'<text x="{_f(sx(value) + 5)}" y="{_f(y + row / 2 + 4)}" fill="{_INK}">{_e(fmt(value))}</text>'
            )
        out.append(
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_INK}"/>'
            f'<text x="{_f(left + plot_w / 2)}" y="{base + 36}" text-anchor="middle" fill="{_INK}">{_e(x_label)}</text>'
        )
        out.append("</svg>")
        return "".join(out)


def _first(values: Iterable[float | None]) -> float:
    return next(v for v in values if v is not None)


def _last(values: Sequence[float | None]) -> float:
    return _first(reversed(values))


def _marker(index: int, x: float, y: float, colour: str, tooltip: str = "") -> str:
    """A point marker whose shape differs by series (circle, square), so lines are told apart without colour."""
    if index % 2:
        tag, attrs = "rect", f'x="{_f(x - 3.5)}" y="{_f(y - 3.5)}" width="7" height="7"'
    else:
        tag, attrs = "circle", f'cx="{_f(x)}" cy="{_f(y)}" r="3.5"'
    if tooltip:
        return f'<{tag} {attrs} fill="{colour}"><title>{_e(tooltip)}</title></{tag}>'
    return f'<{tag} {attrs} fill="{colour}"/>'


def _axes(
    left: float,
    top: float,
    plot_w: float,
    plot_h: float,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    x_fmt: Callable[[float], str],
    y_fmt: Callable[[float], str],
    x_label: str,
    y_label: str,
) -> str:
    """Grid lines, both axes, their tick labels and axis titles."""
    base = top + plot_h
    out: list[str] = []
    for t in y_ticks:
        y = _f(sy(t))
        out.append(
            f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="{_GRID}"/>'
            f'<text x="{left - 6}" y="{_f(sy(t) + 4)}" text-anchor="end" fill="{_MUTED}">{_e(y_fmt(t))}</text>'
        )
    for t in x_ticks:
        x = _f(sx(t))
        out.append(
            f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 5}" stroke="{_INK}"/>'
            f'<text x="{x}" y="{base + 18}" text-anchor="middle" fill="{_MUTED}">{_e(x_fmt(t))}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_INK}"/>'
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="{_INK}"/>'
        f'<text x="{_f(left + plot_w / 2)}" y="{base + 38}" text-anchor="middle" fill="{_INK}">{_e(x_label)}</text>'
        f'<text transform="translate(14 {_f(top + plot_h / 2)}) rotate(-90)" text-anchor="middle" fill="{_INK}">'
        f"{_e(y_label)}</text>"
    )
    return "".join(out)


# ----------------------------------------------------------------------------------------------------------------
# HTML building blocks
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
    "before-after": "Teacher and student",
    "per-class": "Accuracy per class",
    "training": "Training",
    "mining": "PU mining",
    "stages": "Time per stage",
    "manifest": "Reproducibility",
}


def _header(report: Mapping[str, Any]) -> str:
    family = _get(report, "job", "student")
    teacher, student = _map(report.get("teacher")), _map(report.get("student"))
    parts = ["<header>", "<h1>Compression report</h1>"]
    sub = [f"Student family: <strong>{_e(family) if family is not None else NA}</strong>"]
    images = _num(_get(report, "evaluation", "images"))
    if images is not None:
        sub.append(f"evaluated on {_e(_count(images))} held-out positive images")
    parts.append(f'<p class="subtitle">{" · ".join(sub)}</p>')

    gate = report.get("gate")
    if isinstance(gate, Mapping):
        passed = gate.get("passed")
        drop, allowed = gate.get("accuracy_drop"), gate.get("max_accuracy_drop")
        state = "passed" if passed is True else "failed" if passed is False else "unknown"
        label = {"passed": "Quality gate passed", "failed": "Quality gate failed", "unknown": "Quality gate: n/a"}
        parts.append(
            f'<p class="gate {state}" role="status">{label[state]}: accuracy drop {_e(_points(drop))}, '
            f"allowed {_e(_points(allowed))}</p>"
        )

    cards: list[str] = []

    def card(label: str, value: str, note: str = "") -> None:
        note_html = f'<span class="note">{note}</span>' if note else ""
        cards.append(f'<li><span class="label">{label}</span><span class="value">{value}</span>{note_html}</li>')

    if _num(student.get("accuracy")) is not None:
        card("Student accuracy", _pct(student.get("accuracy")), f"teacher {_pct(teacher.get('accuracy'))}")
    if _num(student.get("agreement")) is not None:
        card("Top-1 agreement", _pct(student.get("agreement")), "student matches teacher")
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


def _before_after(report: Mapping[str, Any]) -> str:
    teacher, student = _map(report.get("teacher")), _map(report.get("student"))
    if not teacher and not student:
        return ""
    rows: list[tuple[str, str, str, str, str]] = []
    t_acc, s_acc = _num(teacher.get("accuracy")), _num(student.get("accuracy"))
    diff = "" if t_acc is None or s_acc is None else _points((s_acc - t_acc) * 100, signed=True)
    diff_class = "" if not diff else "bad" if s_acc < t_acc else "good"  # type: ignore[operator]
    rows.append(("Accuracy on held-out positives", _pct(t_acc), _pct(s_acc), diff, diff_class))
    rows.append(("Top-1 agreement with the teacher", "—", _pct(student.get("agreement")), "", ""))
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
    notes = []
    images = _num(_get(report, "evaluation", "images"))
    notes.append(
        f"Accuracy on {_e(_count(images))} held-out positive images."
        if images is not None
        else "Accuracy on the held-out positives."
    )
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


def _per_class(report: Mapping[str, Any]) -> str:
    per_class = _get(report, "evaluation", "per_class")
    if not isinstance(per_class, list):
        return ""
    rows = []
    for entry in per_class:
        if not isinstance(entry, Mapping):
            continue
        t, s = _num(entry.get("teacher_accuracy")), _num(entry.get("student_accuracy"))
        diff = "" if t is None or s is None else _points((s - t) * 100, signed=True)
        css = "" if not diff or s == t else " bad" if s < t else " good"  # type: ignore[operator]
        name = entry.get("class")
        rows.append(
            f'<tr><th scope="row">{_e(name) if name is not None else NA}</th>'
            f'<td class="num">{_e(_count(entry.get("count")))}</td><td class="num">{_e(_pct(t))}</td>'
            f'<td class="num">{_e(_pct(s))}</td><td class="num{css}">{_e(diff)}</td></tr>'
        )
    if not rows:
        return ""
    table = (
        "<table><caption>Accuracy of teacher and student on the held-out positives of each class</caption>"
        '<thead><tr><th scope="col">Class</th><th scope="col" class="num">Images</th>'
        '<th scope="col" class="num">Teacher</th><th scope="col" class="num">Student</th>'
        '<th scope="col" class="num">Difference</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("per-class", _SECTION_TITLES["per-class"], table)


def _training(report: Mapping[str, Any], svg: _Svg) -> str:
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
    rows = [(h, _num(h.get("epoch"))) for h in epochs]
    rows = [(h, x if x is not None else float(i)) for i, (h, x) in enumerate(rows)]
    if rows:
        xs = [x for _, x in rows]
        acc = [_num(h.get("val_accuracy")) for h, _ in rows]
        agree = [_num(h.get("val_agreement")) for h, _ in rows]
        loss = [_num(h.get("train_loss")) for h, _ in rows]
        chart = svg.line_chart(
            "Validation accuracy and agreement per epoch",
            [("accuracy", xs, acc, _BLUE), ("agreement with teacher", xs, agree, _ORANGE)],
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
            [("training loss", xs, loss, _GREEN)],
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


def _mining(report: Mapping[str, Any], svg: _Svg, thumbnails_png: bytes | None) -> str:
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
        holdout = _num(mining.get("holdout"))
        recall = _pct(mining.get("holdout_recall"))
        if holdout is not None:
            recall += f" of {_count(holdout)} held-out positives"
        facts += [
            ("Pool", pool_text),
            ("Pool items", _e(_count(mining.get("pool_items")))),
            ("Candidates", _e(_count(mining.get("candidates")))),
            ("Selected", _e(_count(mining.get("selected")))),
            ("Class prior", _e((NA if prior is None else f"{prior:.3f}") + (prior_note if prior is not None else ""))),
            ("Held-out recall", _e(recall)),
        ]
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
        chart = svg.bars("Teacher classes of the selected items", items, _count, _BLUE, "selected items")
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


def _stages(report: Mapping[str, Any], svg: _Svg) -> str:
    stages = _map(report.get("stages_s"))
    items = [(str(k), v) for k, v in ((k, _num(v)) for k, v in stages.items()) if v is not None and v >= 0]
    if not items:
        return ""
    total = sum(v for _, v in items)
    chart = svg.bars("Time per stage", items, _seconds, _GREEN, "seconds")
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


def render_report_html(report: Mapping[str, Any], thumbnails_png: bytes | None = None) -> str:
    """Render a compression report (the dict of ``report.json``) as one self-contained HTML5 document.

    Args:
        report: the report dict; any field may be missing or None (sections without data are left out, single
            missing figures show as "n/a").
        thumbnails_png: an optional PNG of a grid of mined-image thumbnails, embedded as a ``data:`` URI.

    Returns:
        The HTML text (inline CSS and SVG; no script, no external reference).

    Raises:
        TypeError: if ``report`` is not a mapping.
    """
    if not isinstance(report, Mapping):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    svg = _Svg()
    sections = [
        _before_after(report),
        _per_class(report),
        _training(report, svg),
        _mining(report, svg, thumbnails_png),
        _stages(report, svg),
        _manifest(report),
    ]
    sections = [s for s in sections if s]
    present = [ident for ident in _SECTION_TITLES if any(s.startswith(f'<section id="{ident}"') for s in sections)]
    nav = (
        '<nav aria-label="Sections"><ul>'
        + "".join(f'<li><a href="#{ident}">{_e(_SECTION_TITLES[ident])}</a></li>' for ident in present)
        + "</ul></nav>"
        if present
        else ""
    )
    if not sections:
        sections = ['<section id="empty"><p class="muted">No results in this report yet.</p></section>']
    family = _get(report, "job", "student")
    title = "Condense compression report" + (f": {family} student" if family is not None else "")
    fmt = report.get("format")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{_header(report)}\n{nav}\n<main>\n" + "\n".join(sections) + "\n</main>\n"
        f"<footer><p>Made by Condense, report format {_e(_plain(fmt))}. The same figures are in report.json."
        "</p></footer>\n</body>\n</html>\n"
    )
