"""The job's report: what the pipeline measured, written as ``report.json`` and rendered as ``report.html``.

:func:`build_report` turns the stages' records into the report dict; :func:`quality_gate` computes the gate once
(``max_accuracy_drop`` and the drop both in percentage points); :func:`write_report` writes both files atomically.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.options import JobOptions
from storage.files import atomic_write_text

if TYPE_CHECKING:
    from service.pipeline.stages import Distilled, Exported, Inputs, Mined

__all__ = ["REPORT_FORMAT", "build_report", "quality_gate", "write_report"]

REPORT_FORMAT = 1
_PACKAGES = ("condense", "torch", "torchvision", "onnx", "onnxruntime", "faiss-cpu", "numpy")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def quality_gate(max_drop_points: float | None, drop_points: float | None) -> dict[str, Any] | None:
    """The gate's verdict (None without ``max_accuracy_drop``): passed when the drop is within the allowed points."""
    if max_drop_points is None:
        return None
    passed = drop_points is not None and drop_points <= max_drop_points + 1e-9
    reason = (
        "no held-out accuracy to check"
        if drop_points is None
        else f"accuracy drop {drop_points:.2f} points; allowed {max_drop_points:.2f}"
    )
    return {"max_accuracy_drop": max_drop_points, "accuracy_drop": drop_points, "passed": passed, "reason": reason}


def build_report(
    options: JobOptions,
    inputs: Inputs,
    mined: Mined,
    distilled: Distilled,
    exported: Exported,
    stage_seconds: dict[str, float],
) -> dict[str, Any]:
    """The report (see docs/architecture.md for each field)."""
    evaluation = exported.evaluation
    teacher_accuracy, student_accuracy = evaluation.teacher_accuracy, evaluation.student_accuracy
    accuracy_drop = (
        None if teacher_accuracy is None or student_accuracy is None else (teacher_accuracy - student_accuracy) * 100
    )
    gate = quality_gate(options.max_accuracy_drop, accuracy_drop)
    class_names = inputs.positives.class_names
    per_class = [
        {
            "class": name,
            "count": evaluation.class_counts[k],
            "teacher_accuracy": evaluation.per_class_teacher_accuracy[k],
            "student_accuracy": evaluation.per_class_student_accuracy[k],
        }
        for k, name in enumerate(class_names)
    ]
    evaluated_on = "held-out positives" if distilled.validation is not None else "training positives"
    summary = {
        "student": options.student,
        "teacher_accuracy": teacher_accuracy,
        "student_accuracy": student_accuracy,
        "agreement": evaluation.agreement,
        "accuracy_drop_points": accuracy_drop,
        "evaluated_on": evaluated_on,
        "student_parameters": exported.student_profile["parameters"],
        "student_macs": exported.student_profile["macs"],
        "teacher_macs": distilled.teacher_macs,
        "mined": len(mined.ids),
        "gate": gate,
    }
    result = distilled.result
    pool = inputs.pool
    return {
        "format": REPORT_FORMAT,
        "job": {"student": options.student, "options": options.to_dict()},
        "summary": summary,
        "teacher": {**exported.teacher_profile, "accuracy": teacher_accuracy},
        "student": {**exported.student_profile, "accuracy": student_accuracy, "agreement": evaluation.agreement},
        "evaluation": {
            "images": evaluation.num_samples,
            "on": evaluated_on,
            "class_names": class_names,
            "per_class": per_class,
        },
        "gate": gate,
        "mining": {**mined.report, "dropped_for_memory": mined.dropped_for_memory},
        "distillation": {
            "history": [record.__dict__ for record in result.history] if result.history else [],
            "best_epoch": result.best_epoch,
            "stopped_reason": result.stopped_reason,
            "resumed_from_step": result.resumed_from_step,
            "class_weights": result.class_weights,
            "transfer_set": {"positives": len(inputs.trainable), "mined": len(mined.ids)},
            "config": distilled.config.to_dict(),
        },
        "stages_s": dict(stage_seconds),
        "manifest": {
            "seed": options.seed,
            "teacher_sha256": inputs.teacher.file_sha256,
            "positives_sha256": inputs.positives.source_hash,
            "pool": {"name": pool.name, "version": pool.version, "embedder": pool.manifest.embedder_fingerprint},
            "mined_ids": [int(i) for i in mined.ids],
            "packages": _versions(),
        },
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_report(out_dir: Path, report: dict[str, Any], html: str) -> None:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (each atomically)."""
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    atomic_write_text(out_dir / "report.html", html)
