"""Fitting a run's learning-rate schedule to its time budget. A mixin of the distillation run
(:mod:`compression.distill.trainer`).

The schedule (:mod:`compression.distill.schedule`) is laid over ``epochs``; a time budget that ends the run before
then leaves the student where the schedule was when time ran out. With the default 200 epochs, a run stopped after 5
has not even left its warm-up (5 % of the steps): the rate is still rising and nothing was annealed. So, when a run
has a ``time_budget_s`` and ``fit_schedule_to_budget`` is on, the first :data:`FIT_AFTER_STEPS` steps are timed and
``epochs`` is shortened, once, to the whole epochs the rest of the budget affords (steps at the median measured step
time, plus one validation pass per epoch at the duration of the last, with :data:`BUDGET_SHARE` of the remaining
time planned and the rest kept for checkpoints and noise). It is never lengthened, and at least the epoch in
progress is kept. The fitted length is checkpointed, so a resumed run keeps its schedule; the run's fingerprint
holds the requested config.
"""

from __future__ import annotations

import math

import numpy as np

from compression.distill.run_state import RunState

__all__ = ["BUDGET_SHARE", "FIT_AFTER_STEPS", "BudgetFitMixin", "affordable_epochs"]

FIT_AFTER_STEPS = 20
"""Steps timed before the schedule is fitted (fewer when an epoch is shorter); the first is left out of the median
(it pays for lazy initialisation and kernel compilation)."""
BUDGET_SHARE = 0.9
"""Share of the remaining budget the fitted schedule plans to use."""


def affordable_epochs(
    *,
    remaining_s: float,
    step_s: float,
    validation_s: float,
    steps_per_epoch: int,
    global_step: int,
    epoch: int,
    requested: int,
) -> int:
    """The total epochs a run at ``global_step`` (in epoch index ``epoch``) can finish in ``BUDGET_SHARE x
    remaining_s``: between ``epoch + 1`` and ``requested``."""
    if steps_per_epoch < 1 or requested < 1 or step_s < 0 or validation_s < 0:
        raise ValueError("need steps_per_epoch >= 1, requested >= 1 and non-negative durations")
    per_epoch = steps_per_epoch * step_s + validation_s
    if per_epoch <= 0:
        return requested
    spent_equivalent = global_step * step_s + epoch * validation_s  # the part of the schedule already behind
    total = math.floor((BUDGET_SHARE * max(remaining_s, 0.0) + spent_equivalent) / per_epoch)
    return max(epoch + 1, min(requested, total))


class BudgetFitMixin(RunState):
    """``_record_step_time`` after each step and ``_maybe_fit_schedule`` (module docstring)."""

    def _record_step_time(self, seconds: float) -> None:
        if len(self.step_durations) <= FIT_AFTER_STEPS:
            self.step_durations.append(seconds)

    def _maybe_fit_schedule(self) -> None:
        config = self.config
        if self.fitted_epochs is not None or config.time_budget_s is None or not config.fit_schedule_to_budget:
            return
        if self.steps_this_run < min(FIT_AFTER_STEPS, self.steps_per_epoch):
            return
        timed = self.step_durations[1:] or self.step_durations
        epochs = affordable_epochs(
            remaining_s=config.time_budget_s - self._elapsed(),
            step_s=float(np.median(timed)),
            validation_s=self.last_validation_s,
            steps_per_epoch=self.steps_per_epoch,
            global_step=self.global_step,
            epoch=self.epoch,
            requested=config.epochs,
        )
        self._apply_fitted_epochs(epochs)

    def _apply_fitted_epochs(self, epochs: int) -> None:
        """Run ``epochs`` epochs in all (also when a checkpoint says so)."""
        self.fitted_epochs = epochs
        if epochs != self.config.epochs:
            self.config = self.config.replace(epochs=epochs)
            self.total_steps = self.steps_per_epoch * epochs
            if hasattr(self, "weighting_starts_at_epoch"):  # set up already (not when restoring a checkpoint)
                self.weighting_starts_at_epoch = self._weighting_start()
