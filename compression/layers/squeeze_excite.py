"""Squeeze-and-excitation as GhostNet uses it, and the channel-rounding helper of the MobileNet family.

Hu, Shen, Albanie, Sun and Wu, "Squeeze-and-Excitation Networks", arXiv:1709.01507: global average pooling
("squeeze"), a bottleneck of two fully connected layers with a ReLU between them ("excitation"), and a gate
that rescales every channel of the input.

GhostNet (Han et al., arXiv:1911.11907) inherits MobileNetV3's variant, which this module implements:

* the two fully connected layers are 1x1 ``nn.Conv2d`` layers *with* bias applied to the pooled
  ``[N, C, 1, 1]`` map (the same arithmetic as ``nn.Linear``; plain convolutions the profiler counts);
* the reduced width is ``make_divisible(channels * rd_ratio, rd_divisor)`` (MobileNet channel rounding,
  divisor 4 in GhostNet) instead of SENet's ``channels / 16``;
* the gate is the hard sigmoid ``relu6(x + 3) / 6`` (cheap, piecewise linear) instead of the logistic sigmoid;
  it exports to ONNX as the standard ``HardSigmoid`` operator (alpha 1/6, beta 1/2).

Not counted by the profiler (no ``count_ops`` here, by design): the global average pooling and the final
channel-wise rescaling ``x * gate`` (one multiplication per input element); they are small next to the
convolutions around the block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SqueezeExcite", "hard_sigmoid", "make_divisible"]


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``).

    Never rounds down by more than 10 %: if the nearest multiple is below ``0.9 * v`` it goes one multiple up.
    This is the channel-rounding rule of MobileNetV2/V3 and GhostNet.
    """
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"divisor must be a positive int, got {divisor!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"v must be a positive number, got {v!r}")
    if min_value is None:
        min_value = divisor
    elif isinstance(min_value, bool) or not isinstance(min_value, int) or min_value < 1:
        raise ValueError(f"min_value must be a positive int or None, got {min_value!r}")
    rounded = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * v:
        rounded += divisor
    return rounded


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``relu6(x + 3) / 6``, the piecewise-linear sigmoid of MobileNetV3 and GhostNet."""
    return F.hardsigmoid(x)


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * gate(expand(relu(reduce(mean_hw(x)))))`` with 1x1 convolutions.

    Args:
        channels: input (and output) channels.
        rd_ratio: reduced width as a fraction of ``channels`` (before rounding), in (0, 1].
        rd_divisor: the reduced width is rounded to a multiple of this (see :func:`make_divisible`).
        gate: the gating non-linearity; a function or an ``nn.Module`` (default :func:`hard_sigmoid`).
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 0.25,
        rd_divisor: int = 4,
        gate: Callable[[torch.Tensor], torch.Tensor] = hard_sigmoid,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if isinstance(rd_ratio, bool) or not isinstance(rd_ratio, (int, float)) or not 0 < rd_ratio <= 1:
            raise ValueError(f"rd_ratio must be in (0, 1], got {rd_ratio!r}")
        if not callable(gate):
            raise TypeError(f"gate must be callable, got {type(gate).__name__}")
        self.channels = channels
        self.rd_channels = make_divisible(channels * rd_ratio, rd_divisor)
        self.conv_reduce = nn.Conv2d(channels, self.rd_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(self.rd_channels, channels, 1, bias=True)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"SqueezeExcite expects [N, {self.channels}, H, W], got {tuple(x.shape)}")
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * self.gate(scale)

    def extra_repr(self) -> str:
        gate_name = getattr(self.gate, "__name__", type(self.gate).__name__)
        return f"channels={self.channels}, rd_channels={self.rd_channels}, gate={gate_name}"
