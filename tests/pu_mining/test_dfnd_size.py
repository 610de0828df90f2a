"""The no-labels selection's size rule (pu_mining.selection.dfnd_size)."""

from __future__ import annotations

import math

import pytest
import torch

from pu_mining.selection import DFND_MIN_SHARE, DFND_SIZE_FACTOR, dfnd_size


def _logits(confident: int, unsure: int) -> torch.Tensor:
    """``confident`` rows the teacher is ~100 % sure of, then ``unsure`` rows at 50/50."""
    return torch.cat([torch.tensor([[12.0, 0.0]]).repeat(confident, 1), torch.zeros(unsure, 2)])


def test_the_size_is_a_multiple_of_the_confident_items_within_its_bounds() -> None:
    assert dfnd_size(_logits(40, 160)) == math.ceil(DFND_SIZE_FACTOR * 40) == 60  # the next most confident too
    assert dfnd_size(_logits(40, 160), factor=1) == 40
    assert dfnd_size(_logits(150, 50)) == 200  # never more than the candidates
    assert dfnd_size(_logits(0, 200)) == math.ceil(DFND_MIN_SHARE * 200)  # a teacher that is never that sure
    for bad in (0, -1.5, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="factor"):
            dfnd_size(_logits(4, 4), factor=bad)  # type: ignore[arg-type]
