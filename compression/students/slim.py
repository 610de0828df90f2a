"""Slim students: plain ResNets and VGG-style nets, scaled in width *and* depth, built to run fast on CPUs.

Ghost modules (arXiv:1911.11907) cut multiply-adds, but on a CPU runtime every extra operator (the depthwise
"cheap" convolution, the concatenation, a batch norm that cannot be folded into a convolution) costs memory
traffic and a layout change, so a quarter-MAC Ghost student measured only 1.1-1.2x faster than its teacher in
ONNX Runtime (docs/benchmarks.md). The slim family keeps the ResNet / VGG recipe (He et al., arXiv:1512.03385;
Simonyan & Zisserman, arXiv:1409.1556) with only operators that ONNX Runtime fuses into its blocked convolution
kernels:

- 3x3 convolutions followed by batch norm (folded into the convolution at export) and ReLU (fused);
- downsampling by a stride-2 convolution (no max-pool), projection shortcuts by a 1x1 stride-2 convolution + BN
  (He et al.'s option B) instead of option A's slicing and zero padding, which cannot stay in the blocked layout;
- channel counts rounded to multiples of 16, the blocked ("NCHWc") layout's block on AVX-512 CPUs (8 on AVX2
  divides it), so no reorder operators are inserted between layers.

``depth`` is the number of residual blocks (``residual=True``, two convs each) or of convs (``residual=False``) per
stage; ``width`` scales the base stage widths 16/32/64. ``stem_stride=2`` halves the resolution in the stem, which
at batch 1 saves more time than any width cut for small inputs. These three knobs are what the latency search of
:mod:`compression.students.latency_sizing` explores.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.students._registry import register_student
from compression.students._stem import PooledLinearHead, check_input_shape, check_num_classes, scaled_channels
from compression.students.resnet import _init_weights

#: Channel counts are multiples of this (the AVX-512 NCHWc block of ONNX Runtime's CPU kernels).
CHANNEL_MULTIPLE = 16
BASE_WIDTHS = (16, 32, 64)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class SlimBlock(nn.Module):
    """Residual basic block: conv-BN-ReLU, conv-BN, plus an identity or 1x1-conv-BN shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(in_channels, out_channels, stride), *_conv_bn_relu(out_channels, out_channels, 1, False)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SlimNet(PooledLinearHead):
    """A plain ResNet (``residual=True``) or VGG-style net (``residual=False``) of three stages.

    Args:
        width: multiplier of the stage widths 16/32/64 (rounded to multiples of :data:`CHANNEL_MULTIPLE`).
        depth: residual blocks (or convs, without residuals) per stage, >= 1.
        stem_stride: 1 keeps the input resolution in the stem, 2 halves it (4 for inputs over 64 pixels).
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        width: float = 1.0,
        depth: int = 1,
        residual: bool = True,
        stem_stride: int = 1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, width_px = check_input_shape(input_shape)
        self.num_classes = check_num_classes(num_classes)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 16:
            raise ValueError(f"depth must be an int in [1, 16], got {depth!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
        if min(height, width_px) > 64:
            stem_stride *= 2
        self.input_shape = (channels, height, width_px)
        self.family = "slim"
        self.depth, self.residual, self.stem_stride = depth, residual, stem_stride
        self.stage_widths = [scaled_channels(base, width, CHANNEL_MULTIPLE) for base in BASE_WIDTHS]
        self.stem = nn.Sequential(*_conv_bn_relu(channels, self.stage_widths[0], stem_stride))
        stages: list[nn.Module] = []
        in_ch = self.stage_widths[0]
        for index, out_ch in enumerate(self.stage_widths):
            layers: list[nn.Module] = []
            for layer_index in range(depth):
                stride = 2 if index > 0 and layer_index == 0 else 1
                layers += [SlimBlock(in_ch, out_ch, stride)] if residual else _conv_bn_relu(in_ch, out_ch, stride)
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self._build_head(in_ch, num_classes, drop_rate)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def describe(self) -> str:
        """A one-line architecture summary for reports, e.g. ``slim ResNet, 2 blocks/stage, widths 32/64/128``."""
        kind = "ResNet" if self.residual else "VGG"
        unit = "blocks" if self.residual else "convs"
        stem = "" if self.stem_stride == 1 else f", stem stride {self.stem_stride}"
        return f"slim {kind}, {self.depth} {unit}/stage, widths {'/'.join(map(str, self.stage_widths))}{stem}"


@register_student(
    "slim_resnet",
    family="slim",
    description="plain ResNet scaled in width and depth for CPU latency (kwargs depth, stem_stride)",
    family_default=True,
)
def slim_resnet(
    num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), width: float = 1.0, **kwargs
) -> SlimNet:
    return SlimNet(num_classes, input_shape, width, residual=True, **kwargs)


@register_student(
    "slim_vgg",
    family="slim",
    description="VGG-style plain convs (no residuals) scaled in width and depth for CPU latency",
)
def slim_vgg(
    num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), width: float = 1.0, **kwargs
) -> SlimNet:
    return SlimNet(num_classes, input_shape, width, residual=False, **kwargs)
