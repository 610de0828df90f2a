"""The layer families a student can be built from, and what each swaps an ``nn.Conv2d`` for.

=========  ===================================================  ==========================
family     conv-like layer                                      paper
=========  ===================================================  ==========================
plain      ``nn.Conv2d``                                        (reference networks)
slim       ``nn.Conv2d`` (CPU-latency-sized architectures)      ResNet / VGG scaled in width and depth
ghost      :class:`~compression.layers.ghost.GhostModule`       GhostNet, arXiv:1911.11907
binary     :class:`~compression.layers.binary.BinaryConv2d`     BBG, arXiv:1909.12117
adder      :class:`~compression.layers.adder.AdderConv2d`       AdderNet, arXiv:1912.13200
qnn4/qnn2  :class:`~compression.layers.lsq.LsqConv2d` (4/2-bit)  LSQ arXiv:1902.08153, widened as arXiv:2002.00555
=========  ===================================================  ==========================

Every family keeps the first convolution (it sees the raw image) and the classifier in full
precision, as all three papers do. The binary family also swaps the activation: a ReLU in front of a
sign() would make every binary activation +1, so binary networks use a sign-preserving ``Hardtanh``; and its residual
blocks keep a full-precision residual stream (no activation after the sum, as in Bi-Real Net, Liu et al., ECCV 2018,
arXiv:1808.00278): the next binary conv binarises its input anyway, and clipping the sum to [-1, 1] only throws
away what the shortcuts carry. Measured on the benchmark (docs/results.md): +6.6 points after 4 epochs on 6,000
images (81.47 % against 74.89 %, mean of 3 seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from compression.layers.adder import AdderConv2d
from compression.layers.binary import BinaryConv2d
from compression.layers.ghost import GhostModule
from compression.layers.lsq import LsqConv2d

ConvFactory = Callable[[int, int, int, int], nn.Module]
"""``make_conv(in_channels, out_channels, kernel_size, stride)`` -> a bias-free, 'same'-padded conv-like layer."""


@dataclass(frozen=True)
class LayerFamily:
    """How one family builds and swaps its conv-like layers."""

    name: str
    make_conv: ConvFactory
    make_activation: Callable[[], nn.Module]
    from_conv2d: Callable[[nn.Conv2d], nn.Module]
    activation_after_residual: bool = True
    """Whether a residual block applies ``make_activation`` after adding its shortcut (False: the block's output is
    the full-precision sum)."""

    def can_replace(self, conv: nn.Conv2d) -> bool:
        """Whether :meth:`from_conv2d` accepts this convolution (plain, ungrouped, undilated, zero-padded)."""
        if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros":
            return False
        if self.name == "ghost":
            same_padding = tuple(k // 2 for k in conv.kernel_size)
            return conv.dilation == (1, 1) and conv.padding == same_padding
        return True


def _plain_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)


def _ghost_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    # relu=False: the surrounding block applies its own normalisation and activation.
    return GhostModule(in_channels, out_channels, kernel_size=kernel_size, stride=stride, relu=False)


def _binary_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return BinaryConv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


def _adder_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return AdderConv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


def _lsq_conv(bits: int) -> ConvFactory:
    def make(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
        return LsqConv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, weight_bits=bits, activation_bits=bits
        )

    return make


def _keep(conv: nn.Conv2d) -> nn.Module:
    return conv


FAMILIES: dict[str, LayerFamily] = {
    "plain": LayerFamily("plain", _plain_conv, lambda: nn.ReLU(inplace=True), _keep),
    "slim": LayerFamily("slim", _plain_conv, lambda: nn.ReLU(inplace=True), _keep),
    "ghost": LayerFamily("ghost", _ghost_conv, lambda: nn.ReLU(inplace=True), GhostModule.from_conv2d),
    "binary": LayerFamily(
        "binary", _binary_conv, nn.Hardtanh, BinaryConv2d.from_conv2d, activation_after_residual=False
    ),
    "adder": LayerFamily("adder", _adder_conv, lambda: nn.ReLU(inplace=True), AdderConv2d.from_conv2d),
    "qnn4": LayerFamily("qnn4", _lsq_conv(4), lambda: nn.ReLU(inplace=True), lambda c: LsqConv2d.from_conv2d(c, 4)),
    "qnn2": LayerFamily("qnn2", _lsq_conv(2), lambda: nn.ReLU(inplace=True), lambda c: LsqConv2d.from_conv2d(c, 2)),
}


def get_family(name: str) -> LayerFamily:
    """The :class:`LayerFamily` called ``name``; ValueError naming the families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown layer family {name!r}; families are {', '.join(FAMILIES)}")
    return FAMILIES[name]
