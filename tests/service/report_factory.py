"""Real :class:`~service.pipeline.report.Report` objects for tests, built from per-image outcomes.

The figures go through the same code as a job's (:meth:`LabelledSet.measure`, :func:`quality_gate`), so a test of
a reader (HTML report, job page, CLI) sees exactly the layout the pipeline writes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compression.metrics.intervals import proportion
from service.pipeline.report import MEANINGS, AgreementSet, Evaluation, LabelledSet, Report, Summary, quality_gate

CLASSES = ["T-shirt/top", "Trouser"]


def labelled(kind: Any, images: int, teacher_right: int, student_right: int) -> LabelledSet:
    """A set of ``images`` where the teacher is right on the first ``teacher_right`` and the student on the first
    ``student_right`` (so the student's errors are a superset of the teacher's, or the other way round)."""
    order = np.arange(images)
    return LabelledSet.measure(kind, order < teacher_right, order < student_right, order % len(CLASSES), CLASSES)


def make_evaluation(
    *, test: tuple[int, int, int] | None = (2000, 1900, 1860), held_out: tuple[int, int, int] | None = (60, 57, 56),
    pool: tuple[int, int] | None = (1200, 1152),
) -> Evaluation:  # fmt: skip
    """Test set, held-out positives and held-back pool as ``(images, teacher right, student right)`` and
    ``(images, agreements)``; None leaves a set out."""
    return Evaluation(
        CLASSES,
        None if test is None else labelled("test", *test),
        None if held_out is None else labelled("held_out_positives", *held_out),
        None if pool is None else AgreementSet("held_back_pool", MEANINGS["held_back_pool"], pool[0],
                                               proportion(pool[1], pool[0])),
    )  # fmt: skip


def make_report(evaluation: Evaluation | None = None, max_accuracy_drop: float | None = 5.0) -> Report:
    """A complete report of a Ghost job with the given evaluation (default :func:`make_evaluation`)."""
    evaluation = make_evaluation() if evaluation is None else evaluation
    gate = quality_gate(max_accuracy_drop, evaluation)
    headline = evaluation.headline  # None: the no-labels mode without a test set
    edges = [-4.0 + 0.2 * i for i in range(41)]
    counts = [float(round(200 * math.exp(-((e + 0.1 - 0.5) ** 2)))) for e in edges[:-1]]
    history = [
        {"epoch": 0, "train_loss": None, "lr": 0.1, "val_accuracy": 0.2, "val_agreement": 0.2, "epoch_s": 0.0,
         "elapsed_s": 0.0},
    ] + [
        {"epoch": e, "train_loss": 1.5 / e, "lr": 0.1, "val_accuracy": 0.95 - 0.4 / e, "val_agreement": 0.97 - 0.4 / e,
         "epoch_s": 10.0, "elapsed_s": 10.0 * e}
        for e in range(1, 11)
    ]  # fmt: skip
    agreement = None if evaluation.pool is None else evaluation.pool.agreement
    summary = Summary(
        "ghost", headline and headline.kind, headline.images if headline else 0, headline and headline.teacher,
        headline and headline.student, headline and headline.drop, agreement,
        258401, 28100000, 123057280, 1200, 0 if evaluation.pool is None else evaluation.pool.images, gate,
    )  # fmt: skip
    return Report(
        job={"student": "ghost", "options": {"budget_ratio": 0.25, "time_budget_min": 20, "seed": 0,
                                             "max_accuracy_drop": max_accuracy_drop}},
        summary=summary,
        teacher={
            "accuracy": headline and headline.teacher.value, "parameters": 1072741, "macs": 123057280,
            "multiplications": 123057280, "additions": 122000000, "weight_bytes": 4300000,
            "latency": {"1": {"median_ms": 2.1, "p90_ms": 2.4}, "32": {"median_ms": 40.0}}, "format": "torchscript",
        },
        student={
            "accuracy": headline and headline.student.value,
            "agreement": None if agreement is None else agreement.value,
            "parameters": 258401, "macs": 28100000, "multiplications": 28100000, "additions": 27900000,
            "binary_ops": 0, "weight_bytes": 1055000, "onnx_bytes": 1100000,
            "latency": {"1": {"median_ms": 0.95}, "32": {"median_ms": 21.0}},
        },
        evaluation=evaluation,
        gate=gate,
        mining={
            "pool": "demo", "pool_version": 1, "pool_items": 5000, "candidates": 3000, "selected": 1200,
            "prior": 0.4, "prior_estimated": True, "holdout": 12, "holdout_recall": 0.83,
            "holdout_recall_interval": [0.552, 0.953],
            "duplicates_of_positives": 1, "duplicates_within_selection": 3, "min_selection": 625, "filled": 140,
            "score_histogram": {"edges": edges, "counts": counts},
            "class_histogram": {"T-shirt/top": 300, "Trouser": 250},
            "seconds": {"candidates": 1.2, "train": 30.5}, "dropped_for_memory": 0,
        },
        distillation={
            "history": history, "best_epoch": 9, "stopped_reason": "completed",
            "transfer_set": {"positives": 240, "mined": 1200},
        },
        stages_s={"load": 1.0, "mining": 40.0, "distill": 300.0, "evaluate": 2.0, "export": 5.0, "report": 0.5},
        manifest={
            "seed": 0, "teacher_sha256": "ab" * 32, "positives_sha256": "cd" * 32,
            "pool": {"name": "demo", "version": 1}, "mined_ids": list(range(1200)),
            "held_back_ids": list(range(1200, 2400)), "packages": {"torch": "2.14.1", "numpy": "2.1.0"},
        },
    )  # fmt: skip
