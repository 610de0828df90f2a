"""The new-job form: its inputs, their conversion to the API's ``options`` object, and the form page."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from flask import render_template

from service.context import service_context
from service.errors import ServiceError
from service.jobs.service import FILE_FIELDS
from service.options import QUANTIZE_MODES, SELECTIONS, STUDENT_FAMILIES
from service.web.job_inputs import KEPT_SUFFIX, form_terms

__all__ = ["FIELD_LABELS", "FILE_FIELDS", "OPTION_FIELDS", "options_from_form", "render_form", "values_from_options"]

logger = logging.getLogger(__name__)

OPTION_FIELDS: tuple[str, ...] = (
    "student",
    "pool",
    "budget_ratio",
    "time_budget_min",
    "max_accuracy_drop",
    "seed",
    "input_shape",
    "epochs",
    "mean",
    "std",
    "holdout_fraction",
    "selection",
    "class_names",
    "latency_ratio",
    "latency_ms",
    "latency_batch",
    "quantize",
    "quantize_max_loss",
    "search",
)
"""The form's option inputs, each named like its :class:`~service.options.JobOptions` field."""

FIELD_LABELS: dict[str, str] = {
    "teacher": "Teacher model",
    "positives": "Positives archive",
    "test": "Test set (optional)",
    "input_shape": "Input shape",
    "student": "Student family",
    "pool": "Pool",
    "budget_ratio": "Budget ratio",
    "time_budget_min": "Time budget (minutes)",
    "max_accuracy_drop": "Largest accuracy drop",
    "seed": "Seed",
    "epochs": "Epochs",
    "mean": "Mean",
    "std": "Standard deviation",
    "holdout_fraction": "Hold-out fraction",
    "selection": "Selection of mined images",
    "class_names": "Class names (no positives)",
    "latency_ratio": "Latency ratio",
    "latency_ms": "Latency (ms)",
    "latency_batch": "Latency batch size",
    "quantize": "Quantize",
    "quantize_max_loss": "Largest int8 loss",
    "search": "Search binary widths",
}
"""The label of each form input (also used in the error summary)."""

_FAMILY_HINTS = {
    "ghost": "Ghost modules, cheap feature maps (GhostNet)",
    "binary": "1-bit weights and activations (BBG)",
    "adder": "additions instead of multiplications (AdderNet)",
    "slim": "plain ResNet / VGG sized for CPU speed",
    "qnn4": "4-bit weights and activations, widened (LSQ)",
    "qnn2": "2-bit weights and activations, widened (LSQ)",
    "auto": "the default: slim or ghost, whichever meets the latency budget best",
}
_SELECTION_HINTS = {
    "default": "PU score in class quotas, at least a floor",
    "pu": "every PU member (PU-s1)",
    "pu-half": "the better half of PU (PU-s2)",
    "random": "a random draw of the same size",
    "dfnd": "the teacher's most confident items, no labels",
}
_STUDENT_OPTION_INPUTS: tuple[tuple[str, str, str, str], ...] = (
    ("class_names", "Without positives: the teacher's output names in order, comma-separated.", "text",
     'autocomplete="off" spellcheck="false"'),
    ("latency_ratio", "The student at most this fraction of the teacher's ONNX Runtime latency (ghost, slim or "
     "auto), in (0, 1]; empty: sized by MACs.", "number", 'min="0" max="1" step="any"'),
    ("latency_ms", "Or at most this many milliseconds per batch.", "number", 'min="0" step="any"'),
    ("latency_batch", "Batch size of the latency budget; empty: 1 and 32 (1 for milliseconds).", "number",
     'min="1" max="1024" step="1"'),
    ("quantize", "int8: also hand back student.int8.onnx, verified against the float student.", "select", ""),
    ("quantize_max_loss", "Keep the float file when int8 loses more than this many points (default 0.5).",
     "number", 'min="0" max="100" step="any"'),
    ("search", "Binary students: search the per-stage widths before distilling (takes longer).", "checkbox", ""),
)  # fmt: skip
_ADVANCED_FIELDS = ("epochs", "mean", "std", "holdout_fraction")
_STUDENT_OPTION_FIELDS = ("selection", *(name for name, *_ in _STUDENT_OPTION_INPUTS))
_FLOAT_FIELDS = frozenset(
    {"budget_ratio", "time_budget_min", "max_accuracy_drop", "holdout_fraction", "latency_ratio", "latency_ms",
     "quantize_max_loss"}
)  # fmt: skip
_INT_FIELDS = frozenset({"seed", "epochs", "latency_batch"})
_LIST_FIELDS: dict[str, type] = {"input_shape": int, "mean": float, "std": float}
_LIST_SPLIT_RE = re.compile(r"[\s,;x×]+")


def _parse_number(text: str, kind: type) -> int | float | str:
    """``text`` as a number of ``kind``; left as text when it is none, so :class:`JobOptions` reports the field."""
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        pass
    if kind is int:
        try:
            return float(text)  # "3.0" is accepted as 3 by JobOptions, "3.5" is reported as not an integer
        except ValueError:
            pass
    return text


def _parse_list(text: str, kind: type) -> list[int | float] | str:
    """``"1, 28, 28"``, ``"1x28x28"`` or ``"[0.5]"`` as a list of ``kind``; the text itself when not a list."""
    parts = [part for part in _LIST_SPLIT_RE.split(text.strip().strip("[]()")) if part]
    values = [_parse_number(part, kind) for part in parts]
    if not values or any(isinstance(value, str) for value in values):
        return text
    return values  # type: ignore[return-value]


def options_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """The API's ``options`` object from the new-job form's text inputs (empty inputs: the option's default).

    Numbers and lists (``input_shape`` as ``"1, 28, 28"`` or ``"1x28x28"``; ``mean``/``std`` as ``"0.5"`` or
    ``"0.5, 0.5, 0.5"``) are converted; text that does not convert is passed on unchanged, so that
    :meth:`JobOptions.from_dict` -- the API's own check -- reports the field with its reason.
    """
    if not isinstance(form, Mapping):
        raise TypeError(f"form must be a mapping of input names to strings, got {type(form).__name__}")
    options: dict[str, Any] = {}
    for name in OPTION_FIELDS:
        raw = form.get(name)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise TypeError(f"form field {name!r} must be a string, got {type(raw).__name__}")
        text = raw.strip()
        if not text:
            continue
        if name == "search":  # a checkbox: sent ("on") when ticked
            options[name] = text.lower() in ("on", "true", "1", "yes")
        elif name == "class_names":
            options[name] = [part.strip() for part in text.split(",")]
        elif name in _FLOAT_FIELDS:
            options[name] = _parse_number(text, float)
        elif name in _INT_FIELDS:
            options[name] = _parse_number(text, int)
        elif name in _LIST_FIELDS:
            options[name] = _parse_list(text, _LIST_FIELDS[name])
        else:
            options[name] = text
    return options


def _field_errors(fields: Sequence[Mapping[str, str]]) -> tuple[dict[str, list[str]], list[str]]:
    """The API's ``fields`` list split into reasons per form input and the ones no input shows."""
    by_input: dict[str, list[str]] = {}
    general: list[str] = []
    inputs = set(OPTION_FIELDS) | set(FILE_FIELDS)
    for item in fields:
        name = str(item.get("field", ""))
        reason = form_terms(str(item.get("reason", "")), FIELD_LABELS)
        short = name.removeprefix("options.").removesuffix(KEPT_SUFFIX)
        if short in inputs:
            if reason not in by_input.get(short, []):
                by_input.setdefault(short, []).append(reason)
        else:
            general.append(f"{FIELD_LABELS.get(short, short)}: {reason}" if name else reason)
    return by_input, general


def _pools() -> list[dict[str, Any]]:
    """The pools a job can mine (``PoolStore.list``), as ``{"name", "count"}``; empty when none can be listed."""
    try:
        from pu_mining.pool import PoolStore
    except ImportError:
        return []
    try:
        manifests = PoolStore(service_context().jobs.blobs).list()
    except Exception as error:  # the form still works: the pool is typed in instead
        logger.warning("could not list the pools: %s", error)
        return []
    return [{"name": manifest.name, "count": manifest.count} for manifest in manifests]


def values_from_options(options: Mapping[str, Any]) -> dict[str, str]:
    """A job's options as the form's text inputs (``[1, 28, 28]`` -> ``"1, 28, 28"``), for "clone with changes"."""
    values: dict[str, str] = {}
    for name in OPTION_FIELDS:
        value = options.get(name)
        if value is None or value is False:  # an unticked checkbox sends nothing
            continue
        values[name] = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    return values


def render_form(
    values: Mapping[str, str],
    error: ServiceError | None,
    *,
    kept: Mapping[str, Any] | None = None,
    source: Any = None,
) -> str:
    """The form page: ``values`` in the inputs, each refused field's reason once next to it, ``kept`` uploads
    (:mod:`service.web.job_inputs`) attached, ``source`` the job being cloned (its files are used if none is chosen).
    """
    field_errors, general = _field_errors(error.fields if error is not None else [])
    if error is not None and not error.fields:
        general = [form_terms(error.message, FIELD_LABELS)]
    advanced_open = any(field_errors.get(name) or values.get(name) for name in _ADVANCED_FIELDS)
    student_options_open = any(
        field_errors.get(name) or values.get(name) not in (None, "", "default") for name in _STUDENT_OPTION_FIELDS
    )
    return render_template(
        "new_job.html",
        values=values,
        labels=FIELD_LABELS,
        families=STUDENT_FAMILIES,
        family_hints=_FAMILY_HINTS,
        pools=_pools(),
        error=error,
        field_errors=field_errors,
        general_errors=general,
        advanced_open=advanced_open,
        student_options_open=student_options_open,
        selections=SELECTIONS,
        selection_hints=_SELECTION_HINTS,
        quantize_modes=QUANTIZE_MODES,
        student_option_inputs=_STUDENT_OPTION_INPUTS,
        kept=kept or {},
        kept_suffix=KEPT_SUFFIX,
        source=source,
    )
