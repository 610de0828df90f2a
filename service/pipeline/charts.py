"""The report's charts, drawn as inline SVG: line charts, a histogram and horizontal bars, with round ticks.

:class:`Svg` makes the figures of one document (it numbers their ``<title>`` ids, so they stay unique). Every
label passes through :func:`escape`; values that are not finite real numbers count as missing (:func:`finite`).
Colours are the Okabe-Ito palette, distinguishable with the common colour-vision deficiencies.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["BLUE", "GREEN", "ORANGE", "Svg", "escape", "finite"]

BLUE = "#0072B2"
ORANGE = "#D55E00"
GREEN = "#009E73"
_GREY = "#9aa3ad"
_INK = "#1f2933"
_MUTED = "#616e7c"
_GRID = "#e4e7eb"

_HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'  # keeps labels readable over bars and lines
_MAX_MARKERS = 120  # line charts draw point markers (with tooltips) up to this many points per series


def escape(value: Any) -> str:
    """Escape any value for HTML text and attribute values (also valid XML, so SVG fragments stay parseable)."""
    return html.escape(str(value), quote=True)


def finite(value: Any) -> float | None:
    """A finite real number as float, else None (bools, strings, NaN and infinities count as missing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> str:
    number = finite(value)
    if number is None:
        return "n/a"
    return f"{round(number):,}" if number == round(number) else f"{number:,.2f}"


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


class Svg:
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
            f'<title id="{ident}-title">{escape(title)}</title>',
        ]
        if desc:
            parts.append(f'<desc id="{ident}-desc">{escape(desc)}</desc>')
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
                f'<text x="{_f(sx(marker_x) + 4)}" y="{top + 12}" fill="{_MUTED}"{_HALO}>{escape(marker_label)}</text>'
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
                f'<text x="{legend_x + 28}" y="18" fill="{_INK}">{escape(name)}</text>'
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
                f'fill="{BLUE if selected else _GREY}"><title>score {lo:.3g} to {hi:.3g}: {escape(_count(c))} items'
                f"{' (selected)' if selected else ''}</title></rect>"
            )
        if x0 <= threshold <= x1:
            tx = _f(sx(threshold))
            out.append(
                f'<line x1="{tx}" y1="{top - 14}" x2="{tx}" y2="{top + plot_h}" stroke="{ORANGE}" stroke-width="2" '
                f'stroke-dasharray="5 3"/><text x="{_f(sx(threshold) + 5)}" y="{top - 5}" fill="{ORANGE}"{_HALO}>'
                f"threshold {threshold:g}</text>"
            )
        out.append(
            f'<rect x="{left}" y="7" width="12" height="12" fill="{BLUE}"/>'
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
                f'<text x="{x}" y="{base + 16}" text-anchor="middle" fill="{_MUTED}">{escape(tick_fmt(t))}</text>'
            )
        for index, (label, value) in enumerate(items):
            y = top + index * row
            shown = label if len(label) * 7 <= label_w else label[: max(1, label_w // 7 - 1)] + "…"
            out.append(
                f'<text x="{left - 8}" y="{_f(y + row / 2 + 4)}" text-anchor="end" fill="{_INK}">{escape(shown)}'
                f"<title>{escape(label)}</title></text>"
                f'<rect x="{left}" y="{_f(y + 4)}" width="{_f(max(sx(value) - left, 0.0))}" height="{row - 8}" '
                f'fill="{colour}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
                f'<text x="{_f(sx(value) + 5)}" y="{_f(y + row / 2 + 4)}" fill="{_INK}">{escape(fmt(value))}</text>'
            )
        out.append(
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_INK}"/>'
            f'<text x="{_f(left + plot_w / 2)}" y="{base + 36}" text-anchor="middle" fill="{_INK}">'
            f"{escape(x_label)}</text>"
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
        return f'<{tag} {attrs} fill="{colour}"><title>{escape(tooltip)}</title></{tag}>'
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
            f'<text x="{left - 6}" y="{_f(sy(t) + 4)}" text-anchor="end" fill="{_MUTED}">{escape(y_fmt(t))}</text>'
        )
    for t in x_ticks:
        x = _f(sx(t))
        out.append(
            f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 5}" stroke="{_INK}"/>'
            f'<text x="{x}" y="{base + 18}" text-anchor="middle" fill="{_MUTED}">{escape(x_fmt(t))}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{_INK}"/>'
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="{_INK}"/>'
        f'<text x="{_f(left + plot_w / 2)}" y="{base + 38}" text-anchor="middle" fill="{_INK}">{escape(x_label)}</text>'
        f'<text transform="translate(14 {_f(top + plot_h / 2)}) rotate(-90)" text-anchor="middle" fill="{_INK}">'
        f"{escape(y_label)}</text>"
    )
    return "".join(out)


# ----------------------------------------------------------------------------------------------------------------
# HTML building blocks
# ----------------------------------------------------------------------------------------------------------------
