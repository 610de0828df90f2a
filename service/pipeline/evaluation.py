"""The evaluation stage: how good the student is, measured on images it never trained on, with no extra labels.

Three image sets, each kept out of training:

- the **held-back pool items** (:func:`hold_back_pool_items`): a stratified-by-teacher-class share of the items PU
  mining selected, removed from the transfer set before distillation. They are unlabelled, so they measure the
  student's *agreement* with the teacher, which is what distillation controls, on the task-like images mining
  found; the disagreement rate also bounds the accuracy drop from above;
- the **held-out positives** (``holdout_fraction`` of each class of the labelled positives): teacher and student
  accuracy and their paired difference;
- an optional labelled **test set** the user uploads (same archive format as the positives): when given, its
  figures are the headline.

:func:`evaluate_student` measures them into a :class:`~service.pipeline.report.Evaluation` with counts and
intervals on every figure.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.pipeline.report import MEANINGS, AgreementSet, Evaluation, LabelledSet

if TYPE_CHECKING:
    from service.pipeline.stages import Distilled, Inputs, Mined

__all__ = ["HELD_BACK_MIN", "evaluate_student", "held_back_count", "hold_back_pool_items"]

HELD_BACK_MIN = 1000
"""Held-back pool items wanted at least (where the selection is large enough; see :func:`held_back_count`)."""
_HELD_BACK_SHARE = 0.10
_HELD_BACK_MOST = 1 / 3


def held_back_count(selected: int) -> int:
    """How many of ``selected`` mined items to hold back: 10 %, raised to :data:`HELD_BACK_MIN`, at most a third."""
    if selected < 3:
        return 0
    return min(max(math.ceil(_HELD_BACK_SHARE * selected), HELD_BACK_MIN), int(selected * _HELD_BACK_MOST))


def hold_back_pool_items(mined: Mined, seed: int) -> tuple[Mined, np.ndarray]:
    """``(mined_for_training, held_back_ids)``: pool items mining selected but that are never trained on.

    When the miner held back its own evaluation set (``mined.evaluation_ids``, already outside
    ``mined.ids``), that set is taken as it is. Otherwise a share of the mined items is held back here, stratified
    by teacher class: each class gives the same share of its items (at least one from a class with three or more),
    chosen at random with ``seed``; the rest stays in the transfer set, in its order. Deterministic for a ``seed``.
    """
    ids = np.asarray(mined.ids)
    held_by_miner = np.asarray(mined.evaluation_ids, dtype=np.int64)
    if len(held_by_miner):
        return replace(mined, ids=ids[~np.isin(ids, held_by_miner)]), held_by_miner
    wanted = held_back_count(len(ids))
    if wanted == 0:
        return mined, ids[:0]
    classes = np.asarray(mined.arrays.get("teacher_classes", np.zeros(len(ids), dtype=np.int64)))[: len(ids)]
    if len(classes) != len(ids):
        classes = np.zeros(len(ids), dtype=np.int64)
    generator = np.random.default_rng(seed)
    share = wanted / len(ids)
    chosen: list[np.ndarray] = []
    for k in np.unique(classes):
        members = np.flatnonzero(classes == k)
        take = round(share * len(members))
        if take == 0 and len(members) >= 3:
            take = 1
        chosen.append(generator.choice(members, size=min(take, len(members)), replace=False))
    held = np.zeros(len(ids), dtype=bool)
    held[np.concatenate(chosen)] = True
    return replace(mined, ids=ids[~held], evaluation_ids=ids[held]), ids[held]


def _labelled(kind: Any, student: Any, teacher: Any, images: Any, labels: Any, names: list[str]) -> LabelledSet:
    from compression.distill.evaluate import predict_classes

    truth = labels.numpy()
    student_right = predict_classes(student, images).numpy() == truth
    teacher_right = predict_classes(teacher, images).numpy() == truth
    return LabelledSet.measure(kind, teacher_right, student_right, truth, names)


def evaluate_student(
    inputs: Inputs, distilled: Distilled, held_back_ids: np.ndarray, test_path: Path | None
) -> Evaluation:
    """The student against the teacher on the test set (if any), the held-out positives and the held-back pool."""
    from compression.distill.evaluate import predict_classes
    from compression.metrics.intervals import proportion
    from compression.teachers import adapt_images
    from pu_mining.positives import load_positives

    teacher, student = inputs.teacher, distilled.result.student
    names = list(inputs.positives.class_names)
    test = None
    if test_path is not None:
        test_set = load_positives(test_path, teacher.input_shape, class_names=names)
        if len(test_set.labels) == 0:
            raise ValueError("the test set has no images")
        test = _labelled("test", student, teacher, test_set.images, test_set.labels, names)
    if inputs.held_out is not None and len(inputs.held_out.labels):
        held_out = _labelled(
            "held_out_positives", student, teacher, inputs.held_out.images, inputs.held_out.labels, names
        )
    elif len(inputs.trainable.labels):
        held_out = _labelled(
            "training_positives", student, teacher, inputs.trainable.images, inputs.trainable.labels, names
        )
    else:
        held_out = None  # the no-labels mode: only the agreement on held-back pool items (and a test set, if any)
    pool = None
    if len(held_back_ids):
        images = inputs.pool.image_tensor(held_back_ids)
        if tuple(images.shape[1:]) != tuple(teacher.input_shape):
            images = adapt_images(images, teacher.input_shape)
        agree = int((predict_classes(student, images) == predict_classes(teacher, images)).sum())
        pool = AgreementSet("held_back_pool", MEANINGS["held_back_pool"], len(images), proportion(agree, len(images)))
    return Evaluation(names, test, held_out, pool)
