"""The nnPU risk (Kiryo et al., arXiv:1703.00593) and class-prior estimation (pu_mining/nnpu.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pu_mining.nnpu import estimate_prior, nnpu_risk, surrogate_loss


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_risk_matches_a_hand_computation_with_the_sigmoid_loss() -> None:
    positive, unlabelled, prior = [0.5, -1.0], [2.0, -0.3, 0.1], 0.4
    # sigmoid loss l(z, y) = sigmoid(-y z)
    r_p_plus = (_sigmoid(-0.5) + _sigmoid(1.0)) / 2
    r_p_minus = (_sigmoid(0.5) + _sigmoid(-1.0)) / 2
    r_u_minus = (_sigmoid(2.0) + _sigmoid(-0.3) + _sigmoid(0.1)) / 3
    negative = r_u_minus - prior * r_p_minus
    assert negative > 0  # so the uPU and nnPU risks coincide here
    result = nnpu_risk(
        torch.tensor(positive, dtype=torch.float64), torch.tensor(unlabelled, dtype=torch.float64), prior
    )
    assert not result.corrected
    assert result.positive_risk.item() == pytest.approx(prior * r_p_plus, abs=1e-12)
    assert result.negative_risk.item() == pytest.approx(negative, abs=1e-12)
    assert result.risk.item() == pytest.approx(prior * r_p_plus + negative, abs=1e-12)
    assert result.objective.item() == pytest.approx(result.risk.item(), abs=1e-12)


def test_logistic_loss_and_column_scores() -> None:
    positive = torch.tensor([[0.2], [1.5]])
    unlabelled = torch.tensor([[-0.7], [0.4]])
    result = nnpu_risk(positive, unlabelled, 0.3, loss="logistic")
    softplus = lambda z: math.log1p(math.exp(z))  # noqa: E731 - l(z, +1) = softplus(-z), l(z, -1) = softplus(z)
    expected_positive = 0.3 * (softplus(-0.2) + softplus(-1.5)) / 2
    expected_negative = (softplus(-0.7) + softplus(0.4)) / 2 - 0.3 * (softplus(0.2) + softplus(1.5)) / 2
    assert result.positive_risk.item() == pytest.approx(expected_positive, rel=1e-6)
    assert result.negative_risk.item() == pytest.approx(expected_negative, rel=1e-6)
    torch.testing.assert_close(surrogate_loss(torch.tensor([0.0]), -1, "sigmoid"), torch.tensor([0.5]))


def test_correction_when_the_negative_risk_goes_below_minus_beta() -> None:
    # positives scored high and unlabelled data scored low: R_u^- ~ 0 while pi R_p^- ~ pi -> negative part < 0
    positive = torch.full((4,), 5.0, requires_grad=True)
    unlabelled = torch.full((6,), -5.0, requires_grad=True)
    result = nnpu_risk(positive, unlabelled, 0.5, gamma=0.5)
    assert result.negative_risk.item() < 0 and result.corrected
    assert result.risk.item() == pytest.approx(result.positive_risk.item())  # max(0, negative part) = 0
    assert result.objective.item() == pytest.approx(-0.5 * result.negative_risk.item())
    result.objective.backward()
    # the step ascends the negative part: unlabelled scores go up, positive scores down
    assert positive.grad is not None and unlabelled.grad is not None
    assert (unlabelled.grad < 0).all() and (positive.grad > 0).all()

    # the same batch with beta above |negative part| is not corrected: plain uPU step
    relaxed = nnpu_risk(positive.detach(), unlabelled.detach(), 0.5, beta=1.0)
    assert not relaxed.corrected
    assert relaxed.objective.item() == pytest.approx((relaxed.positive_risk + relaxed.negative_risk).item())
    # boundary: exactly -beta is not below -beta
    value = nnpu_risk(positive.detach(), unlabelled.detach(), 0.5).negative_risk.item()
    assert not nnpu_risk(positive.detach(), unlabelled.detach(), 0.5, beta=-value).corrected


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"prior": 0.0}, ValueError),
        ({"prior": 1.2}, ValueError),
        ({"prior": "0.3"}, TypeError),
        ({"loss": "hinge"}, ValueError),
        ({"beta": -0.1}, ValueError),
        ({"gamma": 0.0}, ValueError),
        ({"scores_positive": torch.zeros(2, 2)}, ValueError),
        ({"scores_positive": torch.zeros(0)}, ValueError),
        ({"scores_unlabelled": torch.zeros(3, dtype=torch.int64)}, TypeError),
        ({"scores_unlabelled": [0.1, 0.2]}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    arguments: dict[str, object] = {
        "scores_positive": torch.zeros(3),
        "scores_unlabelled": torch.zeros(4),
        "prior": 0.3,
    }
    arguments.update(kwargs)
    with pytest.raises(error):
        nnpu_risk(**arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# prior estimation on Gaussian PU data with a known mixture


def _gaussian_pu(seed: int, n_p: int = 2000, n_u: int = 6000, prior: float = 0.3, separation: float = 4.0):
    """Positives N(mu, I), negatives N(0, I) in 8-d; unlabelled = mixture with the given prior."""
    generator = torch.Generator().manual_seed(seed)
    mu = torch.zeros(8, dtype=torch.float64)
    mu[0] = separation
    positives = torch.randn(n_p, 8, generator=generator, dtype=torch.float64) + mu
    is_positive = torch.rand(n_u, generator=generator) < prior
    unlabelled = torch.randn(n_u, 8, generator=generator, dtype=torch.float64) + is_positive[:, None] * mu
    return positives, unlabelled, mu


@pytest.mark.parametrize("seed", [0, 1])
def test_best_bin_recovers_a_known_prior_from_oracle_scores(seed: int) -> None:
    positives, unlabelled, mu = _gaussian_pu(seed)
    log_ratio = lambda x: x @ mu - 0.5 * mu @ mu  # noqa: E731 - log p_p(x) / p_n(x), monotone in P(y=1|x)
    estimate = estimate_prior(log_ratio(positives), log_ratio(unlabelled))
    assert estimate.method == "best_bin"
    assert estimate.prior == pytest.approx(0.3, abs=0.05)
    assert 0 < estimate.details["positive_mass"] <= 1
    # any monotone transform of the scores gives the same estimate
    assert estimate_prior(torch.sigmoid(log_ratio(positives)), torch.sigmoid(log_ratio(unlabelled))).prior == (
        pytest.approx(estimate.prior, abs=1e-9)
    )


def test_elkan_noto_recovers_a_known_prior_from_calibrated_probabilities() -> None:
    positives, unlabelled, mu = _gaussian_pu(2)
    n_l, n_u = positives.shape[0], unlabelled.shape[0]

    def labelled_probability(x: torch.Tensor) -> torch.Tensor:  # the exact P(s = 1 | x) of the L + U training set
        ratio = torch.exp(x @ mu - 0.5 * mu @ mu)
        return n_l * ratio / (n_l * ratio + n_u * (0.3 * ratio + 0.7))

    estimate = estimate_prior(labelled_probability(positives), labelled_probability(unlabelled), method="elkan_noto")
    assert estimate.prior == pytest.approx(0.3, abs=0.05)
    # e1 = c * E_p[P(y=1|x)]: slightly below the true c = n_l / (n_l + pi n_u) as the classes overlap a little
    true_c = n_l / (n_l + 0.3 * n_u)
    assert true_c - 0.04 < estimate.details["label_frequency"] <= true_c


def test_prior_estimator_arguments() -> None:
    scores = np.linspace(-1, 1, 10)
    with pytest.raises(ValueError, match="probabilities"):
        estimate_prior(scores, scores, method="elkan_noto")
    with pytest.raises(ValueError, match="method"):
        estimate_prior(scores, scores, method="km2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        estimate_prior(np.array([]), scores)
    with pytest.raises(ValueError):
        estimate_prior(np.array([0.1, np.nan]), scores)
    with pytest.raises(TypeError):
        estimate_prior([0.1, 0.2], scores)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        estimate_prior(scores, scores, delta=1.5)
    # identical P and U score distributions: everything in U looks positive
    assert estimate_prior(scores, scores).prior == pytest.approx(1.0)
