"""``DistillConfig``: every setting of a distillation run, validated, JSON round-trippable; per-family defaults.

Per-family defaults (:func:`default_config`)
--------------------------------------------
``plain`` and ``ghost``
    SGD, momentum 0.9, lr 0.1, cosine decay to 0, weight decay 5e-4: the usual CIFAR recipe for ResNets and their
    Ghost variants (SGD with momentum 0.9 and lr 0.1 as in He et al., "Deep Residual Learning for Image
    Recognition", CVPR 2016, arXiv:1512.03385; the cosine decay of Loshchilov and Hutter, "SGDR", ICLR 2017,
    arXiv:1608.03983; 5e-4 is the weight decay commonly used for small CIFAR networks).
``adder``
    The same SGD recipe (lr 0.1, momentum 0.9, weight decay 5e-4, cosine), as in the AdderNet paper's CIFAR
    experiments (Chen et al., CVPR 2020, arXiv:1912.13200), plus the paper's adaptive learning rate: the trainer
    calls :func:`compression.layers.scale_adder_gradients_` with ``adder_eta`` (default
    :data:`compression.layers.adder.DEFAULT_ETA`) between ``backward()`` and ``optimizer.step()``.
``binary``
    Adam, no weight decay, linear decay to 0: common practice for binary networks (e.g. the Adam and linear-decay
    training of ReActNet, Liu et al., ECCV 2020, arXiv:2003.03488). Their latent weights matter only through their
    signs; weight decay would drive them towards zero, where the signs flip most easily. The learning rate is 2e-3,
    twice ReActNet's 1e-3: the short schedules a service affords gain from it (benchmark task, all 30,000 images,
    8 epochs, seed 0: 92.60 % against 92.08 %; on 6,000 images and 4 epochs +2.3 points over two seeds;
    docs/results.md).

All families: a linear learning-rate warm-up over the first 5 % of the steps (Goyal et al., arXiv:1706.02677; it
matters most for the short runs CPUs allow, see :mod:`compression.distill.schedule`), temperature 4 and a small
cross-entropy weight (0.1 against 1.0 for KD) on the labelled samples --
the KD settings of the CIFAR distillation benchmark of Tian et al., "Contrastive Representation Distillation",
ICLR 2020, arXiv:1910.10699 -- class-balanced robust KD (:mod:`compression.distill.losses`: the teacher-estimated
class weights applied by stratified sampling, :mod:`compression.distill.sampling`; chi-square radius 0.02; the
adversary solved on per-class losses averaged with decay 0.9), and random horizontal flips against the teacher's
cached outputs. Random crops with zero padding (``augment_padding=4`` is the CIFAR augmentation of He et al. 2016)
are off by default: against cached teacher outputs they need a teacher that was trained with the same crops (see
:mod:`compression.distill.trainer`), else set ``teacher_on_augmented``.

The robust-KD defaults were chosen on the benchmark task (``python -m bench.bench_distill``, imbalance experiment:
ghost student, two classes cut to a tenth, 2 epochs, 3 seeds each; the figures are the minority classes' mean test
accuracy): plain KD 81.2 %; weights on the loss 82.0 % (one run) and 72.4-75.1 % with the worst case (a minority
sample weighs ~10x, and its gradient noise dominates a short schedule); weights by sampling 84.0-87.1 %; sampling
plus the worst case at radius 0.1 swung between 71.2 and 89.3 % (the maximiser jumps across the ball's edge, see
the losses module), with the penalised worst case (``robust_sensitivity=1``) 87.5-89.7 %, and at radius 0.02
89.7-89.9 % (overall 91.9-92.0 % against plain KD's 89.0-89.8 %). Deferred re-weighting (``class_weight_delay``)
is available but off: one run at 0.5 gave 88.4 %, no better than the default.

Short-schedule options for binary and adder students (:mod:`compression.distill.stages`): ``float_stage_epochs``
trains a full-precision twin of the student first (two-stage training, as most binary-network work does; for adder
students a warm start from a trained float network) and ``binary_weight_delay`` binarises the activations before the
weights (progressive binarisation). The adder family's default is one float epoch: on the benchmark task (all 30,000
images, teacher 95.06 %, 3 seeds) one float + one adder epoch gave 89.19 % (88.20-90.10) against 85.19 %
(82.48-88.20) for two adder epochs from scratch, never worse on a seed, in two thirds of the time (docs/results.md).
For binary students two-stage training gave no gain at seed 0 (87.04 % for 1 float + 2 binary epochs against 88.02 %
for 3 binary epochs), and neither did progressive binarisation over 7 epochs (89.54 % with ``binary_weight_delay=0.5``
against 90.96 % for 7 fully binary epochs; both measured before the full-precision residual stream and lr 2e-3), so
both stay off; the screening command is
``python -m bench.bench_distill_recipes``.

``qnn4`` and ``qnn2`` (LSQ quantization-aware training, Esser et al., arXiv:1902.08153) keep the plain SGD recipe
and train from scratch: on the benchmark task 5 epochs of 4-bit training are 0.42 points below the teacher (3 seeds,
94.64-94.74 %), while a float warm start (``float_stage_epochs``) lost 4.5 points at 3 epochs (docs/results.md).

``epochs`` (default 200, a common CIFAR schedule length) sets the length of the learning-rate schedule. The time
budget is a safety net that returns the best student so far (by the validation metric); a run stopped early by it
has not finished its schedule. ``fit_schedule_to_budget`` shortens the schedule to the budget instead; measured on
the benchmark, the cut schedule (mostly its warm-up, the best state kept) did better (docs/results.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from compression.distill.losses import DEFAULT_CLASS_WEIGHT_FLOOR, DEFAULT_ROBUST_SMOOTHING
from compression.layers.adder import DEFAULT_ETA

__all__ = [
    "CLASS_WEIGHTINGS",
    "OPTIMIZERS",
    "SCHEDULES",
    "DistillConfig",
    "default_config",
    "float_stage_config",
]

OptimizerName = Literal["sgd", "adam"]
WeightingName = Literal["loss", "sampling"]
ScheduleName = Literal["cosine", "onecycle", "step", "linear", "constant"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "step", "linear", "constant")
CLASS_WEIGHTINGS: tuple[str, ...] = ("loss", "sampling")


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one distillation run (see :func:`compression.distill.distill`).

    Every field is a plain JSON value; :meth:`to_dict` / :meth:`from_dict` round-trip through JSON, and
    :meth:`from_dict` rejects unknown fields. Construction validates every field (ValueError naming it).
    """

    epochs: int = 200
    """Length of the schedule, in passes over the transfer set."""
    batch_size: int = 128
    optimizer: OptimizerName = "sgd"
    lr: float = 0.1
    """Peak learning rate."""
    weight_decay: float = 5e-4
    momentum: float = 0.9
    """SGD momentum; Adam's beta1 (also the value onecycle cycles around)."""
    nesterov: bool = False
    schedule: ScheduleName = "cosine"
    """Per-step learning rate: cosine to 0, onecycle (Smith and Topin 2019), step (x0.1 at 50 % and 75 %),
    linear to 0, or constant."""
    warmup_fraction: float = 0.05
    """Share of the steps over which the learning rate rises linearly from ``lr / steps`` to ``lr`` before the
    schedule starts (Goyal et al., arXiv:1706.02677); ignored by ``onecycle``, which has its own warm-up."""
    temperature: float = 4.0
    kd_weight: float = 1.0
    ce_weight: float = 0.1
    """Weight of the cross-entropy on labelled samples (summed over them, divided by the batch size)."""
    noise_adaptation_weight: float = 0.0
    """DFND (Chen et al., CVPR 2021): weight of the cross-entropy against the teacher's hard labels through a learned
    noise-adaptation matrix (:mod:`compression.distill.noise_adaptation`); 0 turns it off."""
    class_balanced: bool = True
    """Weight samples by the teacher-estimated class weights (see :mod:`compression.distill.losses`)."""
    class_weight_floor: float = DEFAULT_CLASS_WEIGHT_FLOOR
    class_weighting: WeightingName = "sampling"
    """How the class weights act: ``loss`` multiplies each sample's loss by its class weight; ``sampling`` fills each
    epoch with a stratified draw where each class's share is proportional to its weight times its size (the same
    expected objective, see :mod:`compression.distill.sampling`), and the worst-case factors multiply the loss."""
    class_weight_delay: float = 0.0
    """Share of the epochs trained with the plain mean KD loss and uniform order before the class weights (and the
    worst case) apply: deferred re-weighting (Cao et al., NeurIPS 2019, arXiv:1906.07413)."""
    robust: bool = True
    """Minimise the worst case over the class-weight uncertainty set (needs ``class_balanced``)."""
    robust_radius: float = 0.02
    """Chi-square radius ``rho`` of the uncertainty set; weights may deviate by ``sqrt(2 rho)`` RMS (relative):
    0.2 at the default."""
    robust_sensitivity: float | None = None
    """How far the worst case moves per unit of relative excess class loss: the factor of class ``k`` is
    ``1 + eta (B_k - mean B) / mean B`` until the ball's edge (a chi-square-penalised worst case); None puts it
    on the edge of the ball at every step (see :func:`compression.distill.losses.worst_case_class_factors`)."""
    robust_smoothing: float = DEFAULT_ROBUST_SMOOTHING
    """Decay of the moving average of per-class losses the worst case is solved on (0: each batch's own losses;
    see :class:`compression.distill.losses.ClassLossTracker`)."""
    adder_eta: float = DEFAULT_ETA
    """AdderNet's adaptive learning-rate coefficient; used only by students that contain adder layers."""
    float_stage_epochs: int = 0
    """Two-stage training (:mod:`compression.distill.stages`): this many epochs of a full-precision twin of a binary
    or adder student (same shape, ``nn.Conv2d`` layers, the ``plain`` family's optimizer and schedule) before the
    ``epochs`` of the student itself, which starts from the twin's weights. Ignored for students without binary or
    adder layers."""
    binary_weight_delay: float = 0.0
    """Progressive binarisation: share of the student's epochs trained with binary activations but full-precision
    weights before the weights are binarised too (ReActNet's two steps, arXiv:2003.03488)."""
    weight_average_epochs: float = 0.0
    """Validate and return an exponential moving average of the weights (:mod:`compression.distill.weight_average`)
    over about this many recent epochs instead of the last weights; 0 turns it off."""
    augment: bool = True
    """Per-sample augmentation of the student's input: horizontal flip (``augment_flip``) and, if
    ``augment_padding > 0``, a random crop of the zero-padded image back to its size."""
    augment_padding: int = 0
    augment_flip: bool = True
    teacher_on_augmented: bool = False
    """Recompute the teacher on every augmented batch instead of reusing its cached un-augmented outputs."""
    seed: int = 0
    time_budget_s: float | None = None
    """Wall-clock budget of the whole run (teacher outputs, training, validation; summed over resumed runs)."""
    fit_schedule_to_budget: bool = False
    """With ``time_budget_s``: shorten ``epochs``, from timed steps, to what the budget affords, so that the
    learning-rate schedule runs to its end instead of being cut off (:mod:`compression.distill.budget_fit`). Off by
    default: on the benchmark the cut schedule did better (docs/results.md, "A time budget and the schedule")."""
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = 120.0
    """Checkpoint when this many steps / seconds have passed since the last one (and at every epoch end)."""
    eval_batch_size: int = 512
    num_threads: int | None = None
    """``torch.set_num_threads`` for the run (restored afterwards); None leaves it alone."""
    progress_interval_s: float = 0.5
    """Minimum seconds between two progress events of the same stage (stage changes are always reported)."""

    def __post_init__(self) -> None:
        _check_int(self, "epochs", minimum=1)
        _check_int(self, "batch_size", minimum=1)
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_number(self, "lr", positive=True)
        _check_number(self, "weight_decay")
        _check_number(self, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        _check_bool(self, "nesterov")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        _check_choice(self, "schedule", SCHEDULES)
        _check_number(self, "warmup_fraction")
        if self.warmup_fraction >= 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        _check_number(self, "temperature", positive=True)
        _check_number(self, "kd_weight")
        _check_number(self, "ce_weight")
        _check_number(self, "noise_adaptation_weight")
        if self.kd_weight == 0 and self.ce_weight == 0:
            raise ValueError("kd_weight and ce_weight cannot both be 0")
        _check_bool(self, "class_balanced")
        _check_number(self, "class_weight_floor", positive=True)
        if self.class_weight_floor > 1:
            raise ValueError(f"class_weight_floor must be in (0, 1], got {self.class_weight_floor!r}")
        _check_choice(self, "class_weighting", CLASS_WEIGHTINGS)
        _check_number(self, "class_weight_delay")
        if self.class_weight_delay >= 1:
            raise ValueError(f"class_weight_delay must be in [0, 1), got {self.class_weight_delay!r}")
        _check_bool(self, "robust")
        _check_number(self, "robust_radius")
        _check_number(self, "robust_sensitivity", positive=True, optional=True)
        _check_number(self, "robust_smoothing")
        if self.robust_smoothing >= 1:
            raise ValueError(f"robust_smoothing must be in [0, 1), got {self.robust_smoothing!r}")
        if self.robust and not self.class_balanced:
            raise ValueError("robust needs class_balanced (the uncertainty set is around the class weights)")
        _check_number(self, "adder_eta", positive=True)
        _check_int(self, "float_stage_epochs", minimum=0)
        _check_number(self, "binary_weight_delay")
        if self.binary_weight_delay >= 1:
            raise ValueError(f"binary_weight_delay must be in [0, 1), got {self.binary_weight_delay!r}")
        _check_number(self, "weight_average_epochs")
        _check_bool(self, "augment")
        _check_int(self, "augment_padding", minimum=0)
        _check_bool(self, "augment_flip")
        _check_bool(self, "teacher_on_augmented")
        _check_int(self, "seed", minimum=0)
        _check_number(self, "time_budget_s", positive=True, optional=True)
        _check_bool(self, "fit_schedule_to_budget")
        _check_int(self, "checkpoint_every_steps", minimum=1, optional=True)
        _check_number(self, "checkpoint_every_s", positive=True, optional=True)
        _check_int(self, "eval_batch_size", minimum=1)
        _check_int(self, "num_threads", minimum=1, optional=True)
        _check_number(self, "progress_interval_s")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DistillConfig:
        """A config from :meth:`to_dict`'s output (missing fields take their defaults).

        ValueError naming any field that is not a :class:`DistillConfig` field.
        """
        if not isinstance(values, dict):
            raise TypeError(f"expected a dict, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown DistillConfig field(s): {', '.join(map(str, unknown))}")
        return cls(**values)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> DistillConfig:
        """A copy with ``changes`` applied (validated; unknown fields are a ValueError)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ValueError(f"unknown DistillConfig field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "ghost": {},
    "adder": {"float_stage_epochs": 1},  # warm start from a float twin (module docstring)
    "binary": {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "schedule": "linear"},
    "slim": {},  # plain convolutions: the plain recipe
    "qnn4": {},  # LSQ quantization-aware training with SGD, as in the LSQ paper (arXiv:1902.08153)
    "qnn2": {},
}


def float_stage_config(config: DistillConfig) -> DistillConfig:
    """The config of the full-precision twin's stage: ``config``'s distillation settings with the ``plain`` family's
    optimizer, learning rate, weight decay and schedule, and ``float_stage_epochs`` epochs."""
    fields = ("optimizer", "lr", "weight_decay", "momentum", "nesterov")
    plain = {name: getattr(DistillConfig(), name) for name in fields}
    plain.update(_FAMILY_DEFAULTS["plain"])
    plain["schedule"] = DistillConfig().schedule
    return config.replace(
        **plain,
        epochs=config.float_stage_epochs,
        float_stage_epochs=0,
        binary_weight_delay=0.0,
        weight_average_epochs=0.0,
    )


def default_config(family: str, **overrides: Any) -> DistillConfig:
    """The default config of a student family (``plain``, ``ghost``, ``adder``, ``binary``) or of a registered
    architecture name (its family's), with ``overrides`` applied; see the module docstring for the sources."""
    if not isinstance(family, str):
        raise TypeError(f"family must be a string, got {type(family).__name__}")
    key = family.strip().lower()
    if key not in _FAMILY_DEFAULTS:
        from compression.students import resolve_student  # a student name: use its family

        key = resolve_student(key).family
    return DistillConfig().replace(**_FAMILY_DEFAULTS[key]).replace(**overrides)


def _check_int(config: DistillConfig, name: str, *, minimum: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if optional else ''}, got {value!r}")


def _check_number(config: DistillConfig, name: str, *, positive: bool = False, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    valid = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}{' or None' if optional else ''}, got {value!r}")


def _check_bool(config: DistillConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def _check_choice(config: DistillConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
