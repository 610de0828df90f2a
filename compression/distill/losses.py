"""Losses of robust knowledge distillation: the KD term, teacher-estimated class weights, and their worst case.

PU compression (Yixing Xu, Yunhe Wang, Hanting Chen, Kai Han, Chunjing Xu, Dacheng Tao, Chang Xu,
"Positive-Unlabeled Compression on the Cloud", NeurIPS 2019, arXiv:1909.09757) distils the student on a transfer
set made of a few labelled positives and many images mined from an unlabelled pool. The mined part has whatever
class mix mining produced, so the paper's *robust knowledge distillation* weights every sample by a class weight
estimated from the teacher's predictions and, because that estimate is itself uncertain, trains the student
against the worst weights in a neighbourhood of the estimate (a min-max problem). The paper motivates the min-max;
the shape of the neighbourhood and the solver below are our choices, documented here.

Distillation term (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531)
    For student logits ``s_i`` and teacher logits ``t_i`` at temperature ``T``, per sample::

        kd_i = T^2 * KL(softmax(t_i / T) || softmax(s_i / T))
             = T^2 * sum_k p_k (log p_k - log q_k),   p = softmax(t_i / T), q = softmax(s_i / T)

    The ``T^2`` keeps the gradient magnitude independent of ``T`` (Hinton et al., section 2). The loss is returned
    per sample (:func:`distillation_loss`) so that it can be weighted.

Class weights (:func:`teacher_class_weights`)
    With ``P[i, k] = p_teacher(k | x_i)`` on the ``N`` transfer images (temperature 1), the predicted mass of class
    ``k`` is ``m_k = sum_i P[i, k]`` and its weight ``w0_k = (1 / m_k) * K / sum_j (1 / m_j)``, so that
    ``sum_k w0_k = K`` (``K`` classes). Sample ``i`` is weighted by ``w0[c_i]``, ``c_i = argmax_k P[i, k]``.
    A class the teacher (almost) never predicts would get an unbounded weight, so ``m_k`` is floored at
    ``floor * N / K`` (``floor`` = a share of the balanced mass, default 0.1): no class weighs more than
    ``1 / floor`` times a class of balanced size.

Per-class terms
    For a batch of ``n`` samples with per-sample losses ``l_i`` the class-weighted loss is
    ``L(w) = (1 / n) sum_i w[c_i] l_i = sum_k w_k r_k`` with ``r_k = (1 / n) sum_{i: c_i = k} l_i``.
    Write ``u = w / w0`` for the factor by which each nominal weight is perturbed; then
    ``L(w0 * u) = sum_k u_k b_k`` with ``b_k = w0_k r_k``, the class's term in the nominal loss. Because ``w0``
    undoes the (estimated) class frequencies, ``b_k`` is roughly proportional to the mean loss of class ``k``: the
    adversary below reacts to how badly the student does on a class, not to how many samples the class has.

Worst-case weights (:func:`worst_case_class_factors`)
    Uncertainty set: the factors of the ``P`` classes present in the batch (absent classes carry no loss and
    keep ``u = 1``) form a chi-square ball around the nominal weights::

        U_rho = { u in R^P : u >= 0, (1/P) sum_k u_k = 1, (1/(2P)) sum_k (u_k - 1)^2 <= rho }

    i.e. ``p = u / P`` ranges over the probability vectors with chi-square divergence
    ``D_f(p || uniform) <= rho``, ``f(t) = (t - 1)^2 / 2`` -- the set of Namkoong and Duchi, "Stochastic Gradient
    Methods for Distributionally Robust Optimization with f-divergences", NeurIPS 2016; over groups (here classes)
    instead of samples as in Sagawa et al., "Distributionally Robust Neural Networks for Group Shifts",
    ICLR 2020. The factors average to one and their root-mean-square deviation is at most ``sqrt(2 rho)``: with
    the trainer's default ``rho = 0.02`` each class weight may be off by about 20 % RMS (``rho = 0.1``: 45 %, the
    order of error of a class mix estimated from teacher predictions on mined data, was measured to make short
    runs unstable; see :mod:`compression.distill.config`). ``rho = 0`` gives the nominal weights.

    Robust loss: ``L_rob = max_{u in U_rho} sum_k u_k b_k``. Since ``u = 1`` is in the set, ``L_rob >= L(w0)``.
    By Danskin's theorem the student's gradient of ``L_rob`` is the gradient of ``sum_k u*_k b_k`` with the
    maximiser ``u*`` held fixed, so each training step solves the inner problem on detached per-class terms and
    back-propagates through ``b`` only.

    Solver (exact, per step). The KKT conditions give ``u_k = max(0, 1 + (b_k - nu) / lambda)``, i.e.
    ``u(t) = Proj_{P * simplex}(1 + t * b)`` with ``t = 1 / lambda``, the Euclidean projection onto
    ``{u >= 0, sum u = P}`` (sort-based, Held, Wolfe and Crowder 1974; Duchi et al., ICML 2008):

    * no component clipped: closed form ``u = 1 + sqrt(2 P rho) (b - mean b) / ||b - mean b||``;
    * otherwise ``||u(t) - 1||`` grows monotonically with ``t`` and ``t`` is found by bisection (to float64
      precision) so that the ball constraint is tight; if even the vertex (all weight spread evenly over the
      classes tied for the largest ``b``) lies inside the ball, the vertex is the answer.

    The maximiser puts the largest factor on the class with the largest ``b_k``, and that factor exceeds 1
    whenever the ``b_k`` differ: the adversary moves towards the classes the student currently does worst on.

Penalised worst case (``sensitivity``)
    The maximum of a linear function over a ball lies on its edge whatever the size of the differences between
    the ``b_k``: two classes whose losses differ by 1 % swap between factors of about 0.5 and 1.9 as soon as
    their order flips. Measured on the benchmark task (ghost student, imbalanced set, 2 epochs) that swinging
    made the outcome depend on chance: minority accuracy 71-89 % over three seeds. The penalised form of the
    same set (the chi-square-penalised DRO of Levy, Carmon, Duchi and Sidford, "Large-Scale Methods for
    Distributionally Robust Optimization", NeurIPS 2020, with the penalty scaled by the mean class term so that
    it does not depend on the loss's units)::

        max_{u in U_rho}  sum_k u_k b_k  -  (mean_k b_k / (2 eta)) * ||u - 1||^2

    has the solution ``u = Proj(1 + (eta / mean b) * (b - mean b))`` (the same projection as above) as long as
    that lies inside the ball, i.e. ``u_k = 1 + eta * (b_k - mean b) / mean b``: a class whose loss is 20 %
    above the mean gets 1.2 at ``eta = 1``, classes doing equally well keep their nominal weights, and the ball
    still caps the deviation. Since ``||Proj(1 + t b) - 1||`` grows with ``t``, the ball binds exactly when the
    penalised point lies outside it, and then the answer is the constrained maximiser.

Which class terms the adversary sees (:class:`ClassLossTracker`)
    The min-max is over the whole transfer set: ``max_u sum_k u_k B_k`` with ``B_k = w0_k * pi_k * mu_k``,
    ``pi_k`` the share of the transfer set the teacher assigns to class ``k`` (known exactly) and ``mu_k`` the
    student's current mean loss on those samples. One batch of 128 holds some 25 samples per class, and solving the
    maximum on the batch's own terms makes ``u*`` jump from step to step; measured on the benchmark task (ghost
    student, 10,000 images, 2 epochs, lr 0.1), that per-batch adversary cost 11 points of test accuracy against
    nominal weights while the smoothed one below lost none. So ``mu_k`` is an exponential moving average of the
    batches' per-class mean losses (``smoothing`` = 0.9 by default: about the last ten batches), the maximiser
    ``u*`` is solved on ``B`` (over the classes present in the transfer set and seen so far), and the step
    minimises ``sum_k u*_k b_k`` on the batch. This is the stochastic scheme of online group DRO (Sagawa et al.
    2020 track group losses across steps with exponentiated-gradient weights); ``smoothing = 0`` gives the
    per-batch maximiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_CLASS_WEIGHT_FLOOR",
    "DEFAULT_ROBUST_SMOOTHING",
    "IGNORE_LABEL",
    "ClassLossTracker",
    "WeightedLoss",
    "class_terms",
    "class_weighted_loss",
    "distillation_loss",
    "labelled_cross_entropy",
    "teacher_class_weights",
    "worst_case_class_factors",
]

IGNORE_LABEL = -1
"""Label value of a sample without a label (e.g. an image mined from the pool)."""

DEFAULT_CLASS_WEIGHT_FLOOR = 0.1
"""A class's predicted mass is floored at this share of the balanced mass ``N / K`` (see the module docstring)."""

DEFAULT_ROBUST_SMOOTHING = 0.9
"""Decay of the moving average of per-class losses the adversary maximises over (see :class:`ClassLossTracker`)."""

_BISECTION_STEPS = 80


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample KD loss ``T^2 * KL(softmax(t/T) || softmax(s/T))``, shape ``[N]`` (Hinton et al. 2015).

    The teacher logits are targets: no gradient flows into them.
    """
    _check_logits(student_logits, teacher_logits)
    if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1) * (temperature * temperature)


def labelled_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against ``labels`` (shape ``[N]``), 0 where the label is :data:`IGNORE_LABEL`."""
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match logits {tuple(student_logits.shape)}")
    return F.cross_entropy(student_logits.float(), labels.long(), reduction="none", ignore_index=IGNORE_LABEL)


def teacher_class_weights(
    teacher_probabilities: torch.Tensor, floor: float = DEFAULT_CLASS_WEIGHT_FLOOR
) -> torch.Tensor:
    """Class weights ``w_k ∝ 1 / sum_i p_teacher(k | x_i)``, normalised to sum to the class count ``K``.

    ``teacher_probabilities`` is ``[N, K]`` (rows sum to 1). Each class's mass is floored at ``floor * N / K``
    (``0 < floor <= 1``), which bounds a class's weight at ``1 / floor`` times that of a class of balanced size.
    Returns a float32 tensor ``[K]``.
    """
    if teacher_probabilities.dim() != 2 or teacher_probabilities.shape[0] == 0:
        raise ValueError(f"teacher probabilities must be [N, K] with N > 0, got {tuple(teacher_probabilities.shape)}")
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor!r}")
    samples, classes = teacher_probabilities.shape
    mass = teacher_probabilities.double().sum(dim=0).clamp_min(floor * samples / classes)
    inverse = mass.reciprocal()
    return (inverse * (classes / inverse.sum())).float()


def class_terms(sample_losses: torch.Tensor, sample_classes: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """The per-class terms ``b_k = w_k / n * sum_{i: c_i = k} l_i`` of the weighted loss, shape ``[K]``.

    Their sum is the class-weighted mean ``(1/n) sum_i w[c_i] l_i``. Differentiable in ``sample_losses``.
    """
    if sample_losses.dim() != 1 or sample_classes.shape != sample_losses.shape:
        raise ValueError("sample_losses and sample_classes must both be [n]")
    sums = torch.zeros(class_weights.numel(), dtype=sample_losses.dtype, device=sample_losses.device)
    sums = sums.index_add(0, sample_classes.long(), sample_losses)
    return sums * class_weights.to(sample_losses) / max(sample_losses.numel(), 1)


def worst_case_class_factors(
    class_losses: torch.Tensor,
    radius: float,
    present: torch.Tensor | None = None,
    sensitivity: float | None = None,
) -> torch.Tensor:
    """The worst-case factors ``u*`` over the chi-square ball ``U_radius`` (see the module docstring).

    ``class_losses`` are the per-class terms ``b`` (``[K]``, detached); ``present`` (bool ``[K]``, default: all)
    selects the classes the ball is over; the others keep factor 1. With ``sensitivity=None`` ``u*`` maximises
    ``sum_k u_k b_k`` over the ball (it always lies on the ball's edge); with a sensitivity ``eta > 0`` it maximises
    the penalised ``sum_k u_k b_k - (mean(b) / (2 eta)) ||u - 1||^2`` over the ball, so that away from the edge
    ``u*_k = 1 + eta (b_k - mean b) / mean b``. Returns float32 ``[K]``: non-negative, mean 1 over the present
    classes, ``(1/(2P)) * ||u - 1||^2 <= radius``.
    """
    if class_losses.dim() != 1:
        raise ValueError(f"class_losses must be [K], got {tuple(class_losses.shape)}")
    if not isinstance(radius, int | float) or isinstance(radius, bool) or not radius >= 0 or math.isinf(radius):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    if sensitivity is not None and (
        not isinstance(sensitivity, int | float) or isinstance(sensitivity, bool) or not 0 < sensitivity < math.inf
    ):
        raise ValueError(f"sensitivity must be a finite number > 0 or None, got {sensitivity!r}")
    factors = torch.ones(class_losses.numel(), dtype=torch.float64)
    mask = torch.ones_like(factors, dtype=torch.bool) if present is None else present.detach().cpu().bool()
    if mask.shape != factors.shape:
        raise ValueError("present must have the shape of class_losses")
    losses = class_losses.detach().cpu().double()[mask]
    if losses.numel() > 1 and radius > 0:
        if not torch.isfinite(losses).all():
            raise ValueError("class losses must be finite")
        factors[mask] = _chi_square_maximiser(losses, radius, sensitivity)
    return factors.float().to(class_losses.device)


def _chi_square_maximiser(losses: torch.Tensor, radius: float, sensitivity: float | None = None) -> torch.Tensor:
    """``argmax { u . losses - penalty : u >= 0, sum u = P, ||u - 1||^2 <= 2 P radius }`` (float64,
    ``P = losses.numel()``; ``penalty = mean(losses) / (2 sensitivity) ||u - 1||^2``, none if ``sensitivity`` is
    None)."""
    count = losses.numel()
    budget = 2.0 * count * radius  # bound on ||u - 1||^2
    centred = losses - losses.mean()
    spread = torch.linalg.vector_norm(centred)
    scale = losses.abs().max()
    if spread <= 1e-12 * scale or spread == 0:
        return torch.ones_like(losses)  # all classes equal: every u in the set gives the same loss
    if sensitivity is not None:
        # The penalised maximiser is Proj(1 + t * losses) with t = sensitivity / mean(losses); the path t -> Proj(...)
        # leaves the ball only once, so if it is still inside at that t it is the answer, else the ball binds.
        mean = float(losses.mean())
        if mean <= 0:
            return torch.ones_like(losses)
        penalised = _project_onto_scaled_simplex(1.0 + (sensitivity / mean) * centred, count)
        if ((penalised - 1.0) ** 2).sum() <= budget:
            return penalised
    unclipped = 1.0 + centred * (math.sqrt(budget) / spread)
    if unclipped.min() >= 0:
        return unclipped
    # The vertex: all weight spread over the classes tied for the largest loss (the linear maximum on the simplex).
    top = losses >= losses.max() - 1e-12 * scale
    vertex = torch.where(top, count / top.sum().double(), torch.zeros_like(losses))
    if ((vertex - 1.0) ** 2).sum() <= budget:
        return vertex
    below_top = losses[~top]
    gap = losses.max() - below_top.max()
    low, high = 0.0, 2.0 * count / float(gap)  # at t = high the projection of 1 + t * losses is the vertex
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if ((_project_onto_scaled_simplex(1.0 + middle * losses, count) - 1.0) ** 2).sum() > budget:
            high = middle
        else:
            low = middle
    return _project_onto_scaled_simplex(1.0 + low * losses, count)


def _project_onto_scaled_simplex(values: torch.Tensor, total: float) -> torch.Tensor:
    """Euclidean projection of ``values`` onto ``{u >= 0, sum u = total}`` (sort-based; Duchi et al. 2008)."""
    ordered = torch.sort(values, descending=True).values
    excess = torch.cumsum(ordered, dim=0) - total
    ranks = torch.arange(1, values.numel() + 1, dtype=values.dtype)
    support = int((ordered - excess / ranks > 0).nonzero().max())
    threshold = excess[support] / (support + 1)
    return (values - threshold).clamp_min(0.0)


class ClassLossTracker:
    """Moving averages of the student's mean loss per class, for the adversary of :func:`class_weighted_loss`.

    ``class_shares`` (``[K]``, summing to 1) is the share of the transfer set the teacher assigns to each class;
    ``smoothing`` in [0, 1) is the decay of the average (0: the latest batch only). :meth:`terms` gives
    ``B_k = w_k * pi_k * mu_k`` (see the module docstring). The state (:meth:`state_dict`) is float64 tensors, so a
    checkpointed run resumes bitwise.
    """

    def __init__(self, class_shares: torch.Tensor, smoothing: float = DEFAULT_ROBUST_SMOOTHING) -> None:
        if class_shares.dim() != 1 or class_shares.numel() == 0 or bool((class_shares < 0).any()):
            raise ValueError("class_shares must be a non-empty [K] tensor of non-negative shares")
        if not isinstance(smoothing, int | float) or isinstance(smoothing, bool) or not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.class_shares = class_shares.detach().double().cpu()
        self.smoothing = float(smoothing)
        self.means = torch.zeros_like(self.class_shares)
        self.seen = torch.zeros(self.class_shares.numel(), dtype=torch.bool)

    @property
    def present(self) -> torch.Tensor:
        """Classes the adversary may move weight between: in the transfer set and seen in a batch so far."""
        return self.seen & (self.class_shares > 0)

    def update(self, sample_losses: torch.Tensor, sample_classes: torch.Tensor) -> None:
        """Fold one batch's per-sample losses into the averages of the classes it contains."""
        classes = sample_classes.detach().long().cpu()
        losses = sample_losses.detach().double().cpu()
        counts = torch.bincount(classes, minlength=self.means.numel()).double()
        if counts.numel() != self.means.numel():
            raise ValueError(f"sample classes must be < {self.means.numel()}")
        sums = torch.zeros_like(self.means).index_add(0, classes, losses)
        in_batch = counts > 0
        batch_means = sums[in_batch] / counts[in_batch]
        previous = torch.where(self.seen[in_batch], self.means[in_batch], batch_means)
        self.means[in_batch] = self.smoothing * previous + (1.0 - self.smoothing) * batch_means
        self.seen |= in_batch

    def terms(self, class_weights: torch.Tensor) -> torch.Tensor:
        """``B_k = w_k * pi_k * mu_k`` (float64 ``[K]``; 0 for classes not seen yet)."""
        return class_weights.detach().double().cpu() * self.class_shares * self.means

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"means": self.means.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["means"].shape != self.means.shape:
            raise ValueError("the saved class-loss state has a different class count")
        self.means = state["means"].double().clone()
        self.seen = state["seen"].bool().clone()


@dataclass(frozen=True)
class WeightedLoss:
    """A class-weighted loss of one batch: the value to minimise and what went into it."""

    loss: torch.Tensor
    """Scalar, differentiable: ``sum_k u_k b_k`` (robust) or ``sum_k b_k`` (nominal)."""
    nominal: torch.Tensor
    """Scalar, detached: the loss at the nominal weights, ``sum_k b_k``."""
    class_losses: torch.Tensor
    """``[K]``, detached: the per-class terms ``b_k`` at the nominal weights."""
    class_weights: torch.Tensor
    """``[K]``: the weights used, ``w0 * u*`` (robust) or ``w0`` (nominal)."""


def class_weighted_loss(
    sample_losses: torch.Tensor,
    sample_classes: torch.Tensor,
    class_weights: torch.Tensor,
    robust_radius: float = 0.0,
    tracker: ClassLossTracker | None = None,
    sensitivity: float | None = None,
) -> WeightedLoss:
    """Class-weighted mean of ``sample_losses`` (``[n]``), at its worst case over ``U_robust_radius``.

    ``sample_classes`` (``[n]``) is each sample's class (the teacher's argmax), ``class_weights`` the nominal
    weights ``w0`` (``[K]``). With ``robust_radius == 0`` this is the nominal weighted loss. With a ``tracker``
    the worst case is solved on its smoothed transfer-set terms (updated with this batch first), else on the
    batch's own terms over the classes present in the batch. ``sensitivity`` selects the penalised worst case
    (see :func:`worst_case_class_factors`).
    """
    terms = class_terms(sample_losses, sample_classes, class_weights)
    detached = terms.detach()
    if robust_radius > 0:
        if tracker is not None:
            tracker.update(sample_losses.detach(), sample_classes)
            adversary_terms, present = tracker.terms(class_weights), tracker.present
        else:
            present = torch.zeros(class_weights.numel(), dtype=torch.bool, device=sample_classes.device)
            present[sample_classes.long()] = True
            adversary_terms = detached
        factors = worst_case_class_factors(adversary_terms.to(detached), robust_radius, present, sensitivity).to(terms)
        loss = (factors * terms).sum()
        weights = class_weights.to(terms) * factors
    else:
        loss = terms.sum()
        weights = class_weights.to(terms)
    return WeightedLoss(loss=loss, nominal=detached.sum(), class_losses=detached, class_weights=weights.detach())


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be [N, K] of the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
