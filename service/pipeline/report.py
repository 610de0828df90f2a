"""The job's report: one typed model, written as ``report.json`` and read by everything that shows a job's results.

:class:`Report` is what the pipeline writes (:func:`build_report`, :func:`write_report`) and what the HTML report,
the job page, the CLI summary and the quality gate read (:func:`read_report`, :meth:`Report.from_dict`). Every
accuracy and agreement in it is a :class:`~compression.metrics.intervals.Proportion` (image count, value, 95 %
Wilson interval, ``rough`` under :data:`~compression.metrics.intervals.ROUGH_BELOW` images) and every
teacher-minus-student difference a :class:`~compression.metrics.intervals.PairedDifference` (Newcombe's paired
interval). Accuracies are fractions in [0, 1]; drops and the gate's limit are percentage points.

The quality gate is computed once, here (:func:`quality_gate`); the rule is in the README ("The quality gate").
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from compression.metrics.intervals import (
    GateOutcome,
    PairedDifference,
    Proportion,
    decide_drop,
    disagreement_drop_bound,
    paired_difference_interval,
)
from service.options import JobOptions
from storage.files import atomic_write_text

if TYPE_CHECKING:
    from service.pipeline.stages import Distilled, Exported, Inputs, Mined

__all__ = [
    "GATE_CONFIDENCE_EACH",
    "REPORT_FORMAT",
    "AgreementSet",
    "ClassFigures",
    "Evaluation",
    "Gate",
    "LabelledSet",
    "Report",
    "Summary",
    "build_report",
    "quality_gate",
    "read_report",
    "report_json",
    "write_report",
]

REPORT_FORMAT = 2
GATE_CONFIDENCE_EACH = 0.95
"""Without a test set the gate takes the larger of the available 95 % upper bounds: it holds whenever one does."""
_PACKAGES = ("condense", "torch", "torchvision", "onnx", "onnxruntime", "faiss-cpu", "numpy")

LabelledKind = Literal["test", "held_out_positives", "training_positives"]
MEANINGS: dict[str, str] = {
    "test": "Accuracy on the test set you uploaded: labelled images never used for training or mining. "
    "This is the headline figure.",
    "held_out_positives": "Accuracy on the labelled positives held out from training and mining "
    "(holdout_fraction of each class).",
    "training_positives": "Accuracy on the positives the student was trained on (no hold-out was asked for): "
    "it flatters the student and is not used by the quality gate.",
    "held_back_pool": "Agreement with the teacher (same top-1 class) on pool images mining selected but held back "
    "from training. It needs no labels; the accuracy drop is at most the disagreement rate.",
}


def _opt(data: Any, cls: Any) -> Any:
    return None if data is None else cls.from_dict(data)


@dataclass(frozen=True)
class ClassFigures:
    """Teacher and student accuracy on the images of one true class (None for a class without images)."""

    name: str
    images: int
    teacher: Proportion | None
    student: Proportion | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "images": self.images,
            "teacher": None if self.teacher is None else self.teacher.as_dict(),
            "student": None if self.student is None else self.student.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassFigures:
        return cls(data["name"], data["images"], _opt(data["teacher"], Proportion), _opt(data["student"], Proportion))


@dataclass(frozen=True)
class LabelledSet:
    """Teacher and student on one labelled image set: both accuracies and the paired teacher-minus-student drop."""

    kind: LabelledKind
    meaning: str
    images: int
    teacher: Proportion
    student: Proportion
    drop: PairedDifference
    """Teacher minus student accuracy (a fraction), with Newcombe's paired 95 % interval."""
    per_class: list[ClassFigures] = field(default_factory=list)

    @classmethod
    def measure(
        cls, kind: LabelledKind, teacher_right: np.ndarray, student_right: np.ndarray, labels: np.ndarray, names: list
    ) -> LabelledSet:
        """The figures from per-image correctness (booleans) and the true labels of the same images."""
        from compression.metrics.intervals import proportion

        per_class = []
        for k, name in enumerate(names):
            mask = labels == k
            count = int(mask.sum())
            per_class.append(
                ClassFigures(
                    str(name),
                    count,
                    proportion(int(teacher_right[mask].sum()), count) if count else None,
                    proportion(int(student_right[mask].sum()), count) if count else None,
                )
            )
        return cls(
            kind,
            MEANINGS[kind],
            len(labels),
            proportion(int(teacher_right.sum()), len(labels)),
            proportion(int(student_right.sum()), len(labels)),
            paired_difference_interval(teacher_right, student_right),
            per_class,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "meaning": self.meaning,
            "images": self.images,
            "teacher": self.teacher.as_dict(),
            "student": self.student.as_dict(),
            "drop": self.drop.as_dict(),
            "per_class": [item.to_dict() for item in self.per_class],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelledSet:
        return cls(
            data["kind"],
            data["meaning"],
            data["images"],
            Proportion.from_dict(data["teacher"]),
            Proportion.from_dict(data["student"]),
            PairedDifference.from_dict(data["drop"]),
            [ClassFigures.from_dict(item) for item in data.get("per_class", [])],
        )


@dataclass(frozen=True)
class AgreementSet:
    """The student's agreement with the teacher on unlabelled images it never trained on (held-back pool items)."""

    kind: Literal["held_back_pool"]
    meaning: str
    images: int
    agreement: Proportion

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "meaning": self.meaning,
            "images": self.images,
            "agreement": self.agreement.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgreementSet:
        return cls(data["kind"], data["meaning"], data["images"], Proportion.from_dict(data["agreement"]))


@dataclass(frozen=True)
class Evaluation:
    """Every figure of how good the student is. ``headline`` names the labelled set the summary's accuracies are."""

    class_names: list[str]
    test: LabelledSet | None
    held_out: LabelledSet | None
    pool: AgreementSet | None

    @property
    def headline(self) -> LabelledSet | None:
        """The test set when given, else the held-out (or, without a hold-out, the training) positives."""
        return self.test if self.test is not None else self.held_out

    def to_dict(self) -> dict[str, Any]:
        headline = self.headline
        return {
            "headline": None if headline is None else headline.kind,
            "class_names": list(self.class_names),
            "test": None if self.test is None else self.test.to_dict(),
            "held_out": None if self.held_out is None else self.held_out.to_dict(),
            "pool": None if self.pool is None else self.pool.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(
            list(data["class_names"]),
            _opt(data.get("test"), LabelledSet),
            _opt(data.get("held_out"), LabelledSet),
            _opt(data.get("pool"), AgreementSet),
        )


@dataclass(frozen=True)
class Gate:
    """The quality gate's verdict (see README, "The quality gate"). Drops and the limit are percentage points."""

    outcome: GateOutcome
    max_accuracy_drop: float
    accuracy_drop: float | None
    """The drop's estimate: on the test set, else on the held-out positives (None when neither was measured)."""
    accuracy_drop_high: float | None
    """The upper end the gate tested."""
    images: int
    basis: str
    reason: str

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Gate:
        names = ("outcome", "max_accuracy_drop", "accuracy_drop", "accuracy_drop_high", "images", "basis", "reason")
        return cls(**{name: data[name] for name in names})


@dataclass(frozen=True)
class Summary:
    """The few figures a job's metrics carry (the CLI and the job list show them): the headline ones, flattened."""

    student: str
    evaluated_on: str | None
    images: int
    teacher_accuracy: Proportion | None
    student_accuracy: Proportion | None
    accuracy_drop: PairedDifference | None
    agreement: Proportion | None
    student_parameters: int
    student_macs: int
    teacher_macs: int
    mined: int
    held_back: int
    gate: Gate | None

    def to_dict(self) -> dict[str, Any]:
        def figure(value: Any) -> Any:
            return None if value is None else value.as_dict()

        return {
            "student": self.student,
            "evaluated_on": self.evaluated_on,
            "images": self.images,
            "teacher_accuracy": figure(self.teacher_accuracy),
            "student_accuracy": figure(self.student_accuracy),
            "accuracy_drop": figure(self.accuracy_drop),
            "agreement": figure(self.agreement),
            "student_parameters": self.student_parameters,
            "student_macs": self.student_macs,
            "teacher_macs": self.teacher_macs,
            "mined": self.mined,
            "held_back": self.held_back,
            "gate": None if self.gate is None else self.gate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        return cls(
            data["student"],
            data["evaluated_on"],
            data["images"],
            _opt(data["teacher_accuracy"], Proportion),
            _opt(data["student_accuracy"], Proportion),
            _opt(data["accuracy_drop"], PairedDifference),
            _opt(data["agreement"], Proportion),
            data["student_parameters"],
            data["student_macs"],
            data["teacher_macs"],
            data["mined"],
            data["held_back"],
            _opt(data.get("gate"), Gate),
        )


@dataclass(frozen=True)
class Report:
    """``report.json``: each field is described in docs/architecture.md ("The report")."""

    job: dict[str, Any]
    summary: Summary
    teacher: dict[str, Any]
    student: dict[str, Any]
    evaluation: Evaluation
    gate: Gate | None
    mining: dict[str, Any]
    distillation: dict[str, Any]
    stages_s: dict[str, float]
    manifest: dict[str, Any]
    format: int = REPORT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (what ``report.json`` holds)."""
        return {
            "format": self.format,
            "job": self.job,
            "summary": self.summary.to_dict(),
            "teacher": self.teacher,
            "student": self.student,
            "evaluation": self.evaluation.to_dict(),
            "gate": None if self.gate is None else self.gate.to_dict(),
            "mining": self.mining,
            "distillation": self.distillation,
            "stages_s": self.stages_s,
            "manifest": self.manifest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The report of a ``report.json``; ValueError for another format or a missing field."""
        if not isinstance(data, dict):
            raise TypeError(f"a report must be a JSON object, got {type(data).__name__}")
        if data.get("format") != REPORT_FORMAT:
            raise ValueError(f"report format {data.get('format')!r} is not {REPORT_FORMAT}")
        try:
            return cls(
                job=data["job"],
                summary=Summary.from_dict(data["summary"]),
                teacher=data["teacher"],
                student=data["student"],
                evaluation=Evaluation.from_dict(data["evaluation"]),
                gate=_opt(data.get("gate"), Gate),
                mining=data["mining"],
                distillation=data["distillation"],
                stages_s=data["stages_s"],
                manifest=data["manifest"],
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a complete report: {type(error).__name__} {error}") from None


def _paired_at(drop: PairedDifference, confidence: float) -> PairedDifference:
    """The same paired table's interval at another confidence."""
    first = [True] * (drop.both_right + drop.first_only) + [False] * (drop.second_only + drop.both_wrong)
    second = [True] * drop.both_right + [False] * drop.first_only + [True] * drop.second_only
    second += [False] * drop.both_wrong
    return paired_difference_interval(np.array(first, dtype=bool), np.array(second, dtype=bool), confidence)


def quality_gate(max_drop_points: float | None, evaluation: Evaluation) -> Gate | None:
    """The gate's verdict (None without ``max_accuracy_drop``), computed from the evaluation's upper bounds.

    - With a test set: the upper end of the teacher-minus-student paired 95 % interval on it.
    - Without: the larger of (a) the upper end of the paired 95 % interval on the held-out positives and (b) the
      95 % upper end of the disagreement rate on the held-back pool images (an upper bound on the drop,
      :func:`~compression.metrics.intervals.disagreement_drop_bound`, valid only where those images stand for the
      task's: mining precision below 1 or a shifted distribution can bias it low, as measured on the benchmark's
      wild pool). The larger bound holds with at least 95 % whenever either one is valid, so a biased pool bound
      cannot pass a student alone. Figures on training positives are never used.

    ``passed`` when that upper end is within the limit, ``failed`` when the drop's estimate and the lower end of
    its interval are both over it, ``undecided`` ("too few images to decide") otherwise.
    """
    if max_drop_points is None:
        return None
    test, held_out, pool = evaluation.test, evaluation.held_out, evaluation.pool
    if test is not None:
        value = None if test.drop.value is None else test.drop.value * 100
        basis = f"test set, {test.images:,} images, 95 % paired interval"
        high = test.drop.high * 100 if test.images else None
        low = test.drop.low * 100 if test.images else None
        decision = decide_drop(max_drop_points, value, high, test.images, basis, drop_low_points=low)
    else:
        bounds: list[tuple[float, int, str]] = []
        estimate = low = None
        if held_out is not None and held_out.kind == "held_out_positives" and held_out.images:
            paired = _paired_at(held_out.drop, GATE_CONFIDENCE_EACH)
            estimate = None if held_out.drop.value is None else held_out.drop.value * 100
            low = paired.low * 100
            bounds.append((paired.high * 100, held_out.images, f"held-out positives, {held_out.images:,} images"))
        if pool is not None and pool.images:
            bound = disagreement_drop_bound(pool.agreement.successes, pool.images, GATE_CONFIDENCE_EACH)
            if bound is not None:
                text = f"disagreement on {pool.images:,} held-back pool images"
                bounds.append((bound * 100, pool.images, text))
        if not bounds:
            basis = "no evaluation images"
            decision = decide_drop(max_drop_points, None, None, 0, basis)
        else:
            high, images, where = max(bounds)
            basis = f"{where}, the larger 95 % upper bound" if len(bounds) > 1 else f"{where}, 95 % upper bound"
            decision = decide_drop(max_drop_points, estimate, high, images, basis, drop_low_points=low)
    return Gate(
        decision.outcome,
        float(max_drop_points),
        decision.drop_points,
        decision.drop_high_points,
        decision.n,
        basis,
        decision.reason,
    )


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_report(
    options: JobOptions,
    inputs: Inputs,
    mined: Mined,
    distilled: Distilled,
    exported: Exported,
    evaluation: Evaluation,
    held_back_ids: np.ndarray,
    stage_seconds: dict[str, float],
) -> Report:
    """The report of one job (see docs/architecture.md for each field); the gate is decided here, once."""
    gate = quality_gate(options.max_accuracy_drop, evaluation)
    headline = evaluation.headline
    summary = Summary(
        student=options.student,
        evaluated_on=None if headline is None else headline.kind,
        images=0 if headline is None else headline.images,
        teacher_accuracy=None if headline is None else headline.teacher,
        student_accuracy=None if headline is None else headline.student,
        accuracy_drop=None if headline is None else headline.drop,
        agreement=None if evaluation.pool is None else evaluation.pool.agreement,
        student_parameters=int(exported.student_profile["parameters"]),
        student_macs=int(exported.student_profile["macs"]),
        teacher_macs=int(distilled.teacher_macs),
        mined=len(mined.ids),
        held_back=len(held_back_ids),
        gate=gate,
    )
    result = distilled.result
    pool = inputs.pool
    teacher_accuracy = None if headline is None else headline.teacher.value
    student_accuracy = None if headline is None else headline.student.value
    agreement = None if evaluation.pool is None else evaluation.pool.agreement.value
    return Report(
        job={"student": options.student, "options": options.to_dict()},
        summary=summary,
        teacher={**exported.teacher_profile, "accuracy": teacher_accuracy},
        student={**exported.student_profile, "accuracy": student_accuracy, "agreement": agreement},
        evaluation=evaluation,
        gate=gate,
        mining={**mined.report, "dropped_for_memory": mined.dropped_for_memory},
        distillation={
            "history": [record.__dict__ for record in result.history] if result.history else [],
            "best_epoch": result.best_epoch,
            "stopped_reason": result.stopped_reason,
            "resumed_from_step": result.resumed_from_step,
            "class_weights": result.class_weights,
            "transfer_set": {"positives": len(inputs.trainable), "mined": len(mined.ids)},
            "config": distilled.config.to_dict(),
        },
        stages_s=dict(stage_seconds),
        manifest={
            "seed": options.seed,
            "teacher_sha256": inputs.teacher.file_sha256,
            "positives_sha256": inputs.positives.source_hash,
            "pool": {"name": pool.name, "version": pool.version, "embedder": pool.manifest.embedder_fingerprint},
            "mined_ids": [int(i) for i in mined.ids],
            "held_back_ids": [int(i) for i in held_back_ids],
            "packages": _versions(),
        },
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def report_json(report: Report) -> str:
    """The text of ``report.json``."""
    return json.dumps(report.to_dict(), indent=1, default=_json_default) + "\n"


def write_report(out_dir: Path, report: Report, html: str) -> None:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (each atomically)."""
    atomic_write_text(out_dir / "report.json", report_json(report))
    atomic_write_text(out_dir / "report.html", html)


def read_report(path: Path) -> Report:
    """The :class:`Report` of a ``report.json`` file."""
    return Report.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
