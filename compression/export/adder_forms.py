"""Alternative standard-ONNX forms of the adder layer, for export only (AdderNet, arXiv:1912.13200).

ONNX has no L1-distance operator, so ``y = -sum |x_patch - w|`` must be spelled in standard operators. The layer's own
export form (:func:`compression.layers.adder._adder_conv2d_standard_ops`, "slices") stacks one strided slice per
kernel offset and reduces a ``[N, out, in*k*k, H, W]`` difference over its middle axis. The forms here differ in how
the patches are gathered and in which axis is reduced:

- ``patch_conv``: patches from ONE convolution with one-hot ``k x k`` kernels (``groups=in``), a graph of a handful of
  nodes instead of ``k*k`` slices and a concat; the difference is laid out ``[N, H*W, out, in*k*k]`` so the
  reduction runs over the contiguous last axis.
- ``patch_conv_chunked``: the same, with output channels in chunks of 16 (the transient difference tensor is
  ``out/16`` times smaller, at the cost of more nodes).

:func:`use_adder_export_form_` swaps every :class:`~compression.layers.adder.AdderConv2d` of a model for one of these
modules (same weights and geometry) so that a whole student can be exported and timed in each form.
Why adders at all on a CPU: they do not pay off there (no L1 instruction, several memory-bound ops per layer); the
paper's argument is for hardware where an adder costs a fraction of a multiplier's energy and area (it cites about
1/4 to 1/30 energy for 32-bit adds vs multiplies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compression.layers.adder import AdderConv2d

__all__ = ["ADDER_EXPORT_FORMS", "AdderPatchConv", "use_adder_export_form_"]

ADDER_EXPORT_FORMS = ("slices", "patch_conv", "patch_conv_chunked")


class AdderPatchConv(nn.Module):
    """``-||x_patch - w||_1`` with patches from a one-hot depthwise convolution (export form, no autograd use)."""

    one_hot: torch.Tensor  # buffers
    weight_rows: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, layer: AdderConv2d, chunk: int | None = None) -> None:
        super().__init__()
        if layer.dilation != (1, 1):
            raise ValueError("the patch-conv form supports dilation 1 only")
        out_channels, in_channels, kh, kw = layer.weight.shape
        self.stride, self.padding, self.kernel = layer.stride, layer.padding, (kh, kw)
        self.in_channels, self.out_channels = in_channels, out_channels
        eye = torch.eye(kh * kw, dtype=layer.weight.dtype).reshape(kh * kw, 1, kh, kw)
        self.register_buffer("one_hot", eye.repeat(in_channels, 1, 1, 1))  # [in*k*k, 1, kh, kw]
        rows = layer.weight.detach().reshape(out_channels, in_channels * kh * kw)
        self.register_buffer("weight_rows", rows.clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.conv2d(x, self.one_hot, None, self.stride, self.padding, groups=self.in_channels)
        n, k, h, w = patches.shape
        patches = patches.reshape(n, k, h * w).transpose(1, 2).unsqueeze(2)  # [N, HW, 1, in*k*k]
        step = self.chunk or self.out_channels
        parts = [
            (patches - self.weight_rows[start : start + step]).abs().sum(dim=3)  # [N, HW, chunk]
            for start in range(0, self.out_channels, step)
        ]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        out = -out.transpose(1, 2).reshape(n, self.out_channels, h, w)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def use_adder_export_form_(model: nn.Module, form: str) -> int:
    """Replace every ``AdderConv2d`` in ``model`` by the export form ``form`` (in place); return how many.

    ``"slices"`` keeps the layers (their own export form). The result is for export and inference only.
    """
    if form not in ADDER_EXPORT_FORMS:
        raise ValueError(f"unknown adder export form {form!r}; forms are {', '.join(ADDER_EXPORT_FORMS)}")
    if form == "slices":
        return sum(isinstance(m, AdderConv2d) for m in model.modules())
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, AdderConv2d):
                setattr(parent, name, AdderPatchConv(child, 16 if form == "patch_conv_chunked" else None))
                swapped += 1
    return swapped
