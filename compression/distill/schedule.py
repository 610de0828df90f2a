"""The learning rate of every training step: a pure function of the config and the global step.

Being a function of the step alone (no scheduler object with state) is what lets a resumed run continue the
schedule exactly where the checkpoint left it.

Warm-up (``warmup_fraction``, Goyal et al., "Accurate, Large Minibatch SGD", arXiv:1706.02677): over the first
``floor(warmup_fraction * total_steps)`` steps the rate rises linearly to ``lr``; the named schedule then runs over
the remaining steps. Measured on the benchmark task (ghost student, 10,000 images, 2 epochs of SGD at lr 0.1), a
10 % warm-up raised test accuracy from 84.8 % to 89.8 %: short runs from a random start are the common case on CPUs.
``onecycle`` has its own warm-up and ignores ``warmup_fraction``.
"""

from __future__ import annotations

import math

from compression.distill.config import DistillConfig

__all__ = ["learning_rate"]


def learning_rate(config: DistillConfig, step: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based) of a run of ``total_steps`` steps."""
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1, got {step} and {total_steps}")
    progress = step / total_steps
    if config.schedule != "onecycle":
        warmup_steps = math.floor(config.warmup_fraction * total_steps)
        if step < warmup_steps:
            return config.lr * (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "linear":
        return config.lr * (1.0 - progress)
    if config.schedule == "step":
        return config.lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    if config.schedule == "onecycle":
        # Smith and Topin, "Super-Convergence", arXiv:1708.07120: lr from lr/25 up to lr over the first 30 % and
        # down to lr/25/1e4, both halves cosine-annealed (torch's OneCycleLR defaults; momentum not cycled).
        start, low, warm = config.lr / 25.0, config.lr / 25.0 / 1e4, 0.3
        if progress < warm:
            return start + (config.lr - start) * 0.5 * (1.0 - math.cos(math.pi * progress / warm))
        return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * (progress - warm) / (1.0 - warm)))
    return config.lr
