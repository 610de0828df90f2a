"""The non-negative PU risk (nnPU) and class-prior estimation from PU classifier scores.

PU mining (Xu et al., "Positive-Unlabeled Compression on the Cloud", NeurIPS 2019, arXiv:1909.09757) trains a
classifier ``g`` that tells images of the teacher's task (positives ``P``, the small labelled sample) apart from
everything else in an unlabelled pool ``U``, where the pool is a mixture ``p_u(x) = pi p_p(x) + (1 - pi) p_n(x)``
with class prior ``pi``. The classifier is trained with the non-negative PU risk estimator of Kiryo et al.,
"Positive-Unlabeled Learning with Non-Negative Risk Estimator", NeurIPS 2017 (arXiv:1703.00593):
:func:`nnpu_risk`.

The prior ``pi`` must be known or estimated; :func:`estimate_prior` estimates it from the scores of a classifier
trained to separate ``P`` from ``U`` ("non-traditional" classifier), evaluated on *held-out* positives and
unlabelled examples, with either

- ``"best_bin"`` (default): Best Bin Estimation, Garg et al., "Mixture Proportion Estimation and PU Learning:
  A Modern Approach", NeurIPS 2021 (arXiv:2111.00980), Algorithm 1. Uses only the *ranking* of the scores, so
  the classifier need not be calibrated; or
- ``"elkan_noto"``: Elkan & Noto, "Learning Classifiers from Only Positive and Unlabeled Data", KDD 2008,
  estimator ``e1`` of the label frequency ``c`` and their weighting of unlabelled examples. Needs calibrated
  probabilities ``P(s = 1 | x)``.

The assumptions each method makes are listed in :func:`estimate_prior`.
:func:`pu_mining.pu_classifier.estimate_prior_from_features` trains the P-vs-U classifier and calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "PRIOR_METHODS",
    "NnpuRisk",
    "PriorEstimate",
    "estimate_prior",
    "nnpu_risk",
    "surrogate_loss",
]

Loss = Literal["sigmoid", "logistic"]
PriorMethod = Literal["best_bin", "elkan_noto"]

#: The surrogate losses :func:`surrogate_loss` knows, ``l(z, y)`` for a score ``z`` and a label ``y`` in {+1, -1}.
LOSSES: tuple[str, ...] = ("sigmoid", "logistic")
#: The prior estimators :func:`estimate_prior` knows.
PRIOR_METHODS: tuple[str, ...] = ("best_bin", "elkan_noto")


def _check_scores(scores: object, name: str) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {scores.dtype}")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {tuple(scores.shape)}")
    if scores.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return scores


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_prior(prior: object) -> float:
    value = _check_real(prior, "prior")
    if not 0.0 < value < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {value}")
    return value


def surrogate_loss(scores: torch.Tensor, label: int, loss: Loss = "sigmoid") -> torch.Tensor:
    """Element-wise surrogate loss ``l(z, y)`` of scores ``z`` (logits) for the label ``y`` (+1 or -1).

    - ``"sigmoid"``: ``l(z, y) = sigmoid(-y z)`` (bounded; Kiryo et al.'s default);
    - ``"logistic"``: ``l(z, y) = log(1 + exp(-y z))`` (softplus; unbounded, convex).
    """
    if label not in (1, -1) or isinstance(label, bool):
        raise ValueError(f"label must be +1 or -1, got {label!r}")
    if loss == "sigmoid":
        return torch.sigmoid(-label * scores)
    if loss == "logistic":
        return F.softplus(-label * scores)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


@dataclass(frozen=True)
class NnpuRisk:
    """The parts of the nnPU risk for one batch (see :func:`nnpu_risk`); all are 0-d tensors.

    - ``risk``: the nnPU estimate ``pi R_p^+ + max(0, R_u^- - pi R_p^-)`` (the value to report / validate on);
    - ``positive_risk``: ``pi R_p^+``;
    - ``negative_risk``: ``R_u^- - pi R_p^-``, *not* clamped (it goes negative when the model overfits);
    - ``objective``: what to call ``backward()`` on (Kiryo et al.'s Algorithm 1);
    - ``corrected``: True when ``negative_risk < -beta``, i.e. ``objective = -gamma * negative_risk``.
    """

    risk: torch.Tensor
    positive_risk: torch.Tensor
    negative_risk: torch.Tensor
    objective: torch.Tensor
    corrected: bool


def nnpu_risk(
    scores_positive: torch.Tensor,
    scores_unlabelled: torch.Tensor,
    prior: float,
    loss: Loss = "sigmoid",
    *,
    beta: float = 0.0,
    gamma: float = 1.0,
) -> NnpuRisk:
    """The non-negative PU risk of Kiryo et al. (NeurIPS 2017, arXiv:1703.00593) for one batch.

    With scores (logits) ``g(x)`` of the positives ``x_p`` and unlabelled examples ``x_u``, a surrogate loss
    ``l(z, y)`` (:func:`surrogate_loss`; default the sigmoid loss ``sigmoid(-y z)``) and the class prior ``pi``
    of positives in the unlabelled data::

        R_p^+ = mean_p l(g(x_p), +1)        R_p^- = mean_p l(g(x_p), -1)        R_u^- = mean_u l(g(x_u), -1)

        uPU risk  (unbiased):      pi R_p^+ + (R_u^- - pi R_p^-)
        nnPU risk (non-negative):  pi R_p^+ + max(0, R_u^- - pi R_p^-)

    ``R_u^- - pi R_p^-`` estimates ``(1 - pi) R_n^-``, the risk on the (unseen) negatives, which cannot be
    negative; a flexible model drives the estimate below zero by overfitting. Algorithm 1 of the paper therefore
    picks the gradient step per batch: when ``R_u^- - pi R_p^- >= -beta`` the step descends the uPU risk
    (``objective = pi R_p^+ + R_u^- - pi R_p^-``); otherwise it *ascends* the negative part with a step
    discounted by ``gamma``, ``objective = -gamma (R_u^- - pi R_p^-)``, pushing it back up towards zero. The
    defaults ``beta = 0``, ``gamma = 1`` are the paper's. (The discount is folded into the objective: exact for
    SGD; Adam is nearly invariant to a constant scale of the loss, so with Adam ``gamma`` matters little.)

    Args:
        scores_positive: ``(N_p,)`` or ``(N_p, 1)`` float scores of labelled positives.
        scores_unlabelled: ``(N_u,)`` or ``(N_u, 1)`` float scores of unlabelled examples.
        prior: ``pi`` in ``(0, 1)``.
        loss: ``"sigmoid"`` or ``"logistic"``.
        beta: the threshold ``>= 0`` below ``-beta`` of which the negative part is corrected.
        gamma: the discount ``> 0`` of the corrective step.

    Returns:
        :class:`NnpuRisk`; its tensors keep the autograd graph of the scores.
    """
    scores_positive = _check_scores(scores_positive, "scores_positive")
    scores_unlabelled = _check_scores(scores_unlabelled, "scores_unlabelled")
    pi = _check_prior(prior)
    beta = _check_real(beta, "beta")
    gamma = _check_real(gamma, "gamma")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    positive_risk = pi * surrogate_loss(scores_positive, 1, loss).mean()
    negative_risk = (
        surrogate_loss(scores_unlabelled, -1, loss).mean() - pi * surrogate_loss(scores_positive, -1, loss).mean()
    )
    risk = positive_risk + torch.clamp(negative_risk, min=0.0)
    corrected = bool(negative_risk.detach() < -beta)
    objective = -gamma * negative_risk if corrected else positive_risk + negative_risk
    return NnpuRisk(
        risk=risk, positive_risk=positive_risk, negative_risk=negative_risk, objective=objective, corrected=corrected
    )


# --------------------------------------------------------------------------------------------------
# class-prior estimation


@dataclass(frozen=True)
class PriorEstimate:
    """An estimated class prior (:func:`estimate_prior`).

    ``prior`` is the estimate, clipped to ``[0, 1]``; ``method`` the estimator; ``details`` its intermediate
    values (``best_bin``: ``threshold``, ``positive_mass`` ``q_p``, ``unlabelled_mass`` ``q_u``, ``upper_bound``;
    ``elkan_noto``: ``label_frequency`` ``c``).
    """

    prior: float
    method: str
    details: dict[str, float] = field(default_factory=dict)


def _as_numpy(scores: object, name: str) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = _check_scores(scores, name).detach().cpu().double().numpy()
    elif isinstance(scores, np.ndarray):
        if scores.dtype.kind != "f":
            raise TypeError(f"{name} must be floating-point, got {scores.dtype}")
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.ndim != 1 or scores.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (N,) array, got shape {scores.shape}")
        scores = scores.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(scores).__name__}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return scores


def _best_bin(positive: np.ndarray, unlabelled: np.ndarray, delta: float, gamma: float) -> PriorEstimate:
    n_p, n_u = positive.shape[0], unlabelled.shape[0]
    thresholds = np.unique(positive)  # q_p(t) > 0 at each of them; the ratio only changes at score values
    sorted_p, sorted_u = np.sort(positive), np.sort(unlabelled)
    q_p = (n_p - np.searchsorted(sorted_p, thresholds, side="left")) / n_p  # fraction of positives >= t
    q_u = (n_u - np.searchsorted(sorted_u, thresholds, side="left")) / n_u
    slack = math.sqrt(math.log(4.0 / delta) / (2 * n_p)) + math.sqrt(math.log(4.0 / delta) / (2 * n_u))
    upper = q_u / q_p + (1.0 + gamma) * slack / q_p
    best = int(np.argmin(upper))
    estimate = float(q_u[best] / q_p[best])
    return PriorEstimate(
        prior=min(max(estimate, 0.0), 1.0),
        method="best_bin",
        details={
            "threshold": float(thresholds[best]),
            "positive_mass": float(q_p[best]),
            "unlabelled_mass": float(q_u[best]),
            "upper_bound": float(upper[best]),
        },
    )


def _elkan_noto(positive: np.ndarray, unlabelled: np.ndarray, eps: float) -> PriorEstimate:
    for name, values in (("positive_scores", positive), ("unlabelled_scores", unlabelled)):
        if values.min() < 0.0 or values.max() > 1.0:
            raise ValueError(f"method 'elkan_noto' needs probabilities P(s=1|x) in [0, 1]; {name} are not")
    c = float(positive.mean())
    if c <= eps:
        raise ValueError(f"the label frequency c = mean P(s=1|x) on positives is {c:.3g}: the scores carry no signal")
    c = min(c, 1.0 - eps)
    g = np.clip(unlabelled, 0.0, 1.0 - eps)
    weights = (1.0 - c) / c * g / (1.0 - g)  # P(y=1 | x, s=0), Elkan & Noto Sec. 3
    estimate = float(np.clip(weights, 0.0, 1.0).mean())
    return PriorEstimate(prior=min(max(estimate, 0.0), 1.0), method="elkan_noto", details={"label_frequency": c})


def estimate_prior(
    positive_scores: torch.Tensor | np.ndarray,
    unlabelled_scores: torch.Tensor | np.ndarray,
    *,
    method: PriorMethod = "best_bin",
    delta: float = 0.1,
    gamma: float = 0.01,
) -> PriorEstimate:
    """Estimate the class prior ``pi`` of positives in the unlabelled data from P-vs-U classifier scores.

    Both methods take the scores of a classifier trained to separate labelled positives (label 1) from
    unlabelled examples (label 0), evaluated on **held-out** positives ``positive_scores`` and **held-out**
    unlabelled examples ``unlabelled_scores`` (on its own training data the classifier is overconfident).
    Higher scores must mean "more like the positives".

    Common assumption (both): *selected completely at random* (SCAR) -- the labelled positives are an unbiased
    sample of the positive class, ``p(x | labelled) = p_p(x)``, and the unlabelled data is the mixture
    ``pi p_p(x) + (1 - pi) p_n(x)``; held-out examples come from the same distributions as training ones.

    ``method="best_bin"`` (default): Best Bin Estimation, Garg et al., NeurIPS 2021 (arXiv:2111.00980),
    Algorithm 1. With ``q_p(t)`` / ``q_u(t)`` the fractions of held-out positives / unlabelled examples scoring
    ``>= t``, ``q_u(t) = pi q_p(t) + (1 - pi) q_n(t) >= pi q_p(t)`` for every ``t``, so ``q_u(t) / q_p(t)`` is an
    upper bound of ``pi``; it is tight at thresholds where (almost) no negatives score. The threshold minimises
    the upper confidence bound ``q_u(t)/q_p(t) + (1 + gamma)/q_p(t) * (sqrt(log(4/delta)/(2 n_p)) +
    sqrt(log(4/delta)/(2 n_u)))`` and the estimate is ``q_u(t)/q_p(t)`` there. Extra assumption: a *pure top
    bin* -- some score range holds a non-negligible share of positives and (almost) no negatives. Scores need
    not be calibrated (only their order matters); if the classes overlap everywhere the estimate is biased
    upwards. ``delta`` (confidence) and ``gamma`` (slack) are the paper's parameters, defaults 0.1 and 0.01.

    ``method="elkan_noto"``: Elkan & Noto, KDD 2008. The scores must be *calibrated* probabilities
    ``g(x) = P(s = 1 | x)`` of being labelled, from a classifier trained on exactly the labelled and unlabelled
    sets (no class re-weighting), so that ``g`` reflects their sizes. Under SCAR ``g(x) = c P(y = 1 | x)`` with
    the label frequency ``c = P(s = 1 | y = 1)``; ``c`` is estimated by their ``e1 = mean g(x)`` over held-out
    positives (this assumes ``P(y = 1 | x) = 1`` on positives, i.e. separable classes, otherwise ``c`` is
    underestimated and the prior overestimated), and the prior of the unlabelled set is the mean over held-out
    unlabelled examples of their weight ``P(y = 1 | x, s = 0) = (1 - c)/c * g(x)/(1 - g(x))`` (clipped to
    ``[0, 1]``). Sensitive to miscalibration (e.g. a misspecified logistic model).

    Returns:
        :class:`PriorEstimate` (``prior`` in ``[0, 1]``). Raises ValueError / TypeError for bad input.
    """
    positive = _as_numpy(positive_scores, "positive_scores")
    unlabelled = _as_numpy(unlabelled_scores, "unlabelled_scores")
    delta = _check_real(delta, "delta")
    gamma = _check_real(gamma, "gamma")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if gamma < 0.0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if method == "best_bin":
        return _best_bin(positive, unlabelled, delta, gamma)
    if method == "elkan_noto":
        return _elkan_noto(positive, unlabelled, eps=1e-6)
    raise ValueError(f"method must be one of {PRIOR_METHODS}, got {method!r}")
