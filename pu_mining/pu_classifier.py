"""The attention-based multi-scale PU classifier, its nnPU training, and helpers around it.

Xu et al., "Positive-Unlabeled Compression on the Cloud" (NeurIPS 2019, arXiv:1909.09757) mine the unlabelled
pool with a PU classifier that looks at the teacher's features at several scales and weighs them with an
attention module. Here (a light version: the teacher stays frozen and only the head is trained):

- inputs are the pooled stage features of the teacher (:mod:`pu_mining.features`: the global average pool of each
  stage's last feature map, which is exactly the *squeeze* step of squeeze-and-excitation), concatenated into one
  ``D = sum(C_s)`` vector and standardised with statistics stored in buffers (``feature_mean``, ``feature_std``);
- *excitation* (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507): a gate
  ``s = sigmoid(W_2 relu(W_1 z))`` with ``W_1: D -> D / reduction``, ``W_2: D/reduction -> D``, rescales the
  channels of every scale jointly, ``z * s`` -- so the classifier learns which channels of which scale matter
  for the teacher's task;
- a linear layer gives one score (logit) ``g(x)``; ``g(x) > 0`` means "belongs to the teacher's task".

:func:`train_pu_classifier` fits it with the non-negative PU risk (:func:`pu_mining.nnpu.nnpu_risk`, Kiryo et
al., NeurIPS 2017) and Adam; :func:`estimate_prior_from_features` estimates the class prior when it is unknown;
:func:`roc_auc` evaluates scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pu_mining.nnpu import LOSSES, Loss, PriorEstimate, PriorMethod, estimate_prior, nnpu_risk

__all__ = [
    "Features",
    "PUClassifier",
    "concat_features",
    "estimate_prior_from_features",
    "roc_auc",
    "train_pu_classifier",
]

#: Per-stage features ``[(N, C_1), (N, C_2), ...]`` (as :class:`pu_mining.features.FeatureTaps` returns) or one
#: ``(N, D)`` tensor.
Features = Sequence[torch.Tensor] | torch.Tensor

_MIN_STD = 1e-6


def concat_features(features: Features, name: str = "features") -> torch.Tensor:
    """Per-stage features -> one float32 ``(N, D)`` tensor (validated: same ``N``, 2-d, finite, non-empty)."""
    if isinstance(features, torch.Tensor):
        parts = [features]
    elif isinstance(features, Sequence) and not isinstance(features, str):
        parts = list(features)
    else:
        raise TypeError(f"{name} must be a tensor or a sequence of tensors, got {type(features).__name__}")
    if not parts:
        raise ValueError(f"{name} is an empty sequence")
    for index, part in enumerate(parts):
        if not isinstance(part, torch.Tensor):
            raise TypeError(f"{name}[{index}] must be a torch.Tensor, got {type(part).__name__}")
        if not part.is_floating_point():
            raise TypeError(f"{name}[{index}] must be floating-point, got {part.dtype}")
        if part.ndim != 2 or part.shape[0] == 0 or part.shape[1] == 0:
            raise ValueError(f"{name}[{index}] must have shape (N, C) with N, C >= 1, got {tuple(part.shape)}")
        if part.shape[0] != parts[0].shape[0]:
            raise ValueError(f"{name}: stages have different numbers of rows ({part.shape[0]} vs {parts[0].shape[0]})")
    matrix = torch.cat([part.detach().to(torch.float32) for part in parts], dim=1)
    if not torch.isfinite(matrix).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return matrix


def _dims(features: Features) -> list[int]:
    if isinstance(features, torch.Tensor):
        return [int(features.shape[-1])]
    return [int(part.shape[-1]) for part in features]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(value: object, name: str, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (non_negative and value < 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value}")
    return value


class PUClassifier(nn.Module):
    """Squeeze-and-excitation attention over concatenated multi-scale features, then one linear score.

    Args:
        feature_dims: channels ``C_s`` of each stage (``FeatureTaps.channels``); their sum is ``D``.
        reduction: SE reduction ratio ``r`` (hidden width ``max(min_hidden, ceil(D / r))``; Hu et al. use 16 on
            wide layers, 4 suits the few dozen to few thousand channels here).
        min_hidden: the least hidden width of the gate.

    ``forward(features)`` takes per-stage features (or one ``(N, D)`` tensor), standardises them with the stored
    ``feature_mean`` / ``feature_std`` (set by :meth:`fit_standardisation`; identity until then) and returns
    ``(N,)`` logits.
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, feature_dims: Sequence[int], *, reduction: int = 4, min_hidden: int = 4) -> None:
        super().__init__()
        if isinstance(feature_dims, str | bytes) or not isinstance(feature_dims, Sequence) or not feature_dims:
            raise TypeError(f"feature_dims must be a non-empty sequence of ints, got {feature_dims!r}")
        dims = [_check_int(d, "feature_dims[i]", 1) for d in feature_dims]
        reduction = _check_int(reduction, "reduction", 1)
        min_hidden = _check_int(min_hidden, "min_hidden", 1)
        self.feature_dims = tuple(dims)
        total = sum(dims)
        hidden = max(min_hidden, math.ceil(total / reduction))
        self.register_buffer("feature_mean", torch.zeros(total))
        self.register_buffer("feature_std", torch.ones(total))
        self.excitation = nn.Sequential(
            nn.Linear(total, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, total), nn.Sigmoid()
        )
        self.score = nn.Linear(total, 1)

    @property
    def num_features(self) -> int:
        return sum(self.feature_dims)

    def _matrix(self, features: Features) -> torch.Tensor:
        matrix = concat_features(features)
        if matrix.shape[1] != self.num_features:
            raise ValueError(
                f"expected {self.num_features} feature channels {self.feature_dims}, got {matrix.shape[1]}"
            )
        return matrix.to(self.feature_mean.device)

    def fit_standardisation(self, features: Features) -> None:
        """Store the per-channel mean and std of ``features`` (std below 1e-6 is stored as 1)."""
        matrix = self._matrix(features)
        std = matrix.std(dim=0, unbiased=False)
        self.feature_mean.copy_(matrix.mean(dim=0))
        self.feature_std.copy_(torch.where(std < _MIN_STD, torch.ones_like(std), std))

    def standardise(self, features: Features) -> torch.Tensor:
        return (self._matrix(features) - self.feature_mean) / self.feature_std

    def attention(self, features: Features) -> torch.Tensor:
        """The SE gate ``(N, D)`` in ``(0, 1)`` per channel (for inspection)."""
        return self.excitation(self.standardise(features))

    def forward(self, features: Features) -> torch.Tensor:
        z = self.standardise(features)
        return self.score(z * self.excitation(z)).squeeze(1)

    @torch.no_grad()
    def predict_scores(self, features: Features, batch_size: int = 4096) -> torch.Tensor:
        """Logits ``(N,)`` on the CPU, in eval mode and batches (for scoring a large pool)."""
        batch_size = _check_int(batch_size, "batch_size", 1)
        matrix = self._matrix(features)
        was_training = self.training
        self.eval()
        try:
            scores = [self(matrix[start : start + batch_size]) for start in range(0, matrix.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(scores).cpu()


def train_pu_classifier(
    positive_features: Features,
    unlabelled_features: Features,
    prior: float,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    *,
    loss: Loss = "sigmoid",
    beta: float = 0.0,
    gamma: float = 1.0,
    weight_decay: float = 1e-4,
    reduction: int = 4,
) -> tuple[PUClassifier, list[dict[str, Any]]]:
    """Train a :class:`PUClassifier` with the nnPU risk (Kiryo et al., arXiv:1703.00593) and Adam.

    Features are standardised with the mean / std of positives and unlabelled data together (stored in the
    model's buffers). An epoch is one pass over the unlabelled data in shuffled batches of ``batch_size``; each
    step pairs it with the next ``min(batch_size, N_p)`` positives of a reshuffled cycle through the positives,
    so every step sees both sets even when positives are few. The step's objective is
    :func:`~pu_mining.nnpu.nnpu_risk`'s (``beta``, ``gamma``: Algorithm 1 of the paper).

    Deterministic for a given ``seed`` (initialisation and shuffling use their own generators; the caller's
    global RNG state is left as it was) on the same machine and thread count. Runs on the CPU.

    Returns:
        ``(model, history)``: the model in eval mode, and per epoch a dict with ``epoch``, the mean over its
        steps of ``risk``, ``positive_risk``, ``negative_risk`` and ``objective``, and ``corrected_fraction``
        (the share of steps where the non-negativity correction applied).
    """
    positives = concat_features(positive_features, "positive_features")
    unlabelled = concat_features(unlabelled_features, "unlabelled_features")
    dims = _dims(positive_features)
    if _dims(unlabelled_features) != dims:
        raise ValueError(
            f"positive and unlabelled features differ in stage channels: {dims} vs {_dims(unlabelled_features)}"
        )
    if not 0.0 < _check_float(prior, "prior") < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    epochs = _check_int(epochs, "epochs", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    seed = _check_int(seed, "seed", 0)
    lr = _check_float(lr, "lr", positive=True)
    weight_decay = _check_float(weight_decay, "weight_decay", non_negative=True)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PUClassifier(dims, reduction=reduction)
    model.fit_standardisation(torch.cat([positives, unlabelled]))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n_p, n_u = positives.shape[0], unlabelled.shape[0]
    positive_batch = min(batch_size, n_p)
    positive_order = torch.randperm(n_p, generator=generator)
    positive_cursor = 0
    history: list[dict[str, Any]] = []
    model.train()
    for epoch in range(1, epochs + 1):
        sums = {"risk": 0.0, "positive_risk": 0.0, "negative_risk": 0.0, "objective": 0.0}
        corrected = 0
        steps = 0
        unlabelled_order = torch.randperm(n_u, generator=generator)
        for start in range(0, n_u, batch_size):
            u_batch = unlabelled[unlabelled_order[start : start + batch_size]]
            if positive_cursor + positive_batch > n_p:
                positive_order = torch.randperm(n_p, generator=generator)
                positive_cursor = 0
            p_batch = positives[positive_order[positive_cursor : positive_cursor + positive_batch]]
            positive_cursor += positive_batch
            result = nnpu_risk(model(p_batch), model(u_batch), prior, loss, beta=beta, gamma=gamma)
            optimiser.zero_grad(set_to_none=True)
            result.objective.backward()
            optimiser.step()
            for key in sums:
                sums[key] += float(getattr(result, key).detach())
            corrected += int(result.corrected)
            steps += 1
        history.append(
            {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, "corrected_fraction": corrected / steps}
        )
    model.eval()
    return model, history


def estimate_prior_from_features(
    positive_features: Features,
    unlabelled_features: Features,
    *,
    method: PriorMethod = "best_bin",
    held_out_fraction: float = 0.5,
    seed: int = 0,
    l2: float = 1e-3,
    max_iter: int = 100,
) -> PriorEstimate:
    """Estimate the prior of positives in the unlabelled data (:func:`pu_mining.nnpu.estimate_prior`).

    Splits positives and unlabelled data each into a training and a held-out part (``held_out_fraction`` held
    out, seeded), fits an L2-regularised logistic regression (L-BFGS, full batch, no class re-weighting) of
    positive (label 1) vs unlabelled (label 0) on standardised training features, and applies ``method`` to the
    held-out scores (logits for ``"best_bin"``, probabilities for ``"elkan_noto"``). The assumptions are those
    of :func:`~pu_mining.nnpu.estimate_prior`; a linear model suits features that separate the classes
    linearly (like a trained teacher's). With ``"elkan_noto"`` a logistic model's probabilities are only
    approximately calibrated, so prefer the default.
    """
    positives = concat_features(positive_features, "positive_features")
    unlabelled = concat_features(unlabelled_features, "unlabelled_features")
    if positives.shape[1] != unlabelled.shape[1]:
        raise ValueError(
            f"positive and unlabelled features have {positives.shape[1]} vs {unlabelled.shape[1]} channels"
        )
    fraction = _check_float(held_out_fraction, "held_out_fraction")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {fraction}")
    seed = _check_int(seed, "seed", 0)
    l2 = _check_float(l2, "l2", non_negative=True)
    max_iter = _check_int(max_iter, "max_iter", 1)
    generator = torch.Generator().manual_seed(seed)

    def split(matrix: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        held = round(matrix.shape[0] * fraction)
        if held < 1 or held >= matrix.shape[0]:
            raise ValueError(
                f"{name}: {matrix.shape[0]} rows are too few to hold out {fraction:.0%} and train on the rest"
            )
        order = torch.randperm(matrix.shape[0], generator=generator)
        return matrix[order[held:]], matrix[order[:held]]

    train_p, held_p = split(positives, "positive_features")
    train_u, held_u = split(unlabelled, "unlabelled_features")
    train = torch.cat([train_p, train_u]).double()
    mean = train.mean(dim=0)
    std = train.std(dim=0, unbiased=False)
    std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
    x = (train - mean) / std
    y = torch.cat([torch.ones(train_p.shape[0]), torch.zeros(train_u.shape[0])]).double()
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = F.binary_cross_entropy_with_logits(x @ weight + bias, y) + 0.5 * l2 * weight.square().sum()
        value.backward()
        return value

    optimiser.step(closure)
    with torch.no_grad():
        logit_p = ((held_p.double() - mean) / std) @ weight + bias
        logit_u = ((held_u.double() - mean) / std) @ weight + bias
    if method == "elkan_noto":
        return estimate_prior(torch.sigmoid(logit_p), torch.sigmoid(logit_u), method=method)
    return estimate_prior(logit_p, logit_u, method=method)


def roc_auc(positive_scores: torch.Tensor | np.ndarray, negative_scores: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative (ties count 1/2),
    from the Mann-Whitney rank-sum formula with average ranks for ties."""
    values = []
    for name, scores in (("positive_scores", positive_scores), ("negative_scores", negative_scores)):
        array = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
        if array.ndim != 1 or array.shape[0] == 0 or array.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be a non-empty 1-d numeric array, got shape {array.shape} ({array.dtype})")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        values.append(array.astype(np.float64))
    pos, neg = values
    combined = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(combined, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of the first of each run of equal values
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]  # average rank over ties
    n_p, n_n = pos.shape[0], neg.shape[0]
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2.0) / (n_p * n_n))
