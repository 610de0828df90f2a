"""The state a distillation run shares between its parts: the base of the run's mixins (teacher outputs,
validation, progress, checkpoints) and of the run itself (:mod:`compression.distill.trainer`).

The attributes are declared here, with their types, and set by the run; the methods one mixin calls on another are
declared for the type checker only (each is defined by exactly one part of the run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from compression.distill.config import DistillConfig
from compression.distill.data import TransferSet
from compression.distill.losses import ClassLossTracker
from compression.distill.noise_adaptation import NoiseAdaptation
from compression.distill.records import DistillProgress, EpochRecord, Stage, StoppedReason
from compression.distill.weight_average import WeightAverage

__all__ = ["RunState", "Teacher"]

Teacher = Callable[[torch.Tensor], torch.Tensor]
"""A teacher: any callable from images ``[n, C, H, W]`` to logits ``[n, K]``."""


class RunState:
    """What one distillation run knows: inputs, position, bookkeeping, timing (see the run for each value)."""

    # Inputs and derived constants.
    teacher: Teacher
    student: nn.Module
    train: TransferSet
    val: TransferSet
    config: DistillConfig
    requested_config: DistillConfig
    on_progress: Callable[[DistillProgress], None] | None
    should_stop: Callable[[], bool] | None
    checkpoint_dir: Path | None
    device: torch.device
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    metric_name: Literal["accuracy", "agreement"]
    # The teacher's outputs and what training derives from them.
    train_logits: torch.Tensor
    val_logits: torch.Tensor
    val_teacher_classes: torch.Tensor
    num_classes: int
    class_weights_list: list[float]
    class_loss_tracker: ClassLossTracker
    optimizer: torch.optim.Optimizer
    weighting_starts_at_epoch: int
    weight_average: WeightAverage | None
    # Position and bookkeeping (checkpointed).
    epoch: int
    step_in_epoch: int
    global_step: int
    epoch_loss_sum: float
    epoch_started_elapsed: float
    history: list[EpochRecord]
    best_metric: float | None
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    best_evaluation: dict[str, Any] | None
    elapsed_before: float
    teacher_forward_s: float
    train_s: float
    validate_s: float
    last_validation_s: float
    resumed_from_step: int | None
    fingerprint: dict[str, Any] | None
    fitted_epochs: int | None
    noise_adaptation: NoiseAdaptation | None
    # Timing of this invocation.
    steps_this_run: int
    train_s_this_run: float
    last_checkpoint_time: float
    last_checkpoint_step: int
    last_emit: dict[str, float]
    latest_val: tuple[float | None, float | None]

    if TYPE_CHECKING:  # defined by the run (trainer.py) and its mixins (progress.py, resume.py)

        def _elapsed(self) -> float: ...

        def _learning_rate(self, step: int) -> float: ...

        def _weighting_start(self) -> int: ...

        def _apply_fitted_epochs(self, epochs: int) -> None: ...

        def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]: ...

        def _train_step(
            self, positions: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
        ) -> None: ...

        def _check_stop(self, teacher_stage: bool = False) -> None: ...

        def _emit(
            self,
            stage: Stage,
            *,
            force: bool = False,
            step: int | None = None,
            steps: int | None = None,
            samples_per_s: float | None = None,
        ) -> None: ...

        def _emit_or_defer_cancel(self, stage: Stage, **kwargs: Any) -> bool: ...

        def _path(self, name: str) -> Path | None: ...

        def _fingerprint(self) -> dict[str, Any]: ...

        def _check_fingerprint(self, found: dict[str, Any], path: Path) -> None: ...

        def _save_checkpoint(self, *, finished: bool, stopped_reason: StoppedReason | None) -> None: ...
