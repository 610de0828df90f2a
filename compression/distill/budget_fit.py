"""Fitting a run's learning-rate schedule to its time budget. A mixin of the distillation run
(:mod:`compression.distill.trainer`).

The schedule (:mod:`compression.distill.schedule`) is laid over ``epochs``; a time budget that ends the run before
then leaves the student where the schedule was when time ran out. With the default 200 epochs, a run stopped after 10
has not even left its warm-up (5 % of the steps): the rate is still rising and nothing was annealed. So, when a run
has a ``time_budget_s`` and ``fit_schedule_to_budget`` is on, :data:`FIT_AFTER_STEPS` training steps are timed
before training starts and then undone (the student, optimizer, worst-case tracker, noise-adaptation matrix, weight
average, counters and random states are put back), and ``epochs`` is shortened to the whole epochs the rest of the
budget affords: steps at the median timed step, plus one validation pass per epoch at the duration of the initial
one, planning :data:`BUDGET_SHARE` of the remaining time and keeping the rest for checkpoints and noise. Timing
before the first step keeps the schedule, warm-up included, a function of the step alone: a schedule changed after
steps had been taken at the 200-epoch warm-up's tiny rates would start at full rate on an untrained student, which
loses as much as no warm-up at all (84.3 % against 92-93 % on the benchmark). The length is never increased, and is
checkpointed, so a resumed run keeps its schedule; the run's fingerprint holds the requested config.

Off by default (``DistillConfig.fit_schedule_to_budget``): on the benchmark (docs/results.md, "A time budget and the
schedule") the cut 200-epoch schedule, which at these budgets is mostly its linear warm-up with the best state kept,
gave better students than a cosine schedule fitted to the same budget, on short sets and long.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np

from compression.distill.checkpoint import rng_states, set_rng_states
from compression.distill.run_state import RunState

__all__ = ["BUDGET_SHARE", "FIT_AFTER_STEPS", "BudgetFitMixin", "affordable_epochs"]

FIT_AFTER_STEPS = 20
"""Steps timed to fit the schedule (fewer when an epoch is shorter), after one more that is left out of the median
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
    """``_fit_schedule_to_budget`` before training (module docstring)."""

    def _fit_schedule_to_budget(self) -> None:
        config = self.config
        if self.fitted_epochs is not None or config.time_budget_s is None or not config.fit_schedule_to_budget:
            return
        if self.global_step > 0:  # resumed without a fitted length: the schedule it started with stays
            return
        snapshot = self._training_snapshot()
        order, offsets, flips = self._epoch_plan(0)
        durations = []
        for index in range(min(FIT_AFTER_STEPS + 1, self.steps_per_epoch)):
            slots = slice(index * self.batch_size, (index + 1) * self.batch_size)
            started = time.perf_counter()
            self._train_step(
                order[slots], None if offsets is None else offsets[slots], flips[slots] if flips is not None else None
            )
            durations.append(time.perf_counter() - started)
        self._restore_training_snapshot(snapshot)
        epochs = affordable_epochs(
            remaining_s=config.time_budget_s - self._elapsed(),
            step_s=float(np.median(durations[1:] or durations)),
            validation_s=self.last_validation_s,
            steps_per_epoch=self.steps_per_epoch,
            global_step=0,
            epoch=0,
            requested=config.epochs,
        )
        self._apply_fitted_epochs(epochs)

    def _training_snapshot(self) -> dict[str, Any]:
        """Everything a training step changes, copied."""
        noise_adaptation = self.noise_adaptation
        return {
            "student": {name: value.detach().clone() for name, value in self.student.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "class_losses": copy.deepcopy(self.class_loss_tracker.state_dict()),
            "noise_adaptation": None if noise_adaptation is None else copy.deepcopy(noise_adaptation.state_dict()),
            "weight_average": None if self.weight_average is None else copy.deepcopy(self.weight_average.state_dict()),
            "rng": rng_states(),
            "counters": {name: getattr(self, name) for name in _STEP_COUNTERS},
        }

    def _restore_training_snapshot(self, snapshot: dict[str, Any]) -> None:
        self.student.load_state_dict(snapshot["student"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.class_loss_tracker.load_state_dict(snapshot["class_losses"])
        if snapshot["noise_adaptation"] is not None and self.noise_adaptation is not None:
            self.noise_adaptation.load_state_dict(snapshot["noise_adaptation"])
        if snapshot["weight_average"] is not None and self.weight_average is not None:
            self.weight_average.load_state_dict(snapshot["weight_average"])
        set_rng_states(snapshot["rng"])
        for name, value in snapshot["counters"].items():
            setattr(self, name, value)

    def _apply_fitted_epochs(self, epochs: int) -> None:
        """Run ``epochs`` epochs in all (also when a checkpoint says so)."""
        self.fitted_epochs = epochs
        if epochs != self.config.epochs:
            self.config = self.config.replace(epochs=epochs)
            self.total_steps = self.steps_per_epoch * epochs
            if hasattr(self, "weighting_starts_at_epoch"):  # set up already (not when restoring a checkpoint)
                self.weighting_starts_at_epoch = self._weighting_start()


_STEP_COUNTERS = ("epoch_loss_sum", "step_in_epoch", "global_step", "steps_this_run", "train_s", "train_s_this_run")
