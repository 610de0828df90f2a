"""Low-bit quantization-aware layers with a learned step size (LSQ).

Esser, McKinstry, Bablani, Appuswamy and Modha, "Learned Step Size Quantization", arXiv:1902.08153 (ICLR 2020):
a tensor is quantized as ``q = round(clip(x / s, Q_n, Q_p))`` and used as ``q * s``; the rounding passes gradients
straight through (inside the clip range) and the step ``s`` is a parameter trained with the network, its gradient
scaled by ``g = 1 / sqrt(N * Q_p)`` (``N``: elements of the weight, or of one sample's activations) so that step
and weights learn at comparable rates. Weights use the signed range ``[-2^(b-1), 2^(b-1) - 1]`` with one step per
output channel; activations that follow a ReLU use the unsigned range ``[0, 2^b - 1]`` with one step. Steps start
at ``2 * mean(|x|) / sqrt(Q_p)`` (the paper's initialisation) on the first training batch.

Widening and Squeezing (arXiv:2002.00555) observes that low-bit features represent less than float ones and widens
the quantized layers; :mod:`compression.students.qnn` builds such students, their width fitted to a bit-ops budget.

Export: :class:`LsqConv2d` exports as ``Clip -> QuantizeLinear -> DequantizeLinear`` on its input and
``DequantizeLinear`` of int8 weights (QDQ ONNX with 8-bit containers: the clip to the ``b``-bit range makes the
stored integers ``b``-bit values), which ONNX Runtime runs with its int8 kernels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compression.op_counts import OpCounts, conv_macs

__all__ = ["LsqConv2d", "lsq_quantize", "quant_range"]


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(Q_n, Q_p)``: the integer range of ``bits``-bit values (two's complement when ``signed``)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in [2, 8], got {bits!r}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x - x * scale).detach() + x * scale


def _round_pass(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, low: int, high: int, grad_scale: float) -> torch.Tensor:
    """LSQ fake quantization: ``round(clip(x / s, low, high)) * s`` with the paper's gradients."""
    s = _grad_scale(step, grad_scale)
    return _round_pass(torch.clamp(x / s, low, high)) * s


class LsqConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` whose weights (per output channel) and input (per tensor, unsigned: it must follow
    a ReLU) are LSQ-quantized to ``weight_bits`` / ``activation_bits``."""

    initialised: torch.Tensor  # buffer: whether the steps were set from a first batch

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        weight_bits: int = 4,
        activation_bits: int = 4,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.weight_range = quant_range(weight_bits, signed=True)
        self.activation_range = quant_range(activation_bits, signed=False)
        self.weight_step = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.activation_step = nn.Parameter(torch.ones(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        w_abs = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        self.weight_step.copy_(2 * w_abs / math.sqrt(self.weight_range[1]) + 1e-8)
        self.activation_step.copy_(2 * x.abs().mean() / math.sqrt(self.activation_range[1]) + 1e-8)
        self.initialised.fill_(True)

    def quantized_weight(self) -> torch.Tensor:
        scale = 1.0 / math.sqrt(self.weight[0].numel() * self.weight_range[1])
        return lsq_quantize(self.weight, self.weight_step, *self.weight_range, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.initialised):
            self._initialise(x)
        if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            return self._export_forward(x)
        scale = 1.0 / math.sqrt(x[0].numel() * self.activation_range[1])
        x = lsq_quantize(x, self.activation_step, *self.activation_range, scale)
        return self._conv_forward(x, self.quantized_weight(), None)

    def _export_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function in standard quantize/dequantize operators (see the module docstring)."""
        step = self.activation_step.detach().abs().clamp_min(1e-8)
        low, high = self.activation_range
        x = torch.clamp(x, low * step, high * step)
        x = torch.fake_quantize_per_tensor_affine(x, step.reshape(()), torch.zeros((), dtype=torch.int32), 0, 255)
        w_steps = self.weight_step.detach().abs().clamp_min(1e-8).flatten()
        w_int = torch.clamp(torch.round(self.weight.detach() / w_steps.view(-1, 1, 1, 1)), *self.weight_range)
        weight = torch.fake_quantize_per_channel_affine(
            w_int * w_steps.view(-1, 1, 1, 1), w_steps, torch.zeros_like(w_steps, dtype=torch.int32), 0, -128, 127
        )
        return self._conv_forward(x, weight, None)

    def count_ops(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> OpCounts:
        """MACs as a convolution; ``bit_ops = macs * weight_bits * activation_bits`` (low-bit arithmetic)."""
        macs = conv_macs(output.numel(), self.weight.shape)
        return OpCounts(macs=macs, bit_ops=macs * self.weight_bits * self.activation_bits)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, bits: int = 4) -> LsqConv2d:
        """An LSQ layer with ``conv``'s geometry and weights (float weights are the usual QAT starting point)."""
        if (
            not isinstance(conv, nn.Conv2d)
            or conv.groups != 1
            or conv.dilation != (1, 1)
            or isinstance(conv.padding, str)
        ):
            raise ValueError(
                "only plain, ungrouped, undilated nn.Conv2d layers with integer padding can become LSQ layers"
            )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            conv.stride[0],
            conv.padding[0],
            weight_bits=bits,
            activation_bits=bits,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
        return layer
