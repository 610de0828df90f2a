"""Ghost module and Ghost bottleneck.

Han, Wang, Tian, Guo, Xu and Xu, "GhostNet: More Features from Cheap Operations", arXiv:1911.11907
(CVPR 2020).

Ghost module (paper sec. 3.1, fig. 2b)
    An ordinary convolution makes only ``m = ceil(n / s)`` "intrinsic" feature maps of the ``n`` requested
    (``s`` = ``ratio``); every intrinsic map then produces ``s - 1`` "ghost" maps by a cheap linear
    operation, a ``d x d`` depthwise convolution (``d`` = ``dw_size``). Identity maps plus ghosts are
    concatenated and the first ``n`` kept (when ``s`` does not divide ``n`` the last ``m * s - n`` ghosts
    are computed and dropped, as in the authors' code; the profiler counts them since they are computed).
    Each convolution is followed by batch norm and, with ``relu=True``, a ReLU -- the ghosts are ReLU'd too,
    matching the reference code. The primary convolution carries ``kernel_size`` and ``stride`` and pads
    ``kernel_size // 2``; the cheap convolution has stride 1 and padding ``dw_size // 2`` with odd
    ``dw_size``, so it keeps the size. The module therefore has exactly the output shape of
    ``nn.Conv2d(in, out, k, stride, padding=k // 2)`` and can replace such a convolution
    (:meth:`GhostModule.from_conv2d`). ``ratio=1`` degenerates to conv + BN (no cheap part). Both
    convolutions are plain bias-free ``nn.Conv2d`` children (the batch norms supply the shift), so the
    profiler counts them without any ``count_ops`` here. Parameters:
    ``k_h * k_w * in * m + d * d * m * (s - 1) + 2 * (m + m * (s - 1))`` (convs + batch-norm affine).

Ghost bottleneck (paper sec. 3.2, fig. 3)
    Ghost module expanding to ``mid_channels`` (with ReLU) -> for stride > 1 a depthwise
    ``dw_kernel_size`` convolution with that stride + BN (no activation) -> optional squeeze-and-excitation
    (``se_ratio > 0``, :class:`~compression.layers.squeeze_excite.SqueezeExcite` with hard-sigmoid gate) ->
    Ghost module projecting to ``out_channels`` without ReLU (linear bottleneck, as MobileNetV2) -> plus the
    shortcut. The shortcut is the identity when input and output shapes match (same channels and stride 1);
    otherwise a depthwise ``dw_kernel_size`` convolution with the stride + BN, then a 1x1 convolution + BN, as
    in the authors' implementation. No activation after the addition.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compression.layers._args import IntOrPair, int_pair, positive_int
from compression.layers.squeeze_excite import SqueezeExcite

__all__ = ["GhostBottleneck", "GhostModule"]


def _odd_int(name: str, value: object) -> int:
    value = positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (an even kernel cannot keep the spatial size), got {value}")
    return value


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    groups: int,
    relu: bool,
) -> nn.Sequential:
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class GhostModule(nn.Module):
    """Ghost module: a primary convolution makes ``ceil(out/ratio)`` maps, cheap depthwise convs the rest.

    Drop-in for ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)``
    (bias-free: the internal batch norms provide the shift). See the module docstring.

    Args:
        kernel_size, stride: of the primary convolution (int or (h, w)); padding is ``kernel_size // 2``.
        ratio: ``s`` in the paper, total maps per intrinsic map (int >= 1).
        dw_size: kernel of the cheap depthwise convolution (odd).
        relu: ReLU after both batch norms.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: IntOrPair = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = int_pair("kernel_size", kernel_size, minimum=1)
        self.stride = int_pair("stride", stride, minimum=1)
        self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        self.ratio = positive_int("ratio", ratio)
        self.dw_size = _odd_int("dw_size", dw_size)
        if not isinstance(relu, bool):
            raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
        self.relu = relu
        self.init_channels = math.ceil(out_channels / ratio)
        self.new_channels = self.init_channels * (ratio - 1)

        self.primary_conv = _conv_bn(in_channels, self.init_channels, self.kernel_size, self.stride, 1, relu)
        self.cheap_operation: nn.Sequential | None = None
        if self.new_channels > 0:
            self.cheap_operation = _conv_bn(
                self.init_channels,
                self.new_channels,
                (dw_size, dw_size),
                (1, 1),
                self.init_channels,
                relu,
            )

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, *, ratio: int = 2, dw_size: int = 3, relu: bool = False) -> GhostModule:
        """A freshly initialised Ghost module with ``conv``'s geometry (in/out channels, kernel, stride).

        Weights cannot carry over: a Ghost module is a different function family (``ceil(out/ratio)`` learned
        filters plus depthwise ghosts), so it must be trained (e.g. distilled). ``relu`` defaults to False
        because the convolution it replaces is linear; the surrounding network keeps its own activation.
        The convolution's bias is dropped (the internal batch norms supply a shift).

        TypeError when ``conv`` is not an ``nn.Conv2d``; ValueError when ``groups != 1``, ``dilation != 1``,
        ``padding_mode != 'zeros'`` or the padding is not ``kernel_size // 2`` per dimension.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv2d expects an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"cannot replace a grouped convolution (groups={conv.groups}) by a Ghost module")
        if tuple(conv.dilation) != (1, 1):
            raise ValueError(f"cannot replace a dilated convolution (dilation={conv.dilation}) by a Ghost module")
        if conv.padding_mode != "zeros":
            raise ValueError(f"only padding_mode='zeros' is supported, got {conv.padding_mode!r}")
        kernel = tuple(conv.kernel_size)
        half = tuple(k // 2 for k in kernel)
        padding = conv.padding
        if padding == "same" and conv.stride == (1, 1) and all(k % 2 == 1 for k in kernel):
            padding = half
        elif padding == "valid" and kernel == (1, 1):
            padding = (0, 0)
        if tuple(padding) != half:
            raise ValueError(
                f"a Ghost module pads kernel_size // 2 = {half}; cannot replace a convolution with "
                f"padding={conv.padding!r}, kernel_size={conv.kernel_size}"
            )
        module = cls(
            conv.in_channels,
            conv.out_channels,
            kernel_size=(kernel[0], kernel[1]),
            ratio=ratio,
            dw_size=dw_size,
            stride=(conv.stride[0], conv.stride[1]),
            relu=relu,
        )
        module.to(device=conv.weight.device, dtype=conv.weight.dtype)
        module.train(conv.training)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GhostModule expects [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        intrinsic = self.primary_conv(x)
        if self.cheap_operation is None:
            return intrinsic
        ghosts = self.cheap_operation(intrinsic)
        return torch.cat([intrinsic, ghosts], dim=1)[:, : self.out_channels]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"ratio={self.ratio}, dw_size={self.dw_size}, relu={self.relu}"
        )


class GhostBottleneck(nn.Module):
    """Ghost bottleneck (GhostNet fig. 3): expand, optional strided depthwise conv and SE, project, shortcut.

    Args:
        in_channels, mid_channels, out_channels: input, expansion and output widths.
        dw_kernel_size: odd kernel of the strided depthwise conv and of the projection shortcut.
        stride: 1 or more; > 1 adds the depthwise downsampling conv.
        se_ratio: squeeze-and-excitation reduction ratio on the expanded width; 0 disables SE.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.mid_channels = positive_int("mid_channels", mid_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.dw_kernel_size = _odd_int("dw_kernel_size", dw_kernel_size)
        self.stride = positive_int("stride", stride)
        if isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)) or not 0 <= se_ratio <= 1:
            raise ValueError(f"se_ratio must be in [0, 1], got {se_ratio!r}")
        self.se_ratio = float(se_ratio)
        pad = dw_kernel_size // 2

        self.ghost1 = GhostModule(in_channels, mid_channels, relu=True)
        self.conv_dw: nn.Conv2d | None = None
        self.bn_dw: nn.BatchNorm2d | None = None
        if stride > 1:
            self.conv_dw = nn.Conv2d(
                mid_channels, mid_channels, dw_kernel_size, stride, pad, groups=mid_channels, bias=False
            )
            self.bn_dw = nn.BatchNorm2d(mid_channels)
        self.se: SqueezeExcite | None = None
        if se_ratio > 0:
            self.se = SqueezeExcite(mid_channels, rd_ratio=se_ratio)
        self.ghost2 = GhostModule(mid_channels, out_channels, relu=False)
        if in_channels == out_channels and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, dw_kernel_size, stride, pad, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GhostBottleneck expects [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        out = self.ghost1(x)
        if self.conv_dw is not None and self.bn_dw is not None:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        out = self.ghost2(out)
        return out + self.shortcut(x)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.mid_channels}, {self.out_channels}, "
            f"dw_kernel_size={self.dw_kernel_size}, stride={self.stride}, se_ratio={self.se_ratio}"
        )
