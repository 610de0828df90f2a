"""What :func:`~compression.distill.trainer.distill` reports: progress events, history rows and its result.

Also the request a progress callback raises to cancel a run (:class:`DistillCancelled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from compression.distill.evaluate import Evaluation

__all__ = ["DistillCancelled", "DistillProgress", "DistillResult", "EpochRecord", "Stage", "StoppedReason"]

Stage = Literal["teacher_outputs", "train", "validate", "done"]
StoppedReason = Literal["completed", "time_budget", "cancelled"]


class DistillCancelled(Exception):  # noqa: N818  (a request, not an error: the name says what happened)
    """Raise from ``on_progress`` to stop a run; :func:`distill` returns the best student so far."""


@dataclass(frozen=True)
class DistillProgress:
    """One progress event. ``epoch`` is 1-based while training (0: before the first epoch)."""

    stage: Stage
    epoch: int
    epochs: int
    step: int
    """Steps (training) or batches (teacher outputs, validation) done in the current stage or epoch."""
    steps_per_epoch: int
    """Steps of an epoch (training) or batches of the stage (teacher outputs, validation)."""
    loss: float | None
    """Mean training loss of the epoch so far."""
    samples_per_s: float | None
    eta_s: float | None
    """Estimated seconds to the end of the run (capped by the time budget)."""
    val_accuracy: float | None
    """Of the latest validation (None before the first, or without validation labels); in the "done" event, of the
    returned (best) state."""
    val_agreement: float | None
    elapsed_s: float


@dataclass(frozen=True)
class EpochRecord:
    """One row of the history. Epoch 0 is the initial student; ``partial`` marks an epoch cut short by the budget."""

    epoch: int
    train_loss: float | None
    lr: float
    val_accuracy: float | None
    val_agreement: float
    val_metric: float
    steps: int
    partial: bool
    epoch_s: float
    elapsed_s: float


@dataclass
class DistillResult:
    """What :func:`distill` returns; ``student`` is the model passed in, with the best state loaded, in eval mode."""

    student: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_metric: float | None
    metric: Literal["accuracy", "agreement"]
    evaluation: Evaluation | None
    """Validation evaluation of the returned state (None only if the run stopped before evaluating anything)."""
    stopped_reason: StoppedReason
    global_step: int
    wall_s: float
    """Seconds of this invocation."""
    elapsed_s: float
    """Seconds of the whole run, summed over resumed invocations."""
    teacher_forward_s: float
    train_s: float
    validate_s: float
    class_weights: list[float] = field(default_factory=list)
    """Nominal class weights ``w0`` (sum ``K``), from the teacher's predictions on the transfer set."""
    resumed_from_step: int | None = None
    float_stage: DistillResult | None = None
    """The result of the full-precision twin's stage (two-stage training, ``float_stage_epochs``), else None; its
    ``student`` is the twin."""
