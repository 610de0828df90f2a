"""Stopping (time budget, cancellation) and progress events of a distillation run.
A mixin of the distillation run (:mod:`compression.distill.trainer`)."""

from __future__ import annotations

import math
import time
from typing import Any

from compression.distill.records import DistillCancelled, DistillProgress, Stage, StoppedReason
from compression.distill.run_state import RunState

__all__ = ["ProgressMixin", "Stop"]


class Stop(Exception):  # noqa: N818  (internal control flow)
    """Raised inside the run to stop training for ``reason``."""

    def __init__(self, reason: StoppedReason) -> None:
        super().__init__(reason)
        self.reason = reason


class ProgressMixin(RunState):
    """``_check_stop`` (budget, ``should_stop``) and throttled :class:`DistillProgress` events."""

    def _check_stop(self, teacher_stage: bool = False) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Stop("cancelled")
        budget = self.config.time_budget_s
        if budget is not None:
            reserve = 0.0 if teacher_stage else self.last_validation_s
            if self._elapsed() + reserve >= budget:
                raise Stop("time_budget")

    def _emit(
        self,
        stage: Stage,
        *,
        force: bool = False,
        step: int | None = None,
        steps: int | None = None,
        samples_per_s: float | None = None,
    ) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter()
        if not force and now - self.last_emit.get(stage, -math.inf) < self.config.progress_interval_s:
            return
        self.last_emit[stage] = now
        training = stage in ("train", "done")
        if samples_per_s is None and self.train_s_this_run > 0:
            samples_per_s = self.steps_this_run * self.batch_size / self.train_s_this_run
        event = DistillProgress(
            stage=stage,
            epoch=self.epoch + 1 if stage == "train" else self.epoch,
            epochs=self.config.epochs,
            step=self.step_in_epoch if step is None else step,
            steps_per_epoch=self.steps_per_epoch if steps is None else steps,
            loss=self.epoch_loss_sum / self.step_in_epoch if training and self.step_in_epoch else None,
            samples_per_s=samples_per_s,
            eta_s=0.0 if stage == "done" else self._eta(),
            val_accuracy=self.latest_val[0],
            val_agreement=self.latest_val[1],
            elapsed_s=self._elapsed(),
        )
        self.on_progress(event)

    def _emit_or_defer_cancel(self, stage: Stage, **kwargs: Any) -> bool:
        """:meth:`_emit`, returning True instead of raising if the callback cancels."""
        try:
            self._emit(stage, **kwargs)
        except DistillCancelled:
            return True
        return False

    def _eta(self) -> float | None:
        remaining_steps = self.total_steps - self.global_step
        if remaining_steps <= 0:
            eta = 0.0
        elif self.steps_this_run == 0:
            return None
        else:
            per_step = self.train_s_this_run / self.steps_this_run
            validations = self.config.epochs - self.epoch
            eta = remaining_steps * per_step + validations * self.last_validation_s
        budget = self.config.time_budget_s
        return eta if budget is None else max(0.0, min(eta, budget - self._elapsed()))
