"""Helpers shared by the student architectures: input checks, channel rounding, the stem, the head."""

from __future__ import annotations

import math

import torch
from torch import nn

# Inputs up to this size keep full resolution in the stem (CIFAR-style); larger inputs are reduced 4x
# by a strided convolution and a max-pool (ImageNet-style), so a 224x224 image costs what a 56x56 one does.
SMALL_INPUT_MAX_SIDE = 64


def check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate ``(channels, height, width)``; return it as a tuple of ints."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in input_shape):
        raise TypeError(f"input_shape entries must be ints, got {input_shape!r}")
    channels, height, width = input_shape
    if channels < 1 or height < 8 or width < 8:
        raise ValueError(f"input_shape {tuple(input_shape)} is too small: need >= 1 channel and >= 8x8 pixels")
    return channels, height, width


def check_num_classes(num_classes: int) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return num_classes


def scaled_channels(base: int, width: float, divisor: int = 4) -> int:
    """``base * width`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return max(divisor, round(base * width / divisor) * divisor)


def make_stem(in_channels: int, out_channels: int, input_side: int, activation: nn.Module) -> tuple[nn.Sequential, int]:
    """A full-precision stem: 3x3 conv (stride 1) for small inputs, 3x3 s2 conv + 3x3 s2 max-pool for large.

    Returns the stem and its total stride.
    """
    if input_side <= SMALL_INPUT_MAX_SIDE:
        conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(out_channels), activation), 1
    conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False)
    pool = nn.MaxPool2d(3, 2, 1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), activation, pool), 4


class PooledLinearHead(nn.Module):
    """Base of the conv students: ``forward_features`` (subclass), then global average pooling, dropout and a
    full-precision linear classifier (``forward_head``), the same faces as timm's models."""

    def _build_head(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
