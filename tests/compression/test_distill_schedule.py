"""The per-step learning rate (compression/distill/schedule.py): warm-up, then the named schedule."""

from __future__ import annotations

import itertools
import math

import pytest

from compression.distill import DistillConfig
from compression.distill.schedule import learning_rate


def _rates(total: int, **settings) -> list[float]:
    config = DistillConfig(**settings)
    return [learning_rate(config, step, total) for step in range(total)]


def test_warmup_rises_linearly_then_cosine_decays_to_zero() -> None:
    rates = _rates(100, lr=0.1, warmup_fraction=0.1, schedule="cosine")
    warm = rates[:10]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1 / 11)
    differences = [b - a for a, b in itertools.pairwise(warm)]
    assert max(differences) - min(differences) < 1e-12  # linear
    assert rates[10] == pytest.approx(0.1)  # the cosine starts at its peak after the warm-up
    tail = rates[10:]
    assert tail == sorted(tail, reverse=True) and tail[-1] < 1e-3


def test_no_warmup_and_step_schedule() -> None:
    assert _rates(4, lr=0.1, warmup_fraction=0.0, schedule="cosine")[0] == pytest.approx(0.1)
    rates = _rates(40, lr=1.0, warmup_fraction=0.0, schedule="step")
    assert rates[19] == 1.0 and rates[20] == pytest.approx(0.1) and rates[30] == pytest.approx(0.01)


def test_onecycle_ignores_warmup_fraction() -> None:
    assert _rates(50, schedule="onecycle", warmup_fraction=0.0) == _rates(50, schedule="onecycle", warmup_fraction=0.2)
    rates = _rates(50, lr=0.1, schedule="onecycle")
    assert rates[0] == pytest.approx(0.1 / 25) and max(rates) == pytest.approx(0.1, rel=0.01)


def test_bad_steps_and_fractions_are_refused() -> None:
    with pytest.raises(ValueError):
        learning_rate(DistillConfig(), -1, 10)
    with pytest.raises(ValueError):
        DistillConfig(warmup_fraction=1.0)
    assert not math.isnan(learning_rate(DistillConfig(), 0, 1))
