"""Validation passes of a distillation run: evaluate the student, record the epoch, keep the best state.
A mixin of the distillation run (:mod:`compression.distill.trainer`)."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from compression.distill.evaluate import Evaluation, evaluate_predictions
from compression.distill.records import DistillCancelled, EpochRecord
from compression.distill.run_state import RunState

__all__ = ["ValidationMixin"]


class ValidationMixin(RunState):
    """Validation of the run's student on its validation set; the best state by the validation metric."""

    def _validate(self, *, epoch: int, train_loss: float | None, steps: int, partial: bool, epoch_s: float) -> None:
        started = time.perf_counter()
        batches = math.ceil(len(self.val.images) / self.config.eval_batch_size)
        # A cancellation raised by the callback during validation takes effect once the record is complete.
        cancelled = self._emit_or_defer_cancel("validate", force=True, step=0, steps=batches)
        averaged = getattr(self, "weight_average", None)  # absent before training is set up
        # With weight averaging on, the averaged weights are what is judged and kept.
        with averaged.applied(self.student) if averaged is not None else contextlib.nullcontext():
            evaluation, cancelled = self._evaluate_student(batches, cancelled)
            metric = evaluation.student_accuracy if self.metric_name == "accuracy" else evaluation.agreement
            assert metric is not None
            if self.best_metric is None or metric >= self.best_metric:  # ties: the later, longer-trained state
                self.best_metric = metric
                self.best_epoch = epoch
                self.best_state = {name: value.detach().clone() for name, value in self.student.state_dict().items()}
                self.best_evaluation = evaluation.as_dict()
        self.last_validation_s = time.perf_counter() - started
        self.validate_s += self.last_validation_s
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            lr=self._learning_rate(max(self.global_step - 1, 0)),  # of the last step taken
            val_accuracy=evaluation.student_accuracy,
            val_agreement=evaluation.agreement,
            val_metric=metric,
            steps=steps,
            partial=partial,
            epoch_s=epoch_s,
            elapsed_s=self._elapsed(),
        )
        self.history.append(record)
        self.latest_val = (evaluation.student_accuracy, evaluation.agreement)
        cancelled |= self._emit_or_defer_cancel("validate", force=True, step=batches, steps=batches)
        if cancelled:
            raise DistillCancelled

    def _evaluate_student(self, batches: int, cancelled: bool) -> tuple[Evaluation, bool]:
        """The student's predictions on the validation images, judged; and whether a cancel was deferred."""
        batch = self.config.eval_batch_size
        self.student.eval()
        outputs = []
        with torch.no_grad():
            for index in range(batches):
                chunk = self.val.images[index * batch : (index + 1) * batch].to(self.device)
                outputs.append(self.student(chunk).float().cpu().argmax(dim=1))
                if index + 1 < batches:  # the last batch is reported with the result, below
                    cancelled |= self._emit_or_defer_cancel("validate", step=index + 1, steps=batches)
        evaluation = evaluate_predictions(
            torch.cat(outputs), self.val_teacher_classes, self.val.labels_or_ignore, self.num_classes
        )
        return evaluation, cancelled

    def _validate_partial_epoch(self) -> None:
        train_loss = self.epoch_loss_sum / self.step_in_epoch
        epoch_s = self._elapsed() - self.epoch_started_elapsed
        self._validate(
            epoch=self.epoch + 1, train_loss=train_loss, steps=self.step_in_epoch, partial=True, epoch_s=epoch_s
        )
