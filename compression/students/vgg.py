"""VGG-16 for small images (Simonyan & Zisserman, arXiv:1409.1556), in the CIFAR form with batch norm.

Thirteen 3x3 convs with BN and ReLU in five stages separated by 2x2 max-pools, global average pooling and
one linear classifier (the CIFAR adaptation GhostNet's paper compares against: 15M parameters, 313M
multiply-adds on 32x32). The pools use ``ceil_mode`` so that 28x28 inputs survive five halvings (28, 14, 7,
4, 2, 1). Ghost-VGG-16 (GhostNet, arXiv:1911.11907, sec. 4.1) swaps every conv but the first for a Ghost
module.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.families import get_family
from compression.students._registry import register_student
from compression.students._stem import (
    PooledLinearHead,
    check_input_shape,
    check_num_classes,
    make_stem,
    scaled_channels,
)
from compression.students.resnet import _init_weights

# Channels per conv; "M" is a 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(PooledLinearHead):
    """VGG with batch norm; ``layout`` lists conv widths and "M" for max-pools."""

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        width: float = 1.0,
        family: str = "plain",
        layout: tuple[int | str, ...] = VGG16_LAYOUT,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, width_px = check_input_shape(input_shape)
        self.num_classes = check_num_classes(num_classes)
        self.input_shape = (channels, height, width_px)
        layer_family = get_family(family)
        self.family = layer_family.name
        conv_channels = [item for item in layout if item != "M"]
        if not conv_channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in conv_channels):
            raise ValueError(f"layout must hold channel counts (ints >= 1) and 'M' (max-pool), got {layout!r}")
        conv_widths = [scaled_channels(int(c), width) for c in conv_channels]
        # The first conv is the full-precision stem (it also reduces large inputs 4x).
        self.stem, _ = make_stem(channels, conv_widths[0], min(height, width_px), layer_family.make_activation())
        layers: list[nn.Module] = []
        in_ch = conv_widths[0]
        widths = iter(conv_widths[1:])
        for item in layout[1:]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            out_ch = next(widths)
            layers += [layer_family.make_conv(in_ch, out_ch, 3, 1), nn.BatchNorm2d(out_ch)]
            layers.append(layer_family.make_activation())
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self._build_head(in_ch, num_classes, drop_rate)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x))


@register_student("vgg16", family="plain", description="VGG-16 with batch norm, CIFAR form")
def vgg16(num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), width: float = 1.0, **kwargs) -> VGG:
    return VGG(num_classes, input_shape, width, family="plain", **kwargs)


@register_student("ghost_vgg16", family="ghost", description="VGG-16 with every conv but the first a Ghost module")
def ghost_vgg16(
    num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), width: float = 1.0, **kwargs
) -> VGG:
    return VGG(num_classes, input_shape, width, family="ghost", **kwargs)
