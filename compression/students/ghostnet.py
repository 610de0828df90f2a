"""GhostNet (Han et al., "GhostNet: More Features from Cheap Operations", arXiv:1911.11907, table 1).

A MobileNetV3-like stack of Ghost bottlenecks: each expands with a Ghost module, optionally downsamples with a
depthwise conv, optionally applies squeeze-and-excitation, and projects back with a second Ghost module.
For inputs of at most 64 pixels a side the stem keeps full resolution (stride 1) so that 28x28 and 32x32
images still have a 2x2 map at the last stage; larger inputs use the paper's stride-2 stem.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.layers.ghost import GhostBottleneck
from compression.layers.squeeze_excite import make_divisible
from compression.students._registry import register_student
from compression.students._stem import SMALL_INPUT_MAX_SIDE, check_input_shape, check_num_classes

# (depthwise kernel, expansion channels, output channels, squeeze-excite ratio, stride), table 1 of the paper.
GHOSTNET_LAYOUT: tuple[tuple[int, int, int, float, int], ...] = (
    (3, 16, 16, 0.0, 1),
    (3, 48, 24, 0.0, 2),
    (3, 72, 24, 0.0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0.0, 2),
    (3, 200, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0.0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0.0, 1),
    (5, 960, 160, 0.25, 1),
)


class GhostNet(nn.Module):
    """GhostNet with a width multiplier; any input channels, size and class count."""

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] = (3, 224, 224),
        width: float = 1.0,
        drop_rate: float = 0.2,
        head_channels: int = 1280,
    ) -> None:
        super().__init__()
        channels, height, width_px = check_input_shape(input_shape)
        self.num_classes = check_num_classes(num_classes)
        self.input_shape = (channels, height, width_px)
        self.family = "ghost"
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"width must be a positive number, got {width!r}")
        stem_stride = 1 if min(height, width_px) <= SMALL_INPUT_MAX_SIDE else 2
        stem_channels = make_divisible(16 * width, 4)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, stem_channels, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        in_ch = stem_channels
        for kernel, expansion, out, se_ratio, stride in GHOSTNET_LAYOUT:
            out_ch = make_divisible(out * width, 4)
            mid_ch = make_divisible(expansion * width, 4)
            blocks.append(GhostBottleneck(in_ch, mid_ch, out_ch, kernel, stride, se_ratio=se_ratio))
            in_ch = out_ch
        last_ch = make_divisible(960 * width, 4)
        blocks.append(
            nn.Sequential(nn.Conv2d(in_ch, last_ch, 1, bias=False), nn.BatchNorm2d(last_ch), nn.ReLU(inplace=True))
        )
        self.blocks = nn.Sequential(*blocks)
        self.num_features = last_ch
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(last_ch, head_channels, 1, bias=True)
        self.act_head = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_head(self.conv_head(self.pool(x)))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_student("ghostnet", family="ghost", description="GhostNet 1.0x (ImageNet architecture, table 1)")
def ghostnet(
    num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224), width: float = 1.0, **kwargs
) -> GhostNet:
    return GhostNet(num_classes, input_shape, width, **kwargs)
