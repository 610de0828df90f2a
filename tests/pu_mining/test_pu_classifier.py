"""The attention-based multi-scale PU classifier and its nnPU training (pu_mining/pu_classifier.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pu_mining.pu_classifier import (
    PUClassifier,
    concat_features,
    estimate_prior_from_features,
    roc_auc,
    train_pu_classifier,
)

STAGES = (4, 8, 12)  # channels of three synthetic "stages"
PRIOR = 0.3


def _split(matrix: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(matrix, list(STAGES), dim=1))


def _sample(generator: torch.Generator, count: int, positive: bool) -> torch.Tensor:
    """Positives ~ N(mu, I), negatives ~ N(0, I) over 24 channels; stages on different scales (x1, x10, x0.1)."""
    mu = torch.zeros(sum(STAGES))
    mu[[0, 5, 13, 20]] = 2.0
    x = torch.randn(count, sum(STAGES), generator=generator) + (mu if positive else 0.0)
    scale = torch.cat([torch.full((c,), s) for c, s in zip(STAGES, (1.0, 10.0, 0.1), strict=True)])
    return x * scale


def _pu_data(seed: int, n_p: int = 400, n_u: int = 2000) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    positives = _sample(generator, n_p, True)
    n_pos = round(PRIOR * n_u)
    unlabelled = torch.cat([_sample(generator, n_pos, True), _sample(generator, n_u - n_pos, False)])
    unlabelled = unlabelled[torch.randperm(n_u, generator=generator)]
    return _split(positives), _split(unlabelled)


@pytest.fixture(scope="module")
def trained() -> tuple[PUClassifier, list[dict[str, object]]]:
    positives, unlabelled = _pu_data(0)
    return train_pu_classifier(positives, unlabelled, PRIOR, epochs=20, lr=1e-2, batch_size=256, seed=0)


def test_reaches_high_auc_on_held_out_data(trained) -> None:
    model, history = trained
    generator = torch.Generator().manual_seed(123)
    held_pos = model.predict_scores(_split(_sample(generator, 500, True)))
    held_neg = model.predict_scores(_split(_sample(generator, 500, False)))
    assert roc_auc(held_pos, held_neg) > 0.95
    # and the sign is meaningful (g(x) > 0: positive): most positives above 0, most negatives below
    assert (held_pos > 0).float().mean() > 0.8 and (held_neg < 0).float().mean() > 0.8
    assert len(history) == 20 and history[-1]["epoch"] == 20
    assert history[-1]["risk"] < history[0]["risk"]
    assert set(history[0]) == {"epoch", "risk", "positive_risk", "negative_risk", "objective", "corrected_fraction"}
    assert not model.training


def test_standardisation_is_stored_in_buffers(trained) -> None:
    model, _ = trained
    positives, unlabelled = _pu_data(0)
    everything = torch.cat([concat_features(positives), concat_features(unlabelled)])
    torch.testing.assert_close(model.feature_mean, everything.mean(0))
    torch.testing.assert_close(model.feature_std, everything.std(0, unbiased=False))
    state = model.state_dict()
    assert "feature_mean" in state and "feature_std" in state
    clone = PUClassifier(STAGES)
    clone.load_state_dict(state)
    clone.eval()
    sample = _split(_sample(torch.Generator().manual_seed(5), 7, True))
    torch.testing.assert_close(clone(sample), model(sample))


def test_training_is_deterministic_for_a_seed() -> None:
    positives, unlabelled = _pu_data(1, n_p=100, n_u=300)
    state = torch.get_rng_state()
    first, history_1 = train_pu_classifier(positives, unlabelled, PRIOR, epochs=2, batch_size=64, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    second, history_2 = train_pu_classifier(positives, unlabelled, PRIOR, epochs=2, batch_size=64, seed=7)
    other, _ = train_pu_classifier(positives, unlabelled, PRIOR, epochs=2, batch_size=64, seed=8)
    assert history_1 == history_2
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])
    assert not torch.equal(first.score.weight, other.score.weight)


def test_squeeze_and_excitation_shapes() -> None:
    model = PUClassifier(STAGES, reduction=4)
    assert model.excitation[0].out_features == 6  # ceil(24 / 4)
    features = _split(torch.randn(5, sum(STAGES)))
    gate = model.attention(features)
    assert gate.shape == (5, 24) and (gate > 0).all() and (gate < 1).all()
    assert model(features).shape == (5,)
    assert model(torch.cat(features, dim=1)).shape == (5,)  # one concatenated tensor works too


@pytest.mark.parametrize(
    ("features", "error"),
    [
        ([torch.zeros(5, 4), torch.zeros(5, 8)], ValueError),  # 12 channels, not 24
        ([torch.zeros(5, 4), torch.zeros(4, 8), torch.zeros(5, 12)], ValueError),  # rows differ
        ([torch.zeros(5, 4, 1), torch.zeros(5, 8), torch.zeros(5, 12)], ValueError),
        ([torch.zeros(5, 4, dtype=torch.int64), torch.zeros(5, 8), torch.zeros(5, 12)], TypeError),
        ([torch.full((5, 4), float("nan")), torch.zeros(5, 8), torch.zeros(5, 12)], ValueError),
        ([], ValueError),
        ("features", TypeError),
    ],
)
def test_bad_features(features: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        PUClassifier(STAGES)(features)  # type: ignore[arg-type]


def test_bad_training_arguments() -> None:
    positives, unlabelled = _pu_data(2, n_p=20, n_u=40)
    with pytest.raises(ValueError, match="prior"):
        train_pu_classifier(positives, unlabelled, 1.0)
    with pytest.raises(ValueError):
        train_pu_classifier(positives, unlabelled[:2], PRIOR)
    with pytest.raises(ValueError):
        train_pu_classifier(positives, unlabelled, PRIOR, epochs=0)
    with pytest.raises(TypeError):
        train_pu_classifier(positives, unlabelled, PRIOR, batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PUClassifier([])
    with pytest.raises(ValueError):
        PUClassifier([4, 0])


def test_prior_estimated_from_features() -> None:
    positives, unlabelled = _pu_data(3, n_p=1000, n_u=4000)
    estimate = estimate_prior_from_features(positives, unlabelled)
    assert estimate.prior == pytest.approx(PRIOR, abs=0.05)
    elkan_noto = estimate_prior_from_features(positives, unlabelled, method="elkan_noto")
    assert elkan_noto.prior == pytest.approx(PRIOR, abs=0.08)  # only approximately calibrated (see docstring)


def test_roc_auc_rank_formula() -> None:
    assert roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.0])) == pytest.approx(0.625)  # one tie -> 1/2
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 300).round(1), rng.normal(0, 1, 200).round(1)  # rounding makes ties
    expected = metrics.roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[pos, neg])
    assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)
