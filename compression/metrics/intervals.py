"""Confidence intervals for the figures a compression report states: accuracies, agreements and paired differences.

An accuracy measured on a few dozen images is a rough figure: 57 right out of 60 is "95 %", but any true accuracy
from about 86 % to 98 % explains it as well. Every figure of a report therefore carries its image count and a
95 % interval, computed here:

- :func:`wilson_interval` for a proportion (accuracy, agreement): the Wilson score interval (Wilson, "Probable
  inference, the law of succession, and statistical inference", JASA 1927), which, unlike the normal
  approximation, stays inside [0, 1] and keeps close to its nominal coverage for small counts and proportions near
  0 or 1, the usual case for a good classifier;
- :func:`paired_difference_interval` for the difference of two accuracies measured on the *same* images (teacher
  minus student): Newcombe's hybrid score interval for paired proportions (Newcombe, "Improved confidence
  intervals for the difference between binomial proportions based on paired data", Statistics in Medicine 1998,
  method 10), which combines the two Wilson intervals with the correlation of the paired outcomes. Pairing matters:
  teacher and student are right and wrong on largely the same images, so their difference is known far more
  precisely than two independent accuracies would suggest.

:func:`decide_gate` turns a paired difference into a quality-gate decision that cannot pass by luck: it passes only
when the *upper* end of the accuracy drop's interval is within the allowed drop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

__all__ = [
    "ROUGH_BELOW",
    "GateDecision",
    "PairedDifference",
    "Proportion",
    "decide_drop",
    "decide_gate",
    "disagreement_drop_bound",
    "paired_difference_interval",
    "proportion",
    "wilson_interval",
]

ROUGH_BELOW = 200
"""Figures measured on fewer images than this are flagged as rough in reports."""


def _z(confidence: float) -> float:
    if not isinstance(confidence, int | float) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for ``successes`` out of ``n``; ``(0.0, 1.0)`` when ``n`` is 0."""
    successes, n = _check_count("successes", successes), _check_count("n", n)
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed n ({n})")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / (1.0 + z2n)
    # At p = 0 or 1 one end is exactly 0 or 1 in exact arithmetic; floating point can miss it by an ulp, which would
    # leave the measured share outside its own interval. The interval always contains p.
    low = 0.0 if successes == 0 else min(p, max(0.0, centre - half))
    high = 1.0 if successes == n else max(p, min(1.0, centre + half))
    return low, high


@dataclass(frozen=True)
class Proportion:
    """A measured share (accuracy, agreement) with its count and interval. ``value`` is None when ``n`` is 0."""

    successes: int
    n: int
    value: float | None
    low: float
    high: float
    confidence: float = 0.95

    @property
    def rough(self) -> bool:
        """True when the figure rests on fewer than :data:`ROUGH_BELOW` images."""
        return self.n < ROUGH_BELOW

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rough": self.rough}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proportion:
        """The inverse of :meth:`as_dict` (``rough`` is derived, so it is not read)."""
        return cls(**{name: data[name] for name in ("successes", "n", "value", "low", "high", "confidence")})


def proportion(successes: int, n: int, confidence: float = 0.95) -> Proportion:
    """``successes`` out of ``n`` as a :class:`Proportion` with its Wilson interval."""
    low, high = wilson_interval(successes, n, confidence)
    return Proportion(int(successes), int(n), int(successes) / int(n) if n else None, low, high, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """``first`` minus ``second`` accuracy on the same ``n`` images, with Newcombe's paired interval.

    ``both_right``, ``first_only``, ``second_only`` and ``both_wrong`` are the four cells of the paired table: the
    images both models classify correctly, those only the first does, and so on. ``value`` is None when ``n`` is 0.
    """

    n: int
    value: float | None
    low: float
    high: float
    both_right: int
    first_only: int
    second_only: int
    both_wrong: int
    confidence: float = 0.95

    @property
    def rough(self) -> bool:
        return self.n < ROUGH_BELOW

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rough": self.rough}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedDifference:
        """The inverse of :meth:`as_dict` (``rough`` is derived, so it is not read)."""
        names = ("n", "value", "low", "high", "both_right", "first_only", "second_only", "both_wrong", "confidence")
        return cls(**{name: data[name] for name in names})


def paired_difference_interval(
    first_correct: Sequence[bool] | np.ndarray,
    second_correct: Sequence[bool] | np.ndarray,
    confidence: float = 0.95,
) -> PairedDifference:
    """Accuracy of ``first`` minus accuracy of ``second`` on the same images, with a paired interval.

    ``first_correct[i]`` and ``second_correct[i]`` say whether each model classified image ``i`` correctly. The
    interval is Newcombe's hybrid score interval for paired proportions (method 10 of the 1998 paper): with
    ``p1``, ``p2`` the two accuracies, ``[l1, u1]``, ``[l2, u2]`` their Wilson intervals and ``phi`` the correlation
    of the paired outcomes,

        low  = (p1 - p2) - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = (p1 - p2) + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    (``phi`` is 0 when a margin of the table is empty).
    """
    first = np.asarray(first_correct)
    second = np.asarray(second_correct)
    if first.ndim != 1 or second.ndim != 1:
        raise ValueError("first_correct and second_correct must be one-dimensional")
    if len(first) != len(second):
        raise ValueError(f"first_correct has {len(first)} items and second_correct {len(second)}: they must pair up")
    if first.dtype != bool or second.dtype != bool:
        raise TypeError("first_correct and second_correct must hold booleans")
    n = len(first)
    both_right = int(np.sum(first & second))
    first_only = int(np.sum(first & ~second))
    second_only = int(np.sum(~first & second))
    both_wrong = n - both_right - first_only - second_only
    if n == 0:
        _z(confidence)
        return PairedDifference(0, None, -1.0, 1.0, 0, 0, 0, 0, confidence)
    p1 = (both_right + first_only) / n
    p2 = (both_right + second_only) / n
    l1, u1 = wilson_interval(both_right + first_only, n, confidence)
    l2, u2 = wilson_interval(both_right + second_only, n, confidence)
    margins = (
        (both_right + first_only) * (second_only + both_wrong) * (both_right + second_only) * (first_only + both_wrong)
    )
    phi = (both_right * both_wrong - first_only * second_only) / math.sqrt(margins) if margins > 0 else 0.0
    diff = p1 - p2
    below = (p1 - l1) ** 2 - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    low = max(-1.0, diff - math.sqrt(max(below, 0.0)))
    high = min(1.0, diff + math.sqrt(max(above, 0.0)))
    return PairedDifference(n, diff, low, high, both_right, first_only, second_only, both_wrong, confidence)


GateOutcome = Literal["passed", "failed", "undecided"]


@dataclass(frozen=True)
class GateDecision:
    """The quality gate's verdict on an accuracy drop, in points (0-100).

    - ``passed``: even the upper end of the drop's interval is within ``max_drop_points``;
    - ``failed``: the measured drop and the lower end of its interval exceed ``max_drop_points``;
    - ``undecided``: otherwise (the interval reaches across the limit): the evaluation set is
      too small to tell a student that meets the limit from one that misses it.
    """

    outcome: GateOutcome
    max_drop_points: float
    drop_points: float | None
    drop_high_points: float | None
    n: int
    reason: str

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def decide_drop(
    max_drop_points: float,
    drop_points: float | None,
    drop_high_points: float | None,
    n: int,
    basis: str,
    drop_low_points: float | None = None,
) -> GateDecision:
    """Decide the quality gate from a drop's estimate and its interval, all in points.

    ``passed`` when ``drop_high_points`` is within ``max_drop_points``; ``failed`` when the estimate
    ``drop_points`` is over it and so is ``drop_low_points`` (when given: a small evaluation set that happened to
    look bad does not fail a student either); otherwise ``undecided`` (too few images to decide). ``basis`` says
    in words what the figures were measured on; it starts the decision's reason.
    """
    if isinstance(max_drop_points, bool) or not isinstance(max_drop_points, int | float):
        raise TypeError(f"max_drop_points must be a number, got {type(max_drop_points).__name__}")
    if not 0.0 <= max_drop_points <= 100.0 or math.isnan(max_drop_points):
        raise ValueError(f"max_drop_points must be between 0 and 100 points, got {max_drop_points!r}")
    if drop_high_points is None:
        return GateDecision("undecided", max_drop_points, None, None, 0, "no images to measure the drop on")
    shown = "" if drop_points is None else f" {drop_points:.2f} points,"  # no labels: only the bound is known
    measured = f"{basis}: accuracy drop{shown} at most {drop_high_points:.2f} points (upper end of the interval)"
    if drop_high_points <= max_drop_points + 1e-9:
        outcome: GateOutcome = "passed"
        reason = f"{measured}; allowed {max_drop_points:g}"
    elif (
        drop_points is not None
        and drop_points > max_drop_points + 1e-9
        and (drop_low_points is None or drop_low_points > max_drop_points + 1e-9)
    ):
        outcome, reason = "failed", f"{measured}; over the allowed {max_drop_points:g}"
    else:
        outcome = "undecided"
        reason = f"too few images to decide: {measured} may exceed the allowed {max_drop_points:g}"
    return GateDecision(outcome, max_drop_points, drop_points, drop_high_points, n, reason)


def decide_gate(drop: PairedDifference, max_drop_points: float) -> GateDecision:
    """Decide the quality gate on ``drop`` (teacher minus student accuracy) against ``max_drop_points``.

    The gate tests the upper end of the drop's interval, so a student cannot pass because a small evaluation set
    happened to flatter it.
    """
    if isinstance(max_drop_points, bool) or not isinstance(max_drop_points, int | float):
        raise TypeError(f"max_drop_points must be a number, got {type(max_drop_points).__name__}")
    if not 0.0 <= max_drop_points <= 100.0 or math.isnan(max_drop_points):
        raise ValueError(f"max_drop_points must be between 0 and 100 points, got {max_drop_points!r}")
    if drop.value is None:
        return GateDecision("undecided", max_drop_points, None, None, 0, "no labelled images to measure the drop on")
    level = f"{drop.confidence:.0%}"
    return decide_drop(
        max_drop_points,
        drop.value * 100.0,
        drop.high * 100.0,
        drop.n,
        f"{drop.n} images, {level} interval",
        drop_low_points=drop.low * 100.0,
    )


def disagreement_drop_bound(agreements: int, n: int, confidence: float = 0.975) -> float | None:
    """An upper bound on the accuracy drop (a fraction) from how often the student agrees with the teacher.

    On any image set, teacher accuracy minus student accuracy = P(teacher right, student wrong) - P(teacher
    wrong, student right) <= P(teacher right, student wrong) <= P(student and teacher disagree). So the upper end of
    the disagreement rate's Wilson interval bounds the drop from above, with no labels at all; it is tight when the
    student disagrees mostly where the teacher is right, the usual case after distillation. None when ``n`` is 0.
    """
    agreements, n = _check_count("agreements", agreements), _check_count("n", n)
    if agreements > n:
        raise ValueError(f"agreements ({agreements}) cannot exceed n ({n})")
    if n == 0:
        _z(confidence)
        return None
    return wilson_interval(n - agreements, n, confidence)[1]
