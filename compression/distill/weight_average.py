"""An exponential moving average of a student's weights, the state a run validates and returns when it is on.

Averaging the iterates of stochastic gradient descent (Polyak and Juditsky, "Acceleration of Stochastic
Approximation by Averaging", SIAM J. Control Optim. 1992) removes part of the noise of the last steps; the
exponential form keeps a running average over the recent steps only, as Izmailov et al. ("Averaging Weights Leads
to Wider Optima and Better Generalization", UAI 2018, arXiv:1803.05407) do with equal weights over a schedule's
tail. Float buffers (batch-norm running statistics) are averaged alike; integer buffers are copied.

The averaging horizon is given in epochs (``DistillConfig.weight_average_epochs``), so it means the same at any
transfer-set size: the decay per step is ``1 - 1 / (horizon x steps per epoch)``, and over the first steps the
smaller ``(1 + t) / (10 + t)`` is used so that the initial weights are forgotten quickly (the warm-up of
TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The running average of ``model``'s state; :meth:`update` after every optimizer step."""

    def __init__(self, model: nn.Module, horizon_steps: float) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(horizon_steps, bool) or not isinstance(horizon_steps, int | float) or not horizon_steps >= 1:
            raise ValueError(f"horizon_steps must be a number >= 1, got {horizon_steps!r}")
        self.decay = 1.0 - 1.0 / float(horizon_steps)
        self.updates = 0
        self.average = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def step_decay(self) -> float:
        """The decay of the next update: the configured one, smaller over the first steps (module docstring)."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state by one step."""
        decay = self.step_decay()
        for name, value in model.state_dict().items():
            averaged = self.average[name]
            if averaged.is_floating_point():
                averaged.lerp_(value.detach(), 1.0 - decay)
            else:
                averaged.copy_(value)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """``model`` holds the averaged state inside the block and its own state again afterwards."""
        own = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict[str, object]:
        return {"average": self.average, "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        average, updates = state["average"], state["updates"]
        if not isinstance(average, dict) or set(average) != set(self.average) or not isinstance(updates, int):
            raise ValueError("the weight average's saved state does not match this student")
        self.average = {name: value.clone() for name, value in average.items()}
        self.updates = updates
