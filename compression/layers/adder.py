"""AdderNet convolution: a conv layer that measures L1 distance instead of computing a dot product.

Paper: Hanting Chen, Yunhe Wang, Chunjing Xu, Boxin Shi, Chao Xu, Qi Tian, Chang Xu,
"AdderNet: Do We Really Need Multiplications in Deep Learning?", CVPR 2020, arXiv:1912.13200.

Definition
----------
Write ``X[n, k, p]`` for the unfolded input (``k`` runs over the ``in_channels * kh * kw`` entries of a
receptive field, ``p`` over the output positions) and ``W[o, k]`` for the flattened filter ``o``. The
layer outputs minus the L1 distance between patch and filter (paper, eq. 2)::

    Y[n, o, p] = - sum_k |X[n, k, p] - W[o, k]|          (+ bias[o] if the layer has one)

so no multiplication is spent in the forward pass. The outputs are large and negative (about
``-K * E|X - W|``), which is why the paper puts batch normalisation after every adder layer.

Gradients (custom, not the true derivative of ``|.|``)
------------------------------------------------------
The true derivative of ``Y`` is ``sign(X - W)`` with respect to ``W`` and ``sign(W - X)`` with respect
to ``X``. The paper replaces them:

* weight (eq. 5): ``dY[n,o,p] / dW[o,k] = X[n,k,p] - W[o,k]`` -- the full-precision difference, which
  points the same way as ``sign(X - W)`` (for ``Y = -|X - W|`` increasing ``W`` towards ``X`` increases
  ``Y``) but also carries its magnitude;
* input (eq. 6): ``dY[n,o,p] / dX[n,k,p] = HT(W[o,k] - X[n,k,p])`` with ``HT(d) = clamp(d, -1, 1)``
  (HardTanh), so the gradient sent to earlier layers stays bounded.

Chained with the output gradient ``G = dLoss/dY`` this gives (``d = W - X``)::

    dLoss/dW[o,k]   =  sum_{n,p} G[n,o,p] * (X[n,k,p] - W[o,k])
    dLoss/dX[n,k,p] =  sum_o     G[n,o,p] * clamp(W[o,k] - X[n,k,p], -1, 1)

and ``dLoss/dX`` is folded back onto the image (col2im: overlapping patches add up).

Adaptive learning rate (paper, eq. 12-13) -- :func:`scale_adder_gradients_`
--------------------------------------------------------------------------
The adder layers' weight gradients have much smaller norms than those of a multiplication network, so the
paper gives every adder layer ``l`` its own local learning rate
``alpha_l = eta * sqrt(numel(W_l)) / ||dLoss/dW_l||_2`` (``eta = 0.2`` in the authors' code). That is a
per-layer learning rate, not part of the gradient, so this module does **not** fold it into
``backward``: ``.grad`` holds the honest gradient of the loss (what gradient checks, gradient clipping,
logging and mixed-precision unscaling expect). A trainer that wants the paper's behaviour must call
``scale_adder_gradients_(model, eta)`` after ``loss.backward()`` (and after any gradient all-reduce or
``GradScaler.unscale_``) and before ``optimizer.step()``; it rescales each adder layer's ``weight.grad``
in place to the norm ``eta * sqrt(numel(W))``. Skipping the call trains with the plain gradients.

Kernels
-------
float32 on the CPU runs a fused C++ kernel compiled at first use (:mod:`compression.layers._adder_native`:
forward and backward read the receptive fields straight from a padded channels-last copy of the input; about
6x faster than the PyTorch-operator kernel per forward+backward on two cores, see docs/adder_layer.md). Without a
C++ compiler it warns once and falls back to the PyTorch-operator kernel
(:mod:`compression.layers._adder_torch_kernel`: chunked patch gathering, ``cdist``), which also serves float64
and accelerators. Both give the same numbers (tests: relative error <= 1e-5). :func:`set_adder_kernel` (or the
environment variable ``CONDENSE_ADDER_KERNEL``: ``auto``, ``compiled``, ``torch``) chooses; :func:`adder_kernel`
tells which one runs. The compiled kernel returns the output in channels-last memory format.
For export (``torch.onnx.is_in_onnx_export()`` or ``torch.compiler.is_exporting()``) the layer uses standard
operators only (pad, one strided slice per kernel offset, subtract, ``abs``, ``sum``), so any ONNX runtime runs it.

Operation counts (:mod:`compression.op_counts`): one MAC position per (output element, receptive field
entry), zero multiplications, two additions per position (subtraction and accumulation), plus one per
output element for the bias.
"""

from __future__ import annotations

import math
import os
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from compression.layers import _adder_native
from compression.layers._adder_torch_kernel import Geometry, adder_backward_kernel, adder_forward_kernel, output_size
from compression.layers._args import IntOrPair, conv2d_pair, int_pair
from compression.op_counts import OpCounts, conv_macs

__all__ = [
    "DEFAULT_ETA",
    "AdderConv2d",
    "adder_conv2d",
    "adder_conv2d_reference",
    "adder_kernel",
    "scale_adder_gradients_",
    "set_adder_kernel",
]

DEFAULT_ETA = 0.2
"""The paper's ``eta`` for the adaptive learning rate, as in the authors' released code."""

KernelChoice = Literal["auto", "compiled", "torch"]
_KERNEL_CHOICES: tuple[str, ...] = ("auto", "compiled", "torch")
_kernel_choice: str = os.environ.get("CONDENSE_ADDER_KERNEL", "auto")


def set_adder_kernel(choice: KernelChoice) -> str:
    """Choose the CPU float32 kernel: ``auto`` (the compiled one if it builds, else PyTorch operators),
    ``compiled`` (the same, but the build failure is an error), ``torch`` (PyTorch operators only). Returns the
    previous choice. The environment variable ``CONDENSE_ADDER_KERNEL`` sets the initial choice."""
    global _kernel_choice
    if choice not in _KERNEL_CHOICES:
        raise ValueError(f"adder kernel must be one of {', '.join(_KERNEL_CHOICES)}; got {choice!r}")
    previous, _kernel_choice = _kernel_choice, choice
    return previous


def adder_kernel(x: torch.Tensor | None = None) -> str:
    """Which kernel runs for ``x`` (default: a float32 CPU tensor): ``compiled`` or ``torch``; may build the
    compiled kernel (about a second, once per machine)."""
    return "compiled" if _native_for(x if x is not None else torch.empty(0)) is not None else "torch"


def _native_for(x: torch.Tensor) -> _adder_native.NativeKernel | None:
    if _kernel_choice == "torch" or x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    if _kernel_choice not in _KERNEL_CHOICES:
        raise ValueError(f"CONDENSE_ADDER_KERNEL must be one of {', '.join(_KERNEL_CHOICES)}; got {_kernel_choice!r}")
    kernel = _adder_native.load()
    if kernel is None and _kernel_choice == "compiled":
        raise RuntimeError(f"compiled adder kernel unavailable: {_adder_native.unavailable_reason()}")
    return kernel


def _check_arguments(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> tuple[int, int]:
    """Validate shapes and dtypes; return the output ``(height, width)``."""
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("x and weight must be torch.Tensor")
    if weight.dim() != 4:
        raise ValueError(
            f"weight must have shape [out_channels, in_channels, kernel_h, kernel_w], got {tuple(weight.shape)}"
        )
    _, in_channels, kernel_h, kernel_w = weight.shape
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape [batch, {in_channels}, height, width], got {tuple(x.shape)}")
    if not x.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"adder convolution needs floating-point tensors, got {x.dtype} and {weight.dtype}")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise TypeError(
            f"x ({x.dtype}, {x.device}) and weight ({weight.dtype}, {weight.device}) must share dtype and device"
        )
    out_h = output_size(x.shape[2], kernel_h, geometry.stride[0], geometry.padding[0], geometry.dilation[0])
    out_w = output_size(x.shape[3], kernel_w, geometry.stride[1], geometry.padding[1], geometry.dilation[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"input of spatial size {tuple(x.shape[2:])} is smaller than the dilated kernel "
            f"({kernel_h}, {kernel_w}) with padding {geometry.padding} and dilation {geometry.dilation}"
        )
    return out_h, out_w


class _AdderContext(Protocol):
    """The autograd context as :class:`_AdderConv2dFunction` uses it (torch's ``FunctionCtx`` type declares neither
    the attributes stored on it nor ``saved_tensors`` / ``needs_input_grad``)."""

    geometry: Geometry
    layout: _adder_native.NativeLayout | None
    native: _adder_native.NativeKernel
    needs_input_grad: tuple[bool, ...]
    saved_tensors: tuple[torch.Tensor, ...]

    def save_for_backward(self, *tensors: torch.Tensor) -> None: ...


class _AdderConv2dFunction(torch.autograd.Function):
    """Adder convolution with the paper's full-precision weight and HardTanh input gradients."""

    @staticmethod
    def forward(ctx: _AdderContext, x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        ctx.geometry = geometry
        native = _native_for(x)
        if native is None:
            ctx.save_for_backward(x, weight)
            ctx.layout = None
            return adder_forward_kernel(x, weight, geometry)
        layout = _native_layout(x, weight, geometry)
        ctx.native, ctx.layout = native, layout  # the padded input is what backward reads
        return native.forward(layout).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: _AdderContext, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        need_input_grad, need_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        layout = ctx.layout
        if layout is None:
            x, weight = ctx.saved_tensors
            grad_input, grad_weight = adder_backward_kernel(
                grad_output, x, weight, ctx.geometry, need_input_grad, need_weight_grad
            )
            return grad_input, grad_weight, None
        grad_rows = grad_output.permute(0, 2, 3, 1).contiguous()
        grad_padded, grad_times_x = ctx.native.backward(layout, grad_rows, need_input_grad, need_weight_grad)
        ctx.layout = None
        grad_input = layout.unpad(grad_padded) if grad_padded is not None else None
        grad_weight = None
        if grad_times_x is not None:
            # sum_{n,p} G (X - W) = G^T X - W * sum_{n,p} G
            grad_times_x.sub_(layout.rows * grad_rows.view(-1, grad_rows.shape[-1]).sum(0).unsqueeze(1))
            out_channels, in_channels, kernel_h, kernel_w = layout.weight_shape
            grad_weight = grad_times_x.view(out_channels, kernel_h, kernel_w, in_channels).permute(0, 3, 1, 2)
        return grad_input, grad_weight, None


def _native_layout(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> _adder_native.NativeLayout:
    out_size = (
        output_size(x.shape[2], weight.shape[2], geometry.stride[0], geometry.padding[0], geometry.dilation[0]),
        output_size(x.shape[3], weight.shape[3], geometry.stride[1], geometry.padding[1], geometry.dilation[1]),
    )
    return _adder_native.NativeLayout(x, weight, geometry.stride, geometry.padding, geometry.dilation, out_size)


def _adder_forward(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Forward without autograd: the compiled kernel where it applies, else the PyTorch one."""
    native = _native_for(x)
    if native is None:
        return adder_forward_kernel(x, weight, geometry)
    return native.forward(_native_layout(x, weight, geometry)).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------------
# Export formulation and reference
# --------------------------------------------------------------------------------------------------------


def _adder_conv2d_standard_ops(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Forward in ops every ONNX runtime has: Pad, one strided Slice per kernel offset, Concat, Sub, Abs,
    ReduceSum.

    The ``kh * kw`` shifted windows are stacked into the patch tensor ``[N, 1, in*kh*kw, Ho, Wo]`` (the same
    order as ``weight.reshape(out, -1)``) and the whole distance is one broadcast Sub/Abs/ReduceSum. Measured
    on adder_resnet20 at width 0.5 (3x32x32), against a per-offset sum of ``[N, out, in, Ho, Wo]`` terms: the
    graph has a third of the nodes, the dynamo export takes 22 s instead of 42 s, and ONNX Runtime runs
    twice as fast (4.4 ms instead of 8.4 ms at batch 1, 229 ms instead of 479 ms at batch 32). The price is
    a transient ``[N, out, in*kh*kw, Ho, Wo]`` tensor per layer (9.4 MiB at batch 1 for 16->16 channels at
    32x32). Meant for export, not for training (autograd through it would give ``sign`` gradients).
    """
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w) = geometry
    out_h = output_size(x.shape[2], kernel_h, stride_h, pad_h, dil_h)
    out_w = output_size(x.shape[3], kernel_w, stride_w, pad_w, dil_w)
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h)) if pad_h or pad_w else x
    windows = [
        padded[
            :,
            :,
            i * dil_h : i * dil_h + (out_h - 1) * stride_h + 1 : stride_h,
            j * dil_w : j * dil_w + (out_w - 1) * stride_w + 1 : stride_w,
        ]
        for i in range(kernel_h)
        for j in range(kernel_w)
    ]
    patches = torch.stack(windows, dim=2).flatten(1, 2).unsqueeze(1)  # [N, 1, in*kh*kw, Ho, Wo]
    weight_rows = weight.reshape(1, out_channels, in_channels * kernel_h * kernel_w, 1, 1)
    return -(patches - weight_rows).abs().sum(dim=2)


def adder_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> torch.Tensor:
    """Direct definition ``-sum_k |unfold(x)[n,k,p] - W[o,k]|`` via a ``[N, out, K, positions]`` broadcast.

    For tests on small tensors only. Autograd through it gives the *true* (sign) gradients, not the
    paper's.
    """
    geometry = Geometry.checked(stride, padding, dilation)
    out_h, out_w = _check_arguments(x, weight, geometry)
    out_channels, _, kernel_h, kernel_w = weight.shape
    patches = F.unfold(
        x, (kernel_h, kernel_w), dilation=geometry.dilation, padding=geometry.padding, stride=geometry.stride
    )
    distance = (patches.unsqueeze(1) - weight.reshape(1, out_channels, -1, 1)).abs().sum(dim=2)
    return -distance.view(x.shape[0], out_channels, out_h, out_w)


def _is_exporting() -> bool:
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def adder_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> torch.Tensor:
    """Functional adder convolution (zero padding, ``groups=1``) with the paper's gradients.

    ``x``: ``[N, in, H, W]``; ``weight``: ``[out, in, kh, kw]``; ``bias``: ``[out]`` or None.
    Returns ``-sum_k |X - W| (+ bias)`` of shape ``[N, out, Ho, Wo]``.
    """
    geometry = Geometry.checked(stride, padding, dilation)
    # The legacy (TorchScript) ONNX exporter traces sizes as tensors, so comparing them would only emit
    # TracerWarnings; the shapes were already validated by the eager call that any export is tested with.
    if not torch.jit.is_tracing():
        _check_arguments(x, weight, geometry)
        if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
            shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"bias must have shape [{weight.shape[0]}], got {shape}")

    if _is_exporting():
        out = _adder_conv2d_standard_ops(x, weight, geometry)
    elif torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        out = _AdderConv2dFunction.apply(x, weight, geometry)
    else:
        out = _adder_forward(x, weight, geometry)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


# --------------------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------------------


class AdderConv2d(nn.Module):
    """Drop-in replacement for ``nn.Conv2d`` (zero padding, ``groups=1``) computing ``-||X - W||_1``.

    Follow it with batch normalisation, as the paper does: raw outputs are large and negative.
    Train with :func:`scale_adder_gradients_` between ``backward()`` and ``optimizer.step()`` to get the
    paper's adaptive learning rate.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if groups != 1:
            raise ValueError(f"AdderConv2d: groups={groups} is unsupported (only groups=1)")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = int_pair("kernel_size", kernel_size, minimum=1)
        self.stride = int_pair("stride", stride, minimum=1)
        self.padding = int_pair("padding", padding, minimum=0)
        self.dilation = int_pair("dilation", dilation, minimum=1)
        self.groups = 1
        self.padding_mode = "zeros"
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights from the standard normal (as in the AdderNet authors' released code), bias as ``nn.Conv2d``.

        An adder filter is a template compared with its input by L1 distance, and the input is the output of a
        batch-norm layer (unit scale), so the templates must live on that scale. ``nn.Conv2d``'s Kaiming init
        (std ``~ 1/sqrt(fan_in)``, 0.12 for a 3x3x16 filter) puts every template near zero: all filters then
        answer alike (``|x - w| ~ |x|``), and the adaptive learning rate (each step's gradient rescaled to
        RMS ``eta`` = 0.2 per element) moves the weights by more than their own size. Measured on the benchmark
        task (quarter-MAC adder ResNet-20, 3,000 images, 2 epochs of KD at lr 0.1): Kaiming init stayed at
        chance (18 % test accuracy), standard-normal init learned (see docs/results.md).
        """
        nn.init.normal_(self.weight, 0.0, 1.0)
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d) -> AdderConv2d:
        """An adder layer with ``conv``'s geometry, a copy of its weights (and bias), dtype and device."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv2d expects an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"AdderConv2d: groups={conv.groups} is unsupported (only groups=1)")
        if conv.padding_mode != "zeros":
            raise ValueError(f"AdderConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        if isinstance(conv.padding, str):
            padding = _string_padding(conv.padding, conv.kernel_size, conv.dilation)
        else:
            padding = conv2d_pair(conv.padding)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv2d_pair(conv.kernel_size),
            stride=conv2d_pair(conv.stride),
            padding=padding,
            dilation=conv2d_pair(conv.dilation),
            bias=conv.bias is not None,
        )
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adder_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def count_ops(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> OpCounts:
        """Per forward: ``out_numel * in*kh*kw`` MAC positions, two additions each, no multiplications."""
        out_numel = output.numel()
        macs = conv_macs(out_numel, self.weight.shape)
        additions = 2 * macs + (out_numel if self.bias is not None else 0)
        return OpCounts(macs=macs, multiplications=0, additions=additions, binary_ops=0)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        return text + f", bias={self.bias is not None}"


def _string_padding(mode: str, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, int]:
    """Translate ``nn.Conv2d``'s ``'valid'`` / ``'same'`` into symmetric integer padding."""
    if mode == "valid":
        return (0, 0)
    totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if mode == "same" and all(total % 2 == 0 for total in totals):
        return (totals[0] // 2, totals[1] // 2)
    raise ValueError(f"padding={mode!r} with kernel {kernel}, dilation {dilation} needs asymmetric padding")


# --------------------------------------------------------------------------------------------------------
# Adaptive learning rate
# --------------------------------------------------------------------------------------------------------


def scale_adder_gradients_(model: nn.Module, eta: float = DEFAULT_ETA) -> int:
    """Apply the paper's adaptive learning rate to every :class:`AdderConv2d` in ``model``, in place.

    ``weight.grad <- eta * sqrt(numel(weight)) / ||weight.grad||_2 * weight.grad`` (paper, eq. 13), so each
    adder layer's gradient gets the norm ``eta * sqrt(numel)``. Call after ``loss.backward()`` (after
    ``GradScaler.unscale_`` when using AMP, after any all-reduce) and before ``optimizer.step()``.
    Layers whose ``weight.grad`` is None are skipped; an all-zero gradient is left at zero. Biases are
    not touched. Returns the number of layers whose gradient was processed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a positive finite number, got {eta!r}")
    scaled = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, AdderConv2d) or module.weight.grad is None:
                continue
            grad = module.weight.grad
            norm = torch.linalg.vector_norm(grad)
            target = eta * math.sqrt(grad.numel())
            # norm == 0 -> factor 0 * grad = 0 (no division by zero, no NaN)
            factor = torch.where(norm > 0, target / norm.clamp_min(torch.finfo(grad.dtype).tiny), 0.0)
            grad.mul_(factor)
            scaled += 1
    return scaled
