"""Evaluation of a distilled student against its teacher: accuracy, agreement, per-class figures.

*Agreement* is the share of images on which the student's top-1 class equals the teacher's; it needs no labels,
so it is what an unlabelled transfer set can be monitored with. Accuracies need labels: images whose label is
:data:`~compression.distill.losses.IGNORE_LABEL` (-1) count for agreement only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compression.distill.losses import IGNORE_LABEL

__all__ = ["Evaluation", "evaluate", "evaluate_predictions", "predict_classes", "predict_logits"]

Classifier = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Evaluation:
    """Student and teacher on one labelled (or partly labelled) image set. Accuracies are None without labels."""

    num_samples: int
    num_labelled: int
    student_accuracy: float | None
    teacher_accuracy: float | None
    agreement: float
    """Share of all images where the student's top-1 class equals the teacher's."""
    per_class_student_accuracy: list[float | None]
    """Per true class; None for a class without labelled images."""
    per_class_teacher_accuracy: list[float | None]
    class_counts: list[int]
    """Labelled images per true class."""
    teacher_class_counts: list[int]
    """Images per class predicted by the teacher (all images, labelled or not)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def predict_logits(model: Classifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model``'s logits on ``images`` in batches of ``batch_size``, without gradients.

    An ``nn.Module`` is run in eval mode and put back into the mode it was in.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        outputs = [model(images[start : start + batch_size]).float() for start in range(0, len(images), batch_size)]
    finally:
        if was_training and isinstance(model, nn.Module):
            model.train()
    if not outputs:
        raise ValueError("no images to predict")
    return torch.cat(outputs)


def predict_classes(model: Classifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model``'s top-1 classes (``[N]``, int64) on ``images``; an empty tensor for no images."""
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.int64)
    return predict_logits(model, images, batch_size).argmax(dim=1)


def evaluate_predictions(
    student_classes: torch.Tensor, teacher_classes: torch.Tensor, labels: torch.Tensor | None, num_classes: int
) -> Evaluation:
    """:class:`Evaluation` from top-1 classes (``[N]`` each) and optional labels (``[N]``, -1 = unlabelled)."""
    if student_classes.shape != teacher_classes.shape or student_classes.dim() != 1:
        raise ValueError("student and teacher classes must both be [N]")
    count = student_classes.numel()
    if labels is None:
        labels = torch.full_like(student_classes, IGNORE_LABEL)
    if labels.shape != student_classes.shape:
        raise ValueError(f"labels must be [N] = [{count}], got {tuple(labels.shape)}")
    labels = labels.long()
    labelled = labels != IGNORE_LABEL
    if ((labels[labelled] < 0) | (labels[labelled] >= num_classes)).any():
        raise ValueError(f"labels must be in [0, {num_classes}) or {IGNORE_LABEL}")
    num_labelled = int(labelled.sum())
    true = labels[labelled]
    student_right = (student_classes[labelled] == true).double()
    teacher_right = (teacher_classes[labelled] == true).double()
    class_counts = torch.bincount(true, minlength=num_classes)

    def per_class(right: torch.Tensor) -> list[float | None]:
        hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, true, right)
        return [float(h / c) if c > 0 else None for h, c in zip(hits.tolist(), class_counts.tolist(), strict=True)]

    return Evaluation(
        num_samples=count,
        num_labelled=num_labelled,
        student_accuracy=float(student_right.mean()) if num_labelled else None,
        teacher_accuracy=float(teacher_right.mean()) if num_labelled else None,
        agreement=float((student_classes == teacher_classes).double().mean()) if count else 0.0,
        per_class_student_accuracy=per_class(student_right),
        per_class_teacher_accuracy=per_class(teacher_right),
        class_counts=[int(c) for c in class_counts.tolist()],
        teacher_class_counts=[int(c) for c in torch.bincount(teacher_classes, minlength=num_classes).tolist()],
    )


def evaluate(
    student: Classifier,
    teacher: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 512,
) -> Evaluation:
    """Student and teacher on ``images`` (``[N, C, H, W]``) with optional ``labels`` (``[N]``, -1 = unlabelled).

    Both are callables returning logits ``[N, K]``; ``nn.Module`` s are evaluated in eval mode.
    """
    student_logits = predict_logits(student, images, batch_size)
    teacher_logits = predict_logits(teacher, images, batch_size)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    return evaluate_predictions(
        student_logits.argmax(dim=1), teacher_logits.argmax(dim=1), labels, student_logits.shape[1]
    )
