"""Interval arithmetic against values worked out by hand, and the gate's three outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compression.metrics.intervals import (
    decide_drop,
    decide_gate,
    paired_difference_interval,
    proportion,
    wilson_interval,
)

Z95 = 1.959963984540054


def test_wilson_matches_the_formula_worked_by_hand():
    # 57 of 60: p = 0.95, z^2/n = 3.841459/60 = 0.0640243
    # centre = (0.95 + 0.0320122) / 1.0640243 = 0.9229224
    # half = 1.959964 * sqrt(0.0475/60 + 3.841459/14400) / 1.0640243 = 0.0599276
    low, high = wilson_interval(57, 60)
    assert low == pytest.approx(0.9229224 - 0.0599276, abs=2e-6)
    assert high == pytest.approx(0.9229224 + 0.0599276, abs=2e-6)


def test_wilson_at_the_extremes_stays_in_the_unit_interval():
    low, high = wilson_interval(20, 20)
    assert high == pytest.approx(1.0)
    # all right: low = n / (n + z^2) = 20 / 23.841459
    assert low == pytest.approx(20 / (20 + Z95**2), abs=1e-9)
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0)
    assert high == pytest.approx(Z95**2 / (20 + Z95**2), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("n", [1, 7, 60, 400, 1000, 4999])
def test_wilson_always_contains_the_measured_share(n):
    # At every count of the sizes a report uses, rounding must never leave p outside its own interval: at 400 of
    # 400 the unclamped upper end is 0.9999999999999999.
    for successes in range(n + 1):
        low, high = wilson_interval(successes, n)
        assert 0.0 <= low <= successes / n <= high <= 1.0
    assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0


def test_wilson_narrows_with_more_images():
    small = wilson_interval(19, 20)
    large = wilson_interval(1900, 2000)
    assert large[1] - large[0] < (small[1] - small[0]) / 5


@pytest.mark.parametrize(("successes", "n"), [(-1, 10), (11, 10), (3, -2)])
def test_wilson_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


def test_wilson_rejects_bad_types_and_confidence():
    with pytest.raises(TypeError):
        wilson_interval(1.5, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_wilson_covers_the_true_share_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_share, n, trials = 0.93, 150, 4000
    hits = rng.binomial(n, true_share, size=trials)
    covered = sum(lo <= true_share <= hi for lo, hi in (wilson_interval(int(k), n) for k in hits))
    assert 0.93 <= covered / trials <= 0.97


def test_proportion_flags_rough_figures():
    assert proportion(57, 60).rough
    assert not proportion(950, 1000).rough
    assert proportion(950, 1000).value == pytest.approx(0.95)
    assert proportion(0, 0).value is None


def _paired(both_right: int, first_only: int, second_only: int, both_wrong: int):
    first = [True] * both_right + [True] * first_only + [False] * second_only + [False] * both_wrong
    second = [True] * both_right + [False] * first_only + [True] * second_only + [False] * both_wrong
    return np.array(first), np.array(second)


def test_paired_interval_matches_newcombe_method_10_worked_by_hand():
    # Table: both right 80, first only 12, second only 3, both wrong 5 (n = 100).
    # p1 = 0.92, p2 = 0.83, difference 0.09.
    first, second = _paired(80, 12, 3, 5)
    result = paired_difference_interval(first, second)
    l1, u1 = wilson_interval(92, 100)
    l2, u2 = wilson_interval(83, 100)
    phi = (80 * 5 - 12 * 3) / math.sqrt(92 * 8 * 83 * 17)
    expected_low = 0.09 - math.sqrt((0.92 - l1) ** 2 - 2 * phi * (0.92 - l1) * (u2 - 0.83) + (u2 - 0.83) ** 2)
    expected_high = 0.09 + math.sqrt((u1 - 0.92) ** 2 - 2 * phi * (u1 - 0.92) * (0.83 - l2) + (0.83 - l2) ** 2)
    assert result.value == pytest.approx(0.09)
    assert result.low == pytest.approx(expected_low, abs=1e-12)
    assert result.high == pytest.approx(expected_high, abs=1e-12)
    # By hand: Wilson 92/100 = [0.8501, 0.9589], 83/100 = [0.7444, 0.8909]; phi = 364 / sqrt(1,038,496) = 0.35719;
    # low = 0.09 - sqrt(0.004886 - 0.003041 + 0.003709) = 0.0153; high = 0.09 + sqrt(0.001513 - 0.002379 + 0.007327)
    # = 0.1704.
    assert phi == pytest.approx(0.35719, abs=1e-5)
    assert result.low == pytest.approx(0.0153, abs=5e-4)
    assert result.high == pytest.approx(0.1704, abs=5e-4)
    assert (result.both_right, result.first_only, result.second_only, result.both_wrong) == (80, 12, 3, 5)


def test_pairing_makes_the_interval_narrower_than_independent_samples():
    # Models that are right on the same images: strongly correlated outcomes.
    first, second = _paired(900, 20, 5, 75)
    paired = paired_difference_interval(first, second)
    l1, u1 = wilson_interval(920, 1000)
    l2, u2 = wilson_interval(905, 1000)
    unpaired_width = math.hypot(0.92 - l1, u2 - 0.905) + math.hypot(u1 - 0.92, 0.905 - l2)
    assert paired.high - paired.low < 0.7 * unpaired_width
    assert paired.low > 0  # 20 against 5 discordant pairs: the first model is better


def test_paired_interval_of_identical_models_is_centred_on_zero():
    first, _ = _paired(50, 0, 0, 10)
    result = paired_difference_interval(first, first.copy())
    assert result.value == 0
    assert result.low < 0 < result.high


def test_paired_interval_rejects_mismatched_input():
    with pytest.raises(ValueError):
        paired_difference_interval(np.array([True, False]), np.array([True]))
    with pytest.raises(TypeError):
        paired_difference_interval(np.array([1, 0]), np.array([1, 1]))


def test_gate_passes_only_when_the_interval_is_within_the_limit():
    first, second = _paired(4700, 60, 40, 200)  # drop 0.4 points on 5,000 images
    decision = decide_gate(paired_difference_interval(first, second), max_drop_points=2.0)
    assert decision.outcome == "passed" and decision.passed
    assert decision.drop_points == pytest.approx(0.4)
    assert decision.drop_high_points < 2.0


def test_gate_is_undecided_on_a_tiny_set_that_looks_fine():
    first, second = _paired(38, 1, 1, 0)  # drop 0 points on 40 images
    decision = decide_gate(paired_difference_interval(first, second), max_drop_points=2.0)
    assert decision.outcome == "undecided"
    assert not decision.passed
    assert "too few images" in decision.reason


def test_gate_fails_when_the_measured_drop_is_over():
    first, second = _paired(800, 150, 20, 30)  # drop 13 points
    decision = decide_gate(paired_difference_interval(first, second), max_drop_points=2.0)
    assert decision.outcome == "failed"
    assert decision.drop_points == pytest.approx(13.0)


def test_a_small_set_that_looks_bad_is_undecided_not_failed():
    # 60 images, measured drop 8.3 points against a 5-point limit: the interval reaches well below 5
    first, second = _paired(51, 7, 2, 0)
    drop = paired_difference_interval(first, second)
    assert drop.value * 100 == pytest.approx(100 * 5 / 60) and drop.low * 100 < 5.0
    decision = decide_gate(drop, max_drop_points=5.0)
    assert decision.outcome == "undecided" and "too few images" in decision.reason
    assert decide_drop(5.0, 8.3, 20.0, 60, "t").outcome == "failed"  # without a lower end: the estimate decides


@pytest.mark.parametrize("bad", [-0.5, 100.5, float("nan")])
def test_gate_rejects_limits_outside_0_to_100_points(bad):
    first, second = _paired(10, 0, 0, 0)
    with pytest.raises(ValueError):
        decide_gate(paired_difference_interval(first, second), bad)
