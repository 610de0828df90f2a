"""``create_student``: build a registered student, at a given width or sized to a budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from compression.metrics import count_ops, count_parameters
from compression.metrics.bitops import count_bit_ops
from compression.students._registry import resolve_student
from compression.students._stem import check_input_shape

BudgetMetric = Literal["macs", "params", "bitops"]

# Widths searched when fitting a budget: 1/16x to 8x the architecture's base width.
_MIN_WIDTH = 1 / 16
_MAX_WIDTH = 8.0


@dataclass(frozen=True)
class Budget:
    """A student may cost at most ``ratio`` times ``reference`` in ``metric`` (MACs or parameters).

    ``reference`` is usually the teacher's count: see :meth:`from_teacher`.
    """

    reference: int
    ratio: float = 0.25
    metric: BudgetMetric = "macs"

    def __post_init__(self) -> None:
        if self.metric not in ("macs", "params", "bitops"):
            raise ValueError(f"budget metric must be 'macs', 'params' or 'bitops', got {self.metric!r}")
        if not isinstance(self.reference, int) or self.reference <= 0:
            raise ValueError(f"budget reference must be a positive int, got {self.reference!r}")
        if not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise ValueError(f"budget ratio must be in (0, 1], got {self.ratio!r}")

    @property
    def limit(self) -> int:
        return int(self.reference * self.ratio)

    @classmethod
    def from_teacher(
        cls,
        teacher: nn.Module,
        input_shape: tuple[int, int, int],
        ratio: float = 0.25,
        metric: BudgetMetric = "macs",
    ) -> Budget:
        """A budget relative to an ``nn.Module`` teacher's MACs or parameters at ``input_shape``."""
        return cls(measure(teacher, input_shape, metric), ratio, metric)


def measure(model: nn.Module, input_shape: tuple[int, int, int], metric: BudgetMetric) -> int:
    """The model's MACs or bit-ops (one forward pass at batch 1) or its parameter count."""
    if metric == "params":
        return count_parameters(model)
    if metric == "bitops":  # low-bit layers at their bit widths, float ones at 32 x 32 bits per MAC
        return count_bit_ops(model, input_shape)
    return count_ops(model, input_shape).total.macs


def create_student(
    name: str,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    *,
    width: float | None = None,
    budget: Budget | None = None,
    **kwargs,
) -> nn.Module:
    """Build the student ``name`` (an architecture, e.g. ``ghost_resnet56``, or a family: ``ghost``,
    ``binary``, ``adder``, ``plain``) for ``num_classes`` classes and inputs of ``input_shape`` (C, H, W).

    Give ``width`` (a multiplier of the architecture's base channels, default 1.0) or a ``budget``, not both:
    with a budget the widest student within it is built (see :func:`fit_width`).
    Extra keyword arguments go to the architecture's constructor.
    """
    info = resolve_student(name)
    input_shape = check_input_shape(input_shape)
    if width is not None and budget is not None:
        raise ValueError("give either width or budget, not both")
    if budget is not None:
        width = fit_width(info.name, budget, num_classes, input_shape, **kwargs)
    return info.constructor(num_classes=num_classes, input_shape=input_shape, width=width or 1.0, **kwargs)


def fit_width(name: str, budget: Budget, num_classes: int, input_shape: tuple[int, int, int], **kwargs) -> float:
    """The largest width multiplier (to 2 % in log space) whose student stays within ``budget``.

    Channel counts are rounded, so cost is a step function of width; bisection on log-width finds the last
    step under the limit. ValueError if even the narrowest student is over it.
    """
    info = resolve_student(name)
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")

    def cost(width: float) -> int:
        model = info.constructor(num_classes=num_classes, input_shape=input_shape, width=width, **kwargs)
        return measure(model, input_shape, budget.metric)

    if cost(_MIN_WIDTH) > budget.limit:
        raise ValueError(
            f"{info.name} cannot fit a budget of {budget.limit:,} {budget.metric} "
            f"({budget.ratio:g} x {budget.reference:,}); even width {_MIN_WIDTH:g} costs {cost(_MIN_WIDTH):,}"
        )
    if cost(_MAX_WIDTH) <= budget.limit:
        return _MAX_WIDTH
    low, high = math.log(_MIN_WIDTH), math.log(_MAX_WIDTH)
    while high - low > 0.02:
        middle = (low + high) / 2
        if cost(math.exp(middle)) <= budget.limit:
            low = middle
        else:
            high = middle
    return math.exp(low)
