"""Checkpoints of a distillation run: periodic atomic writes, resume with a fingerprint check.
A mixin of the distillation run (:mod:`compression.distill.trainer`); file formats in
:mod:`compression.distill.checkpoint`."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compression.distill.checkpoint import (
    CHECKPOINT_FILE,
    check_fingerprint,
    read_checkpoint,
    rng_states,
    run_fingerprint,
    set_rng_states,
    write_checkpoint,
)
from compression.distill.records import EpochRecord, StoppedReason
from compression.distill.run_state import RunState

__all__ = ["CheckpointMixin"]


class CheckpointMixin(RunState):
    """Save, load and restore the run's state."""

    def _path(self, name: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return self.checkpoint_dir / name

    def _fingerprint(self) -> dict[str, Any]:
        """What identifies the run: trajectory-shaping config fields, data digests, the student's parameters."""
        if self.fingerprint is None:  # computed once, and only when there is a checkpoint folder
            self.fingerprint = run_fingerprint(self.requested_config, self.train, self.val, self.student)
        return self.fingerprint

    def _check_fingerprint(self, found: dict[str, Any], path: Path) -> None:
        check_fingerprint(found, self._fingerprint(), path)

    def _maybe_checkpoint(self) -> None:
        config = self.config
        due = config.checkpoint_every_steps is not None and (
            self.global_step - self.last_checkpoint_step >= config.checkpoint_every_steps
        )
        due = due or (
            config.checkpoint_every_s is not None
            and time.perf_counter() - self.last_checkpoint_time >= config.checkpoint_every_s
        )
        if due:
            self._save_checkpoint(finished=False, stopped_reason=None)

    def _save_checkpoint(self, *, finished: bool, stopped_reason: StoppedReason | None) -> None:
        path = self._path(CHECKPOINT_FILE)
        if path is None:
            return
        state = {
            "model": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"schedule": self.config.schedule, "global_step": self.global_step},
            "epoch": self.epoch,
            "fitted_epochs": self.fitted_epochs,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_started_elapsed": self.epoch_started_elapsed,
            "class_losses": self.class_loss_tracker.state_dict(),
            "weight_average": None if self.weight_average is None else self.weight_average.state_dict(),
            "noise_adaptation": None if self.noise_adaptation is None else self.noise_adaptation.state_dict(),
            "rng": rng_states(),
            "best": {
                "metric": self.best_metric,
                "epoch": self.best_epoch,
                "state": self.best_state,
                "evaluation": self.best_evaluation,
            },
            "history": [asdict(record) for record in self.history],
            "elapsed_s": self._elapsed(),
            "teacher_forward_s": self.teacher_forward_s,
            "train_s": self.train_s,
            "validate_s": self.validate_s,
            "last_validation_s": self.last_validation_s,
            "class_weights": getattr(self, "class_weights_list", []),
            "finished": finished,
            "stopped_reason": stopped_reason,
        }
        write_checkpoint(path, self._fingerprint(), state)
        self.last_checkpoint_time = time.perf_counter()
        self.last_checkpoint_step = self.global_step

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self._path(CHECKPOINT_FILE)
        if path is None:
            return None
        checkpoint = read_checkpoint(path)
        if checkpoint is None:
            return None
        self._check_fingerprint(checkpoint["fingerprint"], path)
        self.history = [EpochRecord(**record) for record in checkpoint["history"]]
        best = checkpoint["best"]
        self.best_metric, self.best_epoch = best["metric"], best["epoch"]
        self.best_state, self.best_evaluation = best["state"], best["evaluation"]
        self.elapsed_before = checkpoint["elapsed_s"]
        self.teacher_forward_s = checkpoint["teacher_forward_s"]
        self.train_s = checkpoint["train_s"]
        self.validate_s = checkpoint["validate_s"]
        self.last_validation_s = checkpoint["last_validation_s"]
        self.class_weights_list = checkpoint["class_weights"]
        self.global_step = checkpoint["global_step"]
        self.epoch = checkpoint["epoch"]
        self.step_in_epoch = checkpoint["step_in_epoch"]
        if checkpoint.get("fitted_epochs") is not None:  # the schedule fitted to the time budget is kept
            self._apply_fitted_epochs(checkpoint["fitted_epochs"])
        if self.history:
            last = self.history[-1]
            self.latest_val = (last.val_accuracy, last.val_agreement)
        self.resumed_from_step = self.global_step
        return checkpoint

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.student.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.epoch_loss_sum = checkpoint["epoch_loss_sum"]
        self.epoch_started_elapsed = checkpoint["epoch_started_elapsed"]
        self.class_loss_tracker.load_state_dict(checkpoint["class_losses"])
        if self.weight_average is not None:
            self.weight_average.load_state_dict(checkpoint["weight_average"])
        if self.noise_adaptation is not None and checkpoint.get("noise_adaptation") is not None:
            self.noise_adaptation.load_state_dict(checkpoint["noise_adaptation"])
        set_rng_states(checkpoint["rng"])
        self.last_checkpoint_step = self.global_step
