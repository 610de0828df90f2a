"""``distill``: train a student to imitate a teacher on a transfer set (robust KD, PU compression arXiv:1909.09757).

The objective of one batch (losses and their sources: :mod:`compression.distill.losses`)::

    loss = kd_weight * max_{u in U_rho} sum_k u_k b_k  +  ce_weight * (1/n) sum_{i labelled} CE(s_i, y_i)

with ``b_k`` the class-``k`` term of the class-weighted KD loss. The nominal class weights ``w0`` (sum ``K``)
are computed once from the teacher's predictions on the whole transfer set and divided by their mean over the
transfer set's samples (``(1/N) sum_i w0[c_i]``), a constant factor that keeps the weighted loss on the scale of
plain KD -- the per-family learning rates are tuned for that scale -- without changing the weights' ratios or the
min-max. ``class_balanced=False`` uses the plain mean KD loss; ``robust=False`` the nominal weights.

With ``class_weighting="sampling"`` the nominal weights act through the epoch's order instead
(:func:`compression.distill.sampling.class_weighted_order`: class ``k`` fills a share ``∝ w0_k * N_k`` of the
slots), the per-sample loss weights are 1 and only the worst-case factors ``u*`` multiply the class terms; the
adversary's terms are the same ``w0_k * pi_k * mu_k``. ``class_weight_delay`` trains the first share of the epochs
with the plain mean loss and a uniform order (deferred re-weighting, Cao et al. 2019, arXiv:1906.07413).

Data contract
-------------
``train_data`` / ``val_data`` are a :class:`~compression.distill.data.TransferSet` (images in [0, 1], optional
labels with -1 for unlabelled samples, optional precomputed teacher logits), an ``(images, labels_or_None)`` tuple or
a ``torch.utils.data.Dataset``; :mod:`compression.distill.data` describes the accepted forms. Everything is held in
memory as one tensor. ``val_data=None`` monitors on the first 2048 training images instead (then "best" means the
best agreement with the teacher on those training images).

Teacher outputs
---------------
The teacher is any callable from images ``[n, C, H, W]`` to logits ``[n, K]`` (an ``nn.Module`` is run in eval mode
and put back into its mode afterwards). Its logits on the un-augmented training and validation images are computed
once, in batches under ``no_grad``, and reused every epoch; with a ``checkpoint_dir`` they are also saved there
(``teacher_outputs.pt``) so a resumed run neither pays for them again nor depends on the teacher being bitwise
deterministic.

Augmentation (``augment``) changes the student's input only: a horizontal flip per sample and, with
``augment_padding > 0``, a random crop of the zero-padded image. By default the target stays the teacher's cached
output on the un-augmented image (a teacher forward pass, usually several times the cost of a student step, is not
paid every epoch); ``teacher_on_augmented`` recomputes the teacher on every augmented batch instead. Measured on the
test task (Fashion-MNIST classes 0-4, 1000 training images, a small CNN teacher trained with flips but no crops):
the teacher's top-1 class on a flipped image equals its class on the original for 98.6 % of images
(``T^2 * KL`` at T = 4: 0.016), but on a crop with 4-pixel padding only for 62 % (``T^2 * KL``: 2.5). Hence the
defaults: flips against cached outputs, crops off; use crops with ``teacher_on_augmented`` unless the teacher was
trained with the same crops. Flips assume mirror-symmetric classes: turn ``augment_flip`` off for digits or text.

Batches and determinism
-----------------------
An epoch is ``N // batch_size`` steps (the last partial batch is dropped; ``batch_size`` is capped at ``N``). The
sample order and the augmentation of epoch ``e`` are drawn from a ``torch.Generator`` seeded from ``(seed, e)``
alone, so any step of any epoch can be replayed without replaying the ones before it. The learning rate is a pure
function of the global step. Model-internal randomness (e.g. dropout) uses the global RNGs, whose states (torch,
numpy, Python ``random``) are checkpointed. On the CPU with a fixed thread count a run killed at any point and
started again with the same arguments ends bitwise equal to an uninterrupted run.

Checkpoints (``checkpoint_dir``)
--------------------------------
``checkpoint.pt`` holds the model, optimizer, schedule position, RNG states, the best state so far, the history and
the time spent. It is written every ``checkpoint_every_steps`` steps and/or ``checkpoint_every_s`` seconds, at every
epoch end and when the run stops, always atomically. The checkpoint and the teacher outputs record a fingerprint of
the run (the config fields that shape the trajectory, order-sensitive digests of the training and validation data,
the student's parameter names and shapes); resuming from the files of a different run is a ValueError. The teacher
itself cannot be fingerprinted: a checkpoint folder belongs to one teacher. Re-running a finished run returns its
result from the checkpoint without training. The file contents, the atomic writes and the fingerprint in detail:
:mod:`compression.distill.checkpoint`.

Stopping
--------
* ``time_budget_s`` covers the whole run, summed over resumed invocations. Training stops when the elapsed time plus
  the duration of the last validation pass reaches the budget, the current state is validated, and the best state
  by the validation metric is returned (``stopped_reason="time_budget"``).
* The validation metric is accuracy on the labelled validation images if ``val_data`` has any, else top-1 agreement
  with the teacher (always agreement when monitoring training images: their labels were trained on and saturate at
  100 % within an epoch or two). The initial student is always evaluated first (epoch 0), so there is always a best
  state; on ties the later state is kept (a small labelled set often gives two epochs the same accuracy, and the
  later state has trained longer). Measured on the benchmark's pool transfer sets (ghost, 3 epochs), selecting by
  accuracy on the ~20 labelled images among the first 2,048 training images, earlier state kept on ties, returned
  epoch 1 of 3 in a third of the runs, 2-5 points below the seeds that kept the last epoch.
* Cancellation: ``on_progress`` may raise :class:`DistillCancelled`, or ``should_stop()`` may return True (polled
  every step and every teacher batch). Training then stops at once (no extra validation; a cancellation during a
  validation pass takes effect when the pass is recorded) and returns the best state so far with
  ``stopped_reason="cancelled"``. Any other exception from the callback aborts the run and propagates
  (the student keeps its partly trained weights; the last checkpoint remains for a resume).

Progress events (:class:`DistillProgress`) are delivered at most every ``progress_interval_s`` seconds per stage
(training: after a step; teacher outputs and validation: after a batch), and always when a stage starts, when a
validation ends and when the run is done.

Family specifics: students with :class:`~compression.layers.AdderConv2d` layers get the AdderNet adaptive learning
rate (:func:`~compression.layers.scale_adder_gradients_` after ``backward()``); deployed binary layers are switched
back to their training form (``undeploy()``) first, and ``distill`` never deploys. The student is in train mode for
steps and eval mode for validation, and is returned in eval mode with the best state loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compression.distill.budget_fit import BudgetFitMixin
from compression.distill.checkpoint import CHECKPOINT_FILE, TEACHER_OUTPUTS_FILE
from compression.distill.config import DistillConfig, default_config, float_stage_config
from compression.distill.data import TransferSet, as_transfer_set, validation_set
from compression.distill.evaluate import Evaluation
from compression.distill.losses import (
    IGNORE_LABEL,
    ClassLossTracker,
    class_weighted_loss,
    distillation_loss,
    labelled_cross_entropy,
    teacher_class_weights,
)
from compression.distill.noise_adaptation import NoiseAdaptation
from compression.distill.progress import ProgressMixin, Stop
from compression.distill.records import (
    DistillCancelled,
    DistillProgress,
    DistillResult,
    EpochRecord,
    Stage,
    StoppedReason,
)
from compression.distill.resume import CheckpointMixin
from compression.distill.run_state import Teacher
from compression.distill.sampling import class_weighted_order
from compression.distill.schedule import learning_rate
from compression.distill.stages import float_twin, has_low_bit_layers, load_float_twin_
from compression.distill.teacher_outputs import TeacherOutputsMixin, module_device
from compression.distill.validation import ValidationMixin
from compression.distill.weight_average import WeightAverage
from compression.layers.adder import AdderConv2d, scale_adder_gradients_
from compression.layers.binary import BinaryConv2d
from compression.layers.ghost import GhostModule

# The data, record and checkpoint names are defined in their own modules and re-exported here, where they always were.
__all__ = [
    "CHECKPOINT_FILE",
    "TEACHER_OUTPUTS_FILE",
    "DistillCancelled",
    "DistillProgress",
    "DistillResult",
    "EpochRecord",
    "Stage",
    "StoppedReason",
    "TransferSet",
    "as_transfer_set",
    "distill",
    "infer_family",
]


def infer_family(student: nn.Module) -> str:
    """The student family from its layers: ``adder``, ``binary``, ``ghost`` or ``plain``."""
    kinds = {type(module) for module in student.modules()}
    for family, layer in (("adder", AdderConv2d), ("binary", BinaryConv2d), ("ghost", GhostModule)):
        if any(issubclass(kind, layer) for kind in kinds):
            return family
    return "plain"


def distill(
    teacher: Teacher,
    student: nn.Module,
    train_data: Any,
    val_data: Any = None,
    config: DistillConfig | None = None,
    on_progress: Callable[[DistillProgress], None] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DistillResult:
    """Distil ``teacher`` into ``student`` on ``train_data``, selecting the best state on ``val_data``.

    ``config`` defaults to :func:`~compression.distill.config.default_config` of the student's family. See the
    module docstring for the data contract, checkpoints, time budget, cancellation and progress events.
    """
    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
    if not callable(teacher):
        raise TypeError("teacher must be callable (images -> logits)")
    config = config if config is not None else default_config(infer_family(student))
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
    with _thread_count(config.num_threads), _teacher_in_eval_mode(teacher):
        train = as_transfer_set(train_data)
        validation = validation_set(train, val_data)
        folder = None if checkpoint_dir is None else Path(checkpoint_dir)
        float_result = None
        if config.float_stage_epochs > 0 and has_low_bit_layers(student):
            # Two-stage training (compression.distill.stages): the full-precision twin first.
            twin = float_twin(student)
            float_config = float_stage_config(config)
            share = config.float_stage_epochs / (config.float_stage_epochs + config.epochs)
            if config.time_budget_s is not None:
                share = max(share, FLOAT_STAGE_MIN_SHARE)  # not 1/201 of it with the default 200 epochs
                float_config = float_config.replace(time_budget_s=config.time_budget_s * share)
            stage = _Run(teacher, twin, train, validation, float_config)
            float_result = stage.run(on_progress, None if folder is None else folder / "float_stage", should_stop)
            load_float_twin_(student, twin)
            if float_result.stopped_reason == "cancelled":
                return dataclasses.replace(float_result, student=student.eval(), float_stage=float_result)
            # The teacher's outputs are reused, not recomputed.
            train = dataclasses.replace(train, teacher_logits=stage.train_logits)
            validation = (dataclasses.replace(validation[0], teacher_logits=stage.val_logits), validation[1])
            remaining = None
            if config.time_budget_s is not None:
                remaining = max(config.time_budget_s - float_result.elapsed_s, 1e-3)
            config = config.replace(float_stage_epochs=0, time_budget_s=remaining)
        run = _Run(teacher, student, train, validation, config)
        result = run.run(on_progress, folder, should_stop)
        if float_result is not None:
            result.float_stage = float_result
        return result


@contextlib.contextmanager
def _thread_count(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def _teacher_in_eval_mode(teacher: Teacher) -> Iterator[None]:
    was_training = isinstance(teacher, nn.Module) and teacher.training
    if isinstance(teacher, nn.Module):
        teacher.eval()
    try:
        yield
    finally:
        if was_training and isinstance(teacher, nn.Module):
            teacher.train()


FLOAT_STAGE_MIN_SHARE = 0.25
"""Of a time budget, the full-precision twin's stage gets its share of the requested epochs but at least this much
(the adder recipe's one float epoch before three adder epochs; a stage that ends sooner leaves the rest to the
student), not 1/201 of it when 200 epochs are requested and the budget cuts them."""


class _Run(TeacherOutputsMixin, ValidationMixin, ProgressMixin, CheckpointMixin, BudgetFitMixin):
    """The state of one distillation run; :meth:`execute` drives it."""

    def __init__(
        self,
        teacher: Teacher,
        student: nn.Module,
        train: TransferSet,
        validation: tuple[TransferSet, bool],
        config: DistillConfig,
    ) -> None:
        if len(train) < 2:
            raise ValueError("the transfer set needs at least 2 images")
        self.teacher = teacher
        self.student = student
        self.train = train
        self.val, self.val_from_train = validation
        if self.val.images.shape[1:] != train.images.shape[1:]:
            raise ValueError(
                f"validation images {tuple(self.val.images.shape[1:])} differ from training images "
                f"{tuple(train.images.shape[1:])}"
            )
        self.config = config
        self.requested_config = config  # ``config`` may get fewer epochs to fit a time budget (budget_fit)
        self.on_progress = None
        self.should_stop = None
        self.checkpoint_dir = None
        self.has_adder_layers = any(isinstance(module, AdderConv2d) for module in student.modules())
        self.device = next((p.device for p in student.parameters()), torch.device("cpu"))
        self.batch_size = min(config.batch_size, len(train))
        self.steps_per_epoch = len(train) // self.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        # Accuracy needs held-out labels: labels of training images were fitted, so on monitored training images
        # (no val_data) they would saturate within an epoch and stop telling states apart.
        self.metric_name = "accuracy" if self.val.has_labels and not self.val_from_train else "agreement"
        # Position and bookkeeping (all checkpointed).
        self.epoch = 0  # index of the epoch being trained
        self.step_in_epoch = 0  # steps of that epoch already done
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.epoch_started_elapsed = 0.0
        self.history = []
        self.best_metric = None
        self.best_epoch = 0
        self.best_state = None
        self.best_evaluation = None
        self.elapsed_before = 0.0
        self.teacher_forward_s = 0.0
        self.train_s = 0.0
        self.validate_s = 0.0
        self.last_validation_s = 0.0
        self.resumed_from_step = None
        self.fingerprint = None
        self.fitted_epochs = None
        # Timing of this invocation.
        self.started = time.perf_counter()
        self.steps_this_run = 0
        self.train_s_this_run = 0.0
        self.last_checkpoint_time = self.started
        self.last_checkpoint_step = 0
        self.last_emit = {}
        self.latest_val = (None, None)

    # ----------------------------------------------------------------------------------------------- driver

    def run(
        self,
        on_progress: Callable[[DistillProgress], None] | None,
        checkpoint_dir: Path | None,
        should_stop: Callable[[], bool] | None,
    ) -> DistillResult:
        self.on_progress = on_progress
        self.checkpoint_dir = checkpoint_dir
        self.should_stop = should_stop
        return self.execute()

    def execute(self) -> DistillResult:
        for module in self.student.modules():
            if isinstance(module, BinaryConv2d) and module.deployed:
                module.undeploy()
        checkpoint = self._load_checkpoint()
        if checkpoint is not None and checkpoint["finished"]:
            return self._result(checkpoint["stopped_reason"])
        reason: StoppedReason = "completed"
        try:
            self._teacher_outputs()
            self._setup_training()
            if checkpoint is not None:
                self._restore(checkpoint)
            else:
                self._validate(epoch=0, train_loss=None, steps=0, partial=False, epoch_s=0.0)
            self._train()
        except Stop as stop:
            reason = stop.reason
        except DistillCancelled:
            reason = "cancelled"
        for module in self.student.modules():  # a stop inside a progressive-binarisation epoch
            if isinstance(module, BinaryConv2d):
                module.binarize_weights = True
        if reason == "time_budget" and self.step_in_epoch > 0 and hasattr(self, "optimizer"):
            try:
                self._validate_partial_epoch()
            except DistillCancelled:
                reason = "cancelled"
        finished = reason == "completed"
        if hasattr(self, "optimizer"):
            self._save_checkpoint(finished=finished, stopped_reason=reason)
        result = self._result(reason)
        if result.evaluation is not None:  # the "done" event reports the returned (best) state
            self.latest_val = (result.evaluation.student_accuracy, result.evaluation.agreement)
        with contextlib.suppress(DistillCancelled):  # nothing left to cancel
            self._emit("done", force=True)
        return result

    def _result(self, reason: StoppedReason) -> DistillResult:
        if self.best_state is not None:
            self.student.load_state_dict(self.best_state)
        self.student.eval()
        evaluation = None if self.best_evaluation is None else Evaluation(**self.best_evaluation)
        return DistillResult(
            student=self.student,
            history=list(self.history),
            best_epoch=self.best_epoch,
            best_metric=self.best_metric,
            metric=self.metric_name,
            evaluation=evaluation,
            stopped_reason=reason,
            global_step=self.global_step,
            wall_s=time.perf_counter() - self.started,
            elapsed_s=self._elapsed(),
            teacher_forward_s=self.teacher_forward_s,
            train_s=self.train_s,
            validate_s=self.validate_s,
            class_weights=getattr(self, "class_weights_list", []),
            resumed_from_step=self.resumed_from_step,
        )

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.started)

    # ------------------------------------------------------------------------------------------------ training

    def _setup_training(self) -> None:
        config = self.config
        probabilities = torch.softmax(self.train_logits.double(), dim=1)
        self.teacher_classes = self.train_logits.argmax(dim=1)
        self.num_classes = self.train_logits.shape[1]
        self.val_teacher_classes = self.val_logits.argmax(dim=1)
        class_weights = teacher_class_weights(probabilities, config.class_weight_floor)
        self.class_weights_list = [float(w) for w in class_weights]
        # Divided by the mean sample weight: the weighted loss stays on plain KD's scale (see the module docstring).
        self.objective_weights = class_weights / class_weights[self.teacher_classes].mean()
        shares = torch.bincount(self.teacher_classes, minlength=self.num_classes).double() / len(self.train)
        self.weighted_sampling = config.class_balanced and config.class_weighting == "sampling"
        self.weighting_starts_at_epoch = self._weighting_start()
        if self.weighted_sampling:
            # Samples are drawn in proportion to their class weight, so the loss weights are 1 and the classes'
            # shares of the drawn stream are w0_k * pi_k (normalised): the tracker's terms stay w0_k * pi_k * mu_k.
            shares = shares * self.objective_weights.double()
            shares = shares / shares.sum()
            self.loss_weights = torch.ones_like(self.objective_weights)
        else:
            self.loss_weights = self.objective_weights
        self.class_loss_tracker = ClassLossTracker(shares, config.robust_smoothing)
        self.train_labels = self.train.labels_or_ignore
        self.has_train_labels = bool((self.train_labels != IGNORE_LABEL).any())
        if self.train_labels.numel() and int(self.train_labels.max()) >= self.num_classes:
            raise ValueError(f"training labels must be < the teacher's class count {self.num_classes}")
        parameters = list(self.student.parameters())
        self.noise_adaptation = (  # DFND's optional noise-adaptation matrix, learned with the student
            NoiseAdaptation(self.num_classes) if config.noise_adaptation_weight > 0 else None
        )
        if self.noise_adaptation is not None:
            parameters += list(self.noise_adaptation.parameters())
        self.weight_average = (
            WeightAverage(self.student, max(1.0, config.weight_average_epochs * self.steps_per_epoch))
            if config.weight_average_epochs > 0
            else None
        )
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                parameters,
                lr=config.lr,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                nesterov=config.nesterov,
            )
        else:
            self.optimizer = torch.optim.Adam(
                parameters, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
            )

    def _weighting_start(self) -> int:
        """The first epoch trained with the class weights (``class_weight_delay``; never without class balance)."""
        config = self.config
        if not config.class_balanced:
            return config.epochs
        return math.floor(config.class_weight_delay * config.epochs + 1e-9)

    def _learning_rate(self, step: int) -> float:
        return learning_rate(self.config, step, self.total_steps)

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Sample order, crop offsets and flips of ``epoch``: a function of (seed, epoch) only."""
        seed = int(np.random.SeedSequence([self.config.seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.train), generator=generator)
        if self.weighted_sampling and epoch >= self.weighting_starts_at_epoch:
            order = class_weighted_order(self.teacher_classes, self.objective_weights, generator)
        if not self.config.augment:
            return order, None, None
        span = 2 * self.config.augment_padding + 1
        offsets = torch.randint(0, span, (len(self.train), 2), generator=generator)
        flips = torch.rand(len(self.train), generator=generator) < 0.5
        if not self.config.augment_flip:
            flips = torch.zeros_like(flips)
        return order, offsets, flips

    def _augment(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        pad = self.config.augment_padding
        if pad > 0:
            padded = F.pad(images, (pad, pad, pad, pad))
            height, width = images.shape[-2:]
            rows = (offsets[:, 0:1] + torch.arange(height))[:, None, :, None]  # [n, 1, H, 1]
            cols = (offsets[:, 1:2] + torch.arange(width))[:, None, None, :]  # [n, 1, 1, W]
            batch = torch.arange(len(images))[:, None, None, None]
            channels = torch.arange(images.shape[1])[None, :, None, None]
            images = padded[batch, channels, rows, cols]
        return torch.where(flips[:, None, None, None], images.flip(-1), images)

    def _train(self) -> None:
        self._fit_schedule_to_budget()  # may give the config fewer epochs (budget_fit)
        config = self.config
        binary_layers = [module for module in self.student.modules() if isinstance(module, BinaryConv2d)]
        binary_weights_from = math.floor(config.binary_weight_delay * config.epochs + 1e-9)
        while self.epoch < config.epochs:
            order, offsets, flips = self._epoch_plan(self.epoch)
            # Progressive binarisation: latent float weights in the first epochs; validation always sees binary ones.
            for module in binary_layers:
                module.binarize_weights = self.epoch >= binary_weights_from
            if self.step_in_epoch == 0:
                self.epoch_loss_sum = 0.0
                self.epoch_started_elapsed = self._elapsed()
            while self.step_in_epoch < self.steps_per_epoch:
                self._check_stop()
                start = self.step_in_epoch * self.batch_size
                positions = order[start : start + self.batch_size]
                # Augmentation is drawn per slot of the epoch's order (a sample drawn twice is augmented twice).
                slots = slice(start, start + self.batch_size)
                batch_offsets = None if offsets is None else offsets[slots]
                batch_flips = None if flips is None else flips[slots]
                self._train_step(positions, batch_offsets, batch_flips)
                self._emit("train")
                self._maybe_checkpoint()
            for module in binary_layers:
                module.binarize_weights = True
            epoch_s = self._elapsed() - self.epoch_started_elapsed
            train_loss = self.epoch_loss_sum / max(self.steps_per_epoch, 1)
            self.epoch += 1
            self.step_in_epoch = 0
            self._validate(
                epoch=self.epoch, train_loss=train_loss, steps=self.steps_per_epoch, partial=False, epoch_s=epoch_s
            )
            if self.epoch < config.epochs:  # after the last epoch, execute() writes the final checkpoint
                self._save_checkpoint(finished=False, stopped_reason=None)

    def _train_step(self, positions: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None) -> None:
        config = self.config
        started = time.perf_counter()
        images = self.train.images[positions]
        if offsets is not None and flips is not None:
            images = self._augment(images, offsets, flips)
        if config.teacher_on_augmented and config.augment:
            with torch.no_grad():
                teacher_logits = self.teacher(images.to(module_device(self.teacher, images.device)))
            teacher_logits = teacher_logits.detach().float().cpu()
            classes = teacher_logits.argmax(dim=1)
        else:
            teacher_logits = self.train_logits[positions]
            classes = self.teacher_classes[positions]
        labels = self.train_labels[positions]
        lr = self._learning_rate(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.student.train()
        student_logits = self.student(images.to(self.device)).float().cpu()
        loss = torch.zeros(())
        if config.kd_weight > 0:
            per_sample = distillation_loss(student_logits, teacher_logits, config.temperature)
            if config.class_balanced and self.epoch >= self.weighting_starts_at_epoch:
                radius = config.robust_radius if config.robust else 0.0
                kd = class_weighted_loss(
                    per_sample, classes, self.loss_weights, radius, self.class_loss_tracker, config.robust_sensitivity
                ).loss
            else:
                kd = per_sample.mean()
            loss = loss + config.kd_weight * kd
        if config.ce_weight > 0 and self.has_train_labels and bool((labels != IGNORE_LABEL).any()):
            loss = loss + config.ce_weight * labelled_cross_entropy(student_logits, labels).sum() / len(positions)
        if self.noise_adaptation is not None:
            noisy = F.nll_loss(self.noise_adaptation(student_logits), classes)
            loss = loss + config.noise_adaptation_weight * noisy
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the distillation loss became {float(loss)} at step {self.global_step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.has_adder_layers:
            scale_adder_gradients_(self.student, config.adder_eta)  # AdderNet's adaptive learning rate
        self.optimizer.step()
        if self.weight_average is not None:
            self.weight_average.update(self.student)
        self.epoch_loss_sum += float(loss.detach())
        self.step_in_epoch += 1
        self.global_step += 1
        self.steps_this_run += 1
        spent = time.perf_counter() - started
        self.train_s += spent
        self.train_s_this_run += spent
