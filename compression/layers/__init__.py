"""Conv-like layers of the three student families, each with ``nn.Conv2d``'s parameter names and signature."""

from __future__ import annotations

from compression.layers.adder import AdderConv2d, adder_conv2d, scale_adder_gradients_
from compression.layers.binary import BinaryConv2d
from compression.layers.ghost import GhostBottleneck, GhostModule
from compression.layers.squeeze_excite import SqueezeExcite, make_divisible

__all__ = [
    "AdderConv2d",
    "BinaryConv2d",
    "GhostBottleneck",
    "GhostModule",
    "SqueezeExcite",
    "adder_conv2d",
    "make_divisible",
    "scale_adder_gradients_",
]
