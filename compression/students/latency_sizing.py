"""Size a student by its measured ONNX Runtime latency instead of its multiply-add count.

MACs predict CPU latency badly: operator count, layout changes and channel alignment matter as much (a quarter-MAC
Ghost student ran only 1.5x faster than its teacher at batch 32, a plain ResNet of the same MACs 3.5x; see
docs/benchmarks.md). So candidates are exported to ONNX and timed in ONNX Runtime on this machine, side by side with
the teacher when the budget is a ratio (:func:`compression.metrics.latency.measure_side_by_side`), and the student
with the best expected accuracy that fits is kept.

Expected accuracy is not measured here (that needs training): it is ranked by *effective MACs*, the candidate's
multiply-adds, times the Ghost ratio ``s = 2`` for Ghost students, whose paper reports the accuracy of the plain
network with ``s`` times their MACs (GhostNet, arXiv:1911.11907, tables 4-5). Candidates are tried in decreasing
effective MACs with a bisection that assumes latency grows with MACs, which holds within a family's candidate
list up to measurement noise; every measurement is listed in the result.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.export.onnx import export_onnx
from compression.metrics import count_ops
from compression.metrics.latency import measure_side_by_side
from compression.students._registry import resolve_student

__all__ = [
    "DEFAULT_LATENCY_RATIO",
    "Candidate",
    "LatencyBudget",
    "LatencyFit",
    "auto_student",
    "candidates_for",
    "size_by_latency",
]

#: Families ``auto`` considers for CPU latency. Binary students run as float convolutions in ONNX Runtime (no
#: speed-up) and adder students have no ONNX operator (an l1 distance costs several ops): neither is picked.
AUTO_FAMILIES = ("slim", "ghost")
_GHOST_RATIO = 2
#: The default for "at least 2x faster than the teacher at batch 1 and 32": the search keeps the largest candidate
#: under the limit, so the default leaves a margin for measurement noise on a loaded machine (a student fitted at
#: 0.43 of the teacher's batch-32 latency measured 0.54 in a later side-by-side run; docs/benchmarks.md).
DEFAULT_LATENCY_RATIO = 0.4
_WIDTHS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
_SLIM_WIDTHS = (0.5, 1.0, 2.0, 3.0, 4.0)  # stage widths stay multiples of 16


@dataclass(frozen=True)
class LatencyBudget:
    """At most ``ratio`` times the teacher's latency, or at most ``ms`` milliseconds per batch, at every batch size.

    Exactly one of ``ratio`` (in (0, 1]) and ``ms`` (> 0) is given. ``threads`` is ONNX Runtime's intra-op thread
    count for the measurements (1: stable figures on a shared machine; None: one thread per core).
    """

    ratio: float | None = None
    ms: float | None = None
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int | None = 1
    rounds: int = 5
    statistic: str = "min"  # "min" (robust to other work on the machine) or "median"

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.ms is None):
            raise ValueError("give exactly one of latency ratio and latency ms")
        if self.ratio is not None and (isinstance(self.ratio, bool) or not 0 < float(self.ratio) <= 1):
            raise ValueError(f"latency ratio must be in (0, 1], got {self.ratio!r}")
        if self.ms is not None and (isinstance(self.ms, bool) or not float(self.ms) > 0):
            raise ValueError(f"latency ms must be > 0, got {self.ms!r}")
        if self.statistic not in ("min", "median"):
            raise ValueError(f"latency statistic must be 'min' or 'median', got {self.statistic!r}")
        sizes = tuple(self.batch_sizes)
        if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
            raise ValueError(f"batch sizes must be positive ints, got {self.batch_sizes!r}")
        object.__setattr__(self, "batch_sizes", sizes)

    def describe(self) -> str:
        limit = f"{self.ratio:g} x the teacher's latency" if self.ratio is not None else f"{self.ms:g} ms"
        return f"{limit} at batch {' and '.join(map(str, self.batch_sizes))} (ONNX Runtime, CPU)"


@dataclass(frozen=True)
class Candidate:
    """One student configuration: a registered architecture and its constructor arguments."""

    name: str
    kwargs: tuple[tuple[str, Any], ...]
    macs: int
    effective_macs: int

    def build(self, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        info = resolve_student(self.name)
        return info.constructor(num_classes=num_classes, input_shape=input_shape, **dict(self.kwargs))

    @property
    def label(self) -> str:
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in self.kwargs) + ")"


@dataclass
class LatencyFit:
    """The chosen candidate, every measurement taken, and a sentence for the report."""

    candidate: Candidate | None
    budget: LatencyBudget
    measured: list[dict[str, Any]] = field(default_factory=list)  # label, macs, per batch: ms (and ratio)
    reason: str = ""

    def build(self, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        if self.candidate is None:
            raise ValueError(f"no student fits the latency budget: {self.reason}")
        return self.candidate.build(num_classes, input_shape)

    def as_dict(self) -> dict[str, Any]:
        return {
            "student": None if self.candidate is None else self.candidate.name,
            "kwargs": {} if self.candidate is None else dict(self.candidate.kwargs),
            "budget": asdict(self.budget),
            "measured": self.measured,
            "reason": self.reason,
        }


def candidates_for(family_or_name: str, num_classes: int, input_shape: tuple[int, int, int]) -> list[Candidate]:
    """The search space, sorted by effective MACs (ascending).

    ``slim``: residual and VGG forms, 1-3 blocks per stage, stem stride 1 or 2, widths 0.5-4. Any other family or
    architecture name: its default depth at widths 0.5-4.
    """
    configs: list[tuple[str, dict[str, Any]]] = []
    if family_or_name.strip().lower() == "slim":
        for name in ("slim_resnet", "slim_vgg"):
            for depth in (1, 2, 3):
                for stem_stride in (1, 2):
                    configs += [(name, {"width": w, "depth": depth, "stem_stride": stem_stride}) for w in _SLIM_WIDTHS]
    else:
        name = resolve_student(family_or_name).name
        configs = [(name, {"width": w}) for w in _WIDTHS]
    found: dict[tuple[str, int], Candidate] = {}
    for name, kwargs in configs:
        info = resolve_student(name)
        model = info.constructor(num_classes=num_classes, input_shape=input_shape, **kwargs)
        macs = count_ops(model, input_shape).total.macs
        effective = macs * (_GHOST_RATIO if info.family == "ghost" else 1)
        candidate = Candidate(name, tuple(sorted(kwargs.items())), macs, effective)
        key = (name, macs)  # widths that round to the same channels build the same network
        if key not in found or len(str(candidate.kwargs)) < len(str(found[key].kwargs)):
            found[key] = candidate
    return sorted(found.values(), key=lambda c: (c.effective_macs, c.label))


class _LatencyCache:
    """Measurements keyed by candidate, input, batch and threads; optionally kept in a JSON file."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self.entries: dict[str, dict[str, float]] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
            tmp.replace(self.path)


def size_by_latency(
    family: str,
    teacher: nn.Module | str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    num_classes: int,
    budget: LatencyBudget,
    *,
    cache_path: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> LatencyFit:
    """The candidate of ``family`` (see :func:`candidates_for`) with the most effective MACs within ``budget``.

    ``teacher`` is an ``nn.Module`` (exported here) or an ONNX file whose single input takes ``(N, *input_shape)``;
    it is only needed for ratio budgets. Candidates are exported without verification (they are only timed) to
    ``workdir`` (a temporary folder by default). ``cache_path``: a JSON file of earlier measurements on this
    machine (the key includes the teacher file's size for ratio budgets).
    """
    if not isinstance(budget, LatencyBudget):
        raise TypeError(f"budget must be a LatencyBudget, got {type(budget).__name__}")
    candidates = candidates_for(family, num_classes, input_shape)
    cache = _LatencyCache(cache_path)
    with tempfile.TemporaryDirectory(prefix="condense-latency-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        teacher_path = _teacher_onnx(teacher, input_shape, folder) if budget.ratio is not None else None
        teacher_key = "" if teacher_path is None else f"teacher{teacher_path.stat().st_size}"
        measured: dict[str, dict[str, Any]] = {}

        def fits(candidate: Candidate) -> bool:
            row = measured.get(candidate.label)
            if row is None:
                row = _measure(candidate, num_classes, input_shape, budget, teacher_path, teacher_key, folder, cache)
                measured[candidate.label] = row
            return bool(row["fits"])

        low, high, best = 0, len(candidates) - 1, None
        while low <= high:  # the largest index that fits, assuming latency grows along the list
            middle = (low + high) // 2
            if fits(candidates[middle]):
                best, low = middle, middle + 1
            else:
                high = middle - 1
        cache.save()
    chosen = None if best is None else candidates[best]
    rows = sorted(measured.values(), key=lambda r: r["effective_macs"])
    if chosen is None:
        reason = f"no {family} student fits {budget.describe()}; the smallest measured: {rows[0] if rows else None}"
    else:
        row = measured[chosen.label]
        reason = (
            f"{chosen.label}: the {family} candidate with the most effective MACs ({chosen.effective_macs / 1e6:.1f}M) "
            f"within {budget.describe()}; measured {_describe_row(row)} ({len(measured)} of {len(candidates)} "
            "candidates timed)"
        )
    return LatencyFit(chosen, budget, rows, reason)


def auto_student(
    teacher: nn.Module | str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    num_classes: int,
    budget: LatencyBudget,
    *,
    families: Sequence[str] = AUTO_FAMILIES,
    cache_path: str | os.PathLike[str] | None = None,
) -> LatencyFit:
    """Fit every family in ``families`` to ``budget``; keep the fit with the most effective MACs (see module doc).

    The reason string names every family's result. Adder and binary families are refused: they bring no CPU speed-up
    in ONNX Runtime.
    """
    refused = [f for f in families if f in ("adder", "binary")]
    if refused:
        raise ValueError(f"auto cannot choose {', '.join(refused)} for CPU latency (no speed-up in ONNX Runtime)")
    fits = [size_by_latency(f, teacher, input_shape, num_classes, budget, cache_path=cache_path) for f in families]
    usable = [(f, fit) for f, fit in zip(families, fits, strict=True) if fit.candidate is not None]
    summary = "; ".join(
        f"{f}: {fit.candidate.label if fit.candidate else 'none fits'}"
        + (f" ({fit.candidate.effective_macs / 1e6:.1f}M effective MACs)" if fit.candidate else "")
        for f, fit in zip(families, fits, strict=True)
    )
    if not usable:
        return LatencyFit(None, budget, [r for fit in fits for r in fit.measured], f"no family fits: {summary}")
    family, best = max(usable, key=lambda item: item[1].candidate.effective_macs)  # type: ignore[union-attr]
    best.reason = f"auto chose {family} (most effective MACs, i.e. best expected accuracy, within budget): " + (
        f"{summary}. {best.reason}"
    )
    return best


def _teacher_onnx(teacher: nn.Module | str | os.PathLike[str], input_shape: tuple[int, int, int], folder: Path) -> Path:
    if isinstance(teacher, nn.Module):
        path = folder / "teacher.onnx"
        export_onnx(teacher, path, torch.randn(2, *input_shape), verify=False)
        return path
    if isinstance(teacher, str | os.PathLike) and Path(teacher).is_file():
        return Path(teacher)
    raise TypeError("teacher must be an nn.Module or the path of an existing ONNX file")


def _measure(
    candidate: Candidate,
    num_classes: int,
    input_shape: tuple[int, int, int],
    budget: LatencyBudget,
    teacher_path: Path | None,
    teacher_key: str,
    folder: Path,
    cache: _LatencyCache,
) -> dict[str, Any]:
    row: dict[str, Any] = {"label": candidate.label, "macs": candidate.macs, "effective_macs": candidate.effective_macs}
    path: Path | None = None
    fits = True
    for batch in budget.batch_sizes:
        key = (
            f"{candidate.label}|{input_shape}|{num_classes}|b{batch}|t{budget.threads}|{budget.statistic}|{teacher_key}"
        )
        entry = cache.entries.get(key)
        if entry is None:
            if path is None:
                path = folder / f"candidate-{abs(hash(candidate.label))}.onnx"
                model = candidate.build(num_classes, input_shape)
                export_onnx(model, path, torch.randn(2, *input_shape), verify=False)
            files = [path] if teacher_path is None else [path, teacher_path]
            repeats = 20 if batch < 8 else 4
            times = measure_side_by_side(
                files, input_shape, batch, budget.rounds, repeats, intra_op_num_threads=budget.threads
            )
            pick = "min_ms" if budget.statistic == "min" else "median_ms"
            entry = {"ms": getattr(times[0], pick), "median_ms": times[0].median_ms}
            if teacher_path is not None:
                entry |= {"teacher_ms": getattr(times[1], pick), "teacher_median_ms": times[1].median_ms}
                entry["ratio"] = entry["ms"] / entry["teacher_ms"]
            cache.entries[key] = entry
        row[f"b{batch}"] = entry
        if budget.ratio is not None:
            fits = fits and entry["ratio"] <= budget.ratio
        else:
            fits = fits and entry["ms"] <= float(budget.ms)  # type: ignore[arg-type]
    row["fits"] = fits
    return row


def _describe_row(row: dict[str, Any]) -> str:
    parts = []
    for key, entry in row.items():
        if key.startswith("b") and isinstance(entry, dict):
            text = f"{entry['ms']:.3f} ms at batch {key[1:]}"
            if "ratio" in entry:
                text += f" ({entry['ratio']:.2f} x the teacher's {entry['teacher_ms']:.3f} ms)"
            parts.append(text)
    return ", ".join(parts)
