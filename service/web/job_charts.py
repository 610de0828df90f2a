"""The job page's training curves and mining summary, from the job's ``report.json``.

The curves are small inline SVG line charts (:class:`service.pipeline.charts.Svg`, the same drawing code as
``report.html``): validation accuracy and agreement with the teacher per epoch, and the training loss per epoch
(robust knowledge distillation; the student families are Ghost, arXiv:1911.11907, binary BBG, arXiv:1909.12117,
and AdderNet, arXiv:1912.13200). The mining summary lists what PU mining (arXiv:1909.09757) found in the pool.
Only what the report holds is shown; a report without history gives no chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from service.pipeline.charts import Svg
from service.pipeline.figures import held_out_recall_text

__all__ = ["mining_summary", "training_charts"]

_BLUE, _ORANGE, _GREEN = "#0b5cad", "#b35900", "#1a7f37"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def training_charts(report: Mapping[str, Any] | None) -> list[Markup]:
    """Validation accuracy/agreement and training loss per epoch as inline SVG (empty without a history)."""
    distillation = _mapping(_mapping(report).get("distillation"))
    history = distillation.get("history")
    epochs = [entry for entry in history if isinstance(entry, Mapping)] if isinstance(history, list) else []
    if not epochs:
        return []
    xs = [_number(entry.get("epoch")) or float(index + 1) for index, entry in enumerate(epochs)]
    best = _number(distillation.get("best_epoch"))
    svg = Svg()
    charts = [
        svg.line_chart(
            "Validation accuracy and agreement per epoch",
            [
                ("accuracy", xs, [_number(e.get("val_accuracy")) for e in epochs], _BLUE),
                ("agreement with teacher", xs, [_number(e.get("val_agreement")) for e in epochs], _ORANGE),
            ],
            x_label="Epoch",
            y_label="validation",
            y_scale=100.0,
            y_suffix=" %",
            y_clamp=(0.0, 1.0),
            marker_x=best,
            marker_label="best" if best is not None else "",
        ),
        svg.line_chart(
            "Training loss per epoch",
            [("training loss", xs, [_number(e.get("train_loss")) for e in epochs], _GREEN)],
            x_label="Epoch",
            y_label="loss",
            y_from_zero=True,
        ),
    ]
    return [Markup(chart) for chart in charts if chart]  # our own SVG: every value in it is escaped


def mining_summary(report: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """``(label, value)`` pairs: pool, pool items, candidates, selected, class prior, held-out recall."""
    mining = _mapping(_mapping(report).get("mining"))
    if not mining:
        return []
    facts: list[tuple[str, str]] = []
    pool = mining.get("pool")
    if pool is not None:
        version = mining.get("pool_version")
        facts.append(("Pool", f"{pool}" + (f" (version {version})" if version is not None else "")))
    for key, label in (("pool_items", "Pool images"), ("candidates", "Candidates"), ("selected", "Mined")):
        value = _number(mining.get(key))
        if value is not None:
            facts.append((label, f"{round(value):,}"))
    prior = _number(mining.get("prior"))
    if prior is not None:
        estimated = mining.get("prior_estimated")
        facts.append(("Class prior", f"{prior:.3f}" + (" (estimated)" if estimated is True else "")))
    recall = held_out_recall_text(mining)
    if recall is not None:
        facts.append(("Held-out recall", recall))
    dropped = _number(mining.get("dropped_for_memory"))
    if dropped:
        facts.append(("Left out (memory)", f"{round(dropped):,}"))
    return facts
