"""Slim students (CPU-friendly operators) and student sizing by measured ONNX Runtime latency."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from compression import create_student
from compression.export import export_onnx
from compression.students import latency_sizing
from compression.students.latency_sizing import LatencyBudget, auto_student, candidates_for, size_by_latency
from compression.students.slim import CHANNEL_MULTIPLE

INPUT = (1, 28, 28)


@pytest.mark.slow  # exports each student to ONNX
@pytest.mark.parametrize("name", ["slim", "slim_vgg"])
def test_slim_students_use_only_blocked_layout_friendly_operators(name: str, tmp_path) -> None:
    model = create_student(name, num_classes=5, input_shape=INPUT, width=0.75, depth=2)
    assert all(width % CHANNEL_MULTIPLE == 0 for width in model.stage_widths)
    assert model(torch.rand(3, *INPUT)).shape == (3, 5)
    export_onnx(model, tmp_path / "slim.onnx", torch.rand(2, *INPUT))
    ops = {node.op_type for node in onnx.load(str(tmp_path / "slim.onnx")).graph.node}
    assert "Conv" in ops and not ops & {"Concat", "Slice", "Pad", "MaxPool"}
    assert "widths" in model.describe()


def test_slim_rejects_bad_depth() -> None:
    with pytest.raises(ValueError, match="depth"):
        create_student("slim", num_classes=5, input_shape=INPUT, depth=0)


def test_candidates_are_sorted_by_effective_macs_and_ghost_counts_double() -> None:
    slim = candidates_for("slim", 5, INPUT)
    assert [c.effective_macs for c in slim] == sorted(c.effective_macs for c in slim)
    assert len({c.macs for c in slim}) == len(slim) or len(slim) > 20
    ghost = candidates_for("ghost", 5, INPUT)
    assert all(c.effective_macs == 2 * c.macs for c in ghost)


def test_latency_budget_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LatencyBudget()
    with pytest.raises(ValueError, match="exactly one"):
        LatencyBudget(ratio=0.5, ms=2.0)
    with pytest.raises(ValueError, match="ratio"):
        LatencyBudget(ratio=1.5)
    with pytest.raises(ValueError, match="batch"):
        LatencyBudget(ms=1.0, batch_sizes=(0,))


def test_ms_budget_search_measures_caches_and_explains(tmp_path, monkeypatch) -> None:
    exports = []
    real_export = latency_sizing.export_onnx
    monkeypatch.setattr(latency_sizing, "export_onnx", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    cache = tmp_path / "latency.json"
    generous = LatencyBudget(ms=10_000.0, batch_sizes=(1,), rounds=1)
    fit = size_by_latency("ghost", None, INPUT, 5, generous, cache_path=cache)  # type: ignore[arg-type]
    widest = candidates_for("ghost", 5, INPUT)[-1]
    assert fit.candidate == widest and "ghost" in fit.reason and fit.measured
    assert all(row["fits"] for row in fit.measured) and json.loads(cache.read_text())
    measured_exports = len(exports)
    again = size_by_latency("ghost", None, INPUT, 5, generous, cache_path=cache)  # type: ignore[arg-type]
    assert again.candidate == widest and len(exports) == measured_exports  # answered from the cache

    impossible = LatencyBudget(ms=1e-6, batch_sizes=(1,), rounds=1)
    none = size_by_latency("ghost", None, INPUT, 5, impossible, cache_path=cache)  # type: ignore[arg-type]
    assert none.candidate is None and "no ghost student fits" in none.reason
    assert len(exports) == measured_exports + 1  # the cache has the widest; bisection goes down to the narrowest
    with pytest.raises(ValueError, match="no student fits"):
        none.build(5, INPUT)


def test_auto_never_picks_adder_or_binary_for_cpu_latency() -> None:
    with pytest.raises(ValueError, match="adder"):
        auto_student(None, INPUT, 5, LatencyBudget(ms=1.0), families=("slim", "adder"))  # type: ignore[arg-type]


@pytest.mark.slow  # exports two models and times them in ONNX Runtime
def test_compare_latency_reports_every_file_against_the_first(tmp_path) -> None:
    from compression.metrics.side_by_side import compare_latency

    files = {}
    for name, width in (("teacher", 1.0), ("student", 0.5)):
        files[name] = tmp_path / f"{name}.onnx"
        model = create_student("slim_vgg", num_classes=5, input_shape=INPUT, width=width, stem_stride=2)
        export_onnx(model, files[name], torch.rand(2, *INPUT), verify=False)
    report = compare_latency(files, INPUT, batch_sizes=(1, 4), rounds=1)
    assert set(report["rows"]) == {"teacher", "student"} and "cores" in report["machine"]
    assert report["rows"]["teacher"][1]["speedup"] == 1.0
    assert all(cell["min_ms"] <= cell["median_ms"] for row in report["rows"].values() for cell in row.values())
