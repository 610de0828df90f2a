"""CIFAR-style ResNets (He et al., "Deep Residual Learning for Image Recognition", arXiv:1512.03385, sec. 4.2).

Depth 6n+2: a 3x3 stem, three stages of n basic blocks at widths 16, 32, 64 (times ``width``), global average
pooling and a linear classifier. Shortcuts that change shape are the paper's option A (stride-2 subsampling and
zero channel padding, no parameters), which is what gives ResNet-20/56 their well-known 0.27M/0.85M parameters.

The same architecture is built for every layer family (``compression.families``) by swapping the 3x3 convs:
Ghost-ResNet (GhostNet, arXiv:1911.11907, sec. 4.1: every conv but the stem becomes a Ghost module),
binary BBG ResNet (arXiv:1909.12117; its residual stream stays full precision, see :mod:`compression.families`)
and AdderNet ResNet (arXiv:1912.13200, BN after every adder layer).
The stem and the classifier stay full precision in every family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compression.families import LayerFamily, get_family
from compression.students._registry import register_student
from compression.students._stem import (
    PooledLinearHead,
    check_input_shape,
    check_num_classes,
    make_stem,
    scaled_channels,
)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the channels up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("a zero-pad shortcut cannot reduce channels")
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> act -> conv3x3 -> BN, plus the shortcut, then act (none for families whose
    ``activation_after_residual`` is False: binary students keep a full-precision residual stream)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, family: LayerFamily) -> None:
        super().__init__()
        self.conv1 = family.make_conv(in_channels, out_channels, 3, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = family.make_activation()
        self.conv2 = family.make_conv(out_channels, out_channels, 3, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = family.make_activation() if family.activation_after_residual else nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(PooledLinearHead):
    """ResNet of depth 6n+2 for small images; any input channels, size and class count.

    ``stage_widths`` (channels of the three stages) overrides ``width``: per-stage widths as chosen by the binary
    channel search (:mod:`compression.search.binary_widths`)."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        width: float = 1.0,
        family: str = "plain",
        drop_rate: float = 0.0,
        stage_widths: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 56, ...), got {depth!r}")
        channels, height, width_px = check_input_shape(input_shape)
        self.num_classes = check_num_classes(num_classes)
        self.input_shape = (channels, height, width_px)
        layer_family = get_family(family)
        self.family = layer_family.name
        blocks_per_stage = (depth - 2) // 6
        widths: tuple[int, int, int]
        if stage_widths is None:
            widths = (scaled_channels(16, width), scaled_channels(32, width), scaled_channels(64, width))
        elif len(stage_widths) != 3 or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in stage_widths
        ):
            raise ValueError(f"stage_widths must be three ints >= 1 (channels per stage), got {stage_widths!r}")
        else:
            first, second, third = stage_widths
            widths = (first, second, third)
        self.stage_widths = widths

        self.stem, _ = make_stem(channels, widths[0], min(height, width_px), layer_family.make_activation())
        stages: list[nn.Module] = []
        in_ch = widths[0]
        for index, out_ch in enumerate(widths):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, layer_family))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self._build_head(in_ch, num_classes, drop_rate)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def _init_weights(model: nn.Module) -> None:
    """He initialisation for plain convs; BN scale 1, shift 0 (custom layers initialise themselves)."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _register_resnet(depth: int, family: str, *, family_default: bool = False) -> None:
    prefix = "" if family == "plain" else f"{family}_"
    name = f"{prefix}resnet{depth}"

    def constructor(
        num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), width: float = 1.0, **kwargs
    ) -> CifarResNet:
        return CifarResNet(depth, num_classes, input_shape, width, family=family, **kwargs)

    constructor.__name__ = name
    constructor.__doc__ = f"ResNet-{depth} ({family} layers); see :class:`CifarResNet`."
    description = f"CIFAR-style ResNet-{depth}" + ("" if family == "plain" else f" with {family} layers")
    register_student(name, family=family, description=description, family_default=family_default)(constructor)


for _depth in (20, 32, 56):
    _register_resnet(_depth, "plain", family_default=_depth == 20)
    _register_resnet(_depth, "ghost", family_default=_depth == 20)
    _register_resnet(_depth, "binary", family_default=_depth == 20)
    _register_resnet(_depth, "adder", family_default=_depth == 20)
