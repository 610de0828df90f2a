"""Shared fixtures: fixed seeds and a small thread count so timings in the suite stay predictable."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
