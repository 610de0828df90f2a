"""Binary convolution with balanced weights and a gated residual (BBG).

Shen, Liu, Gong and Han, "Balanced Binary Neural Networks with Gated Residual", arXiv:1909.12117
(ICASSP 2020).

:class:`BinaryConv2d` is a drop-in replacement for a zero-padded ``nn.Conv2d`` whose weights and (by
default) input activations are 1-bit. Everything it does, and every place where the paper left a choice
open:

Balanced weight binarisation
    For each output channel ``o`` (``n = in_channels/groups * kh * kw`` weights) the latent full-precision
    weights are centred, ``Wc = W - mean(W[o])``, then binarised, ``Wb = alpha[o] * sign(Wc)`` with
    ``alpha[o] = mean(|Wc[o]|)``. Centring pushes the +1/-1 split of every filter towards 50/50, the
    maximum-entropy ("balanced") code the paper argues for; ``alpha`` is the L1-optimal scale of the centred
    filter (the XNOR-Net choice). The scale stays an exact full-precision float per output channel and costs
    one multiplication per output element; power-of-two scales (a shift instead of a multiplication, as in
    the same group's later IR-Net) are not implemented.

Weight gradient
    Straight-through estimator, *identity* variant: ``d sign(Wc) / d Wc := 1``. The latent weights are small
    (``|w| << 1`` for any usual initialisation), so a clip at +-1 would almost never act and would freeze
    any weight that crossed it. ``alpha`` is an ordinary differentiable function of the weights (gradient
    ``sign(Wc) / n`` through ``mean|Wc|``), and the centring is differentiated too, so the weight gradient
    is ``dW = P(alpha * G + sign(Wc) * mean(G * sign(Wc)))`` per output channel, with ``G = dL/dWb`` and
    ``P`` the centring projection ``v -> v - mean(v)``.

Activation binarisation
    ``sign(x)`` with ``sign(0) := +1``, so binary activations are exactly +-1 (``torch.sign`` would give 0).
    It is computed as ``where(x >= 0, 1, -1)``, which exports to ONNX ``GreaterOrEqual`` + ``Where``, so
    onnxruntime makes the same choice at exactly-zero inputs (e.g. after a ReLU or in zeroed image regions).
    Gradient: the clipped straight-through estimator of BinaryNet,
    ``dL/dx = dL/dsign(x) * 1[-1 <= x <= 1]`` (the boundary +-1 included). ``binarize_input=False`` keeps
    full-precision activations (binary-weight network): each product is then a sign flip, i.e. an addition,
    not an XNOR (see :meth:`BinaryConv2d.count_ops`).

Padding
    Zero padding is applied *after* binarisation (as ``F.conv2d`` does), so padded taps contribute 0,
    exactly like the float convolution the layer replaces. A bitwise kernel realises this with a
    per-position border correction; interior outputs are pure XNOR-popcount. Only ``padding_mode='zeros'``
    is supported.

Gated residual
    The paper compensates the information lost by binarising the activations with a channel-wise learnable
    gate on the *full-precision* input, added to the binary convolution output:
    ``y = conv(sign(x), Wb) + gate[c] * x (+ bias)``. This needs the input and output to have the same
    shape, which we require from the geometry: ``in_channels == out_channels``, stride 1 and a padding that
    preserves the spatial size (``2 * padding == dilation * (kernel - 1)`` per dimension, or
    ``padding='same'``). Where the shapes do not allow it the layer simply has no gate
    (``self.gate is None``, no parameter registered, :attr:`BinaryConv2d.has_gate` is False). A projection
    for shape-changing layers would cost full-precision MACs, against the paper's "slight overhead", and we
    found no such projection specified, so none is added. The gate is initialised to 0 by default
    (``gate_init``): a layer converted from a trained conv with :meth:`BinaryConv2d.from_conv2d` then starts
    as the plain binarised conv (no added identity the float layer did not have), and inside residual blocks
    that already carry an identity shortcut the identity is not doubled at initialisation. The gate still
    receives the gradient ``sum(dL/dy * x)`` at 0 and grows where the float signal helps. (We could not
    confirm an initialisation in the paper; this one is our choice.)

Deploy form
    :meth:`BinaryConv2d.to_deploy` stores what an edge device needs and nothing more: the signs of the
    centred weights packed 8 to a byte (``uint8``, most significant bit first; bit 1 means +1) and the
    per-channel scales ``alpha``. Forward then unpacks the bits to +-1 (a shift, a bitwise and, a cast),
    convolves with the +-1 weights -- an exact integer sum in float arithmetic, the XNOR-popcount of a
    bitwise kernel -- and multiplies by ``alpha`` after the convolution. The unpacking is part of the exported
    graph (ONNX ``Cast``, ``Mul``, ``Floor``, ``Sub``), so the .onnx file carries 1 bit per weight instead
    of 32 and any ONNX runtime restores the +-1 weights when it loads the model. Scaling after the
    convolution rather than before rounds differently from the training form (relative 1e-7). The cached
    buffers are not part of the state dict: call :meth:`~BinaryConv2d.to_deploy` again after loading
    weights; :meth:`~BinaryConv2d.undeploy` drops them. A deployed layer is inference-only (forward in
    training mode raises).

Op counts follow :mod:`compression.op_counts` (see :meth:`BinaryConv2d.count_ops`); storage follows the
packed 1-bit layout (see :meth:`BinaryConv2d.packed_weight_bytes`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compression.layers._args import IntOrPair, conv2d_pair, int_pair, positive_int
from compression.op_counts import OpCounts, conv_macs

__all__ = [
    "BinaryConv2d",
    "binarize_activation",
    "binarize_weight",
    "pack_sign_bits",
    "sign_pm1",
    "unpack_sign_bits",
]


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = +1``: every element becomes exactly +1 or -1 (same dtype as ``x``)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


class _ClippedSignSTE(torch.autograd.Function):
    """Forward ``sign_pm1(x)``; backward passes the gradient where ``-1 <= x <= 1``, zero elsewhere."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() <= 1).to(grad_output.dtype)


class _IdentitySignSTE(torch.autograd.Function):
    """Forward ``sign_pm1(x)``; backward passes the gradient unchanged (identity straight-through)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return sign_pm1(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def binarize_activation(x: torch.Tensor) -> torch.Tensor:
    """Exactly +-1 activations (``sign(0) = +1``) with the clipped straight-through gradient."""
    return _ClippedSignSTE.apply(x)


def binarize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Balanced binary weights ``mean|Wc| * sign(Wc)``, ``Wc`` centred per output channel (dim 0).

    Gradient: identity straight-through for the sign; the centring and the scale are differentiated normally.
    """
    if weight.dim() < 2:
        raise ValueError(f"weight must have an output-channel dimension and at least one more, got {weight.dim()}-D")
    reduce_dims = tuple(range(1, weight.dim()))
    centred = weight - weight.mean(dim=reduce_dims, keepdim=True)
    scale = centred.abs().mean(dim=reduce_dims, keepdim=True)
    return scale * _IdentitySignSTE.apply(centred)


_BIT_SHIFTS = (7, 6, 5, 4, 3, 2, 1, 0)  # most significant bit first


def pack_sign_bits(values: torch.Tensor) -> torch.Tensor:
    """``values >= 0`` as bits packed 8 to a ``uint8`` (MSB first, zero-padded at the end), flattened."""
    bits = (values.detach().reshape(-1) >= 0).to(torch.uint8)
    bits = F.pad(bits, (0, (-bits.numel()) % 8)).view(-1, 8)
    shifts = torch.tensor(_BIT_SHIFTS, dtype=torch.uint8, device=bits.device)
    return (bits << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_sign_bits(packed: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`pack_sign_bits`: +-1 values of ``dtype`` and ``shape`` (bit 1 -> +1, bit 0 -> -1).

    Bit k of a byte ``b`` is ``floor(b / 2**k) - 2 * floor(b / 2**(k+1))``, computed in float32 (exact for
    integers below 2**24). Arithmetic rather than bitwise operators because ONNX exporters type the
    constants of ``BitShift``/``BitwiseAnd`` inconsistently for ``uint8``; Cast, Mul and Floor are in every
    runtime.
    """
    inverse_powers = torch.tensor([2.0**-k for k in _BIT_SHIFTS], dtype=torch.float32, device=packed.device)
    byte_values = packed.to(torch.float32).unsqueeze(1)
    bits = torch.floor(byte_values * inverse_powers) - 2 * torch.floor(byte_values * (inverse_powers / 2))
    numel = math.prod(shape)
    return bits.reshape(-1)[:numel].to(dtype).mul(2).sub(1).reshape(shape)


class BinaryConv2d(nn.Module):
    """BBG binary convolution: balanced 1-bit weights, 1-bit activations, gated full-precision residual.

    Same constructor and parameter names as ``nn.Conv2d`` (``weight`` of shape
    ``[out_channels, in_channels // groups, kh, kw]``, optional ``bias``); see the module docstring for the
    exact forward and backward definitions. Not a subclass of ``nn.Conv2d`` on purpose, so code that swaps or
    counts plain convolutions by ``isinstance`` never mistakes it for one.

    Args:
        gated_residual: add ``gate[c] * x`` to the output where the shapes allow (``has_gate``).
        binarize_input: binarise the input activations (False: binary weights, full-precision activations).
        gate_init: initial gate value (default 0; see the module docstring).

    Attribute ``binarize_weights`` (default True, not saved in the state dict): False convolves with the latent
    full-precision weights instead of ``alpha * sign(Wc)``, for progressive binarisation (activations first,
    then weights; e.g. the two-step training of ReActNet, Liu et al., ECCV 2020, arXiv:2003.03488).
    """

    packed_sign_bits: torch.Tensor | None  # buffers of the deploy form (:meth:`to_deploy`), else None
    deploy_scale: torch.Tensor | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair | str = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        gated_residual: bool = True,
        binarize_input: bool = True,
        gate_init: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.groups = positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        self.kernel_size = int_pair("kernel_size", kernel_size, minimum=1)
        self.stride = int_pair("stride", stride, minimum=1)
        self.dilation = int_pair("dilation", dilation, minimum=1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding string must be 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is only supported with stride 1")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = int_pair("padding", padding, minimum=0)
        self.padding_mode = "zeros"
        for flag_name, flag in (
            ("bias", bias),
            ("gated_residual", gated_residual),
            ("binarize_input", binarize_input),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{flag_name} must be a bool, got {type(flag).__name__}")
        if isinstance(gate_init, bool) or not isinstance(gate_init, (int, float)) or not math.isfinite(gate_init):
            raise ValueError(f"gate_init must be a finite number, got {gate_init!r}")
        self.gated_residual = gated_residual
        self.binarize_input = binarize_input

        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        if gated_residual and self.shapes_allow_gate():
            self.gate: nn.Parameter | None = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("gate", None)
        self.gate_init = float(gate_init)
        self.binarize_weights = True
        self.deployed = False
        self.register_buffer("packed_sign_bits", None, persistent=False)
        self.register_buffer("deploy_scale", None, persistent=False)
        self.reset_parameters()

    # ------------------------------------------------------------------ construction helpers
    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation for weight and bias; the gate (if any) is set to ``gate_init``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.gate is not None:
            nn.init.constant_(self.gate, self.gate_init)

    def shapes_allow_gate(self) -> bool:
        """Whether the output has the input's shape (same channels, stride 1, size-preserving padding)."""
        if self.in_channels != self.out_channels or self.stride != (1, 1):
            return False
        if self.padding == "same":
            return True
        pads = (0, 0) if isinstance(self.padding, str) else self.padding  # 'valid' is no padding
        return all(2 * p == d * (k - 1) for p, d, k in zip(pads, self.dilation, self.kernel_size, strict=True))

    @property
    def has_gate(self) -> bool:
        """True when the gated residual is active (a ``gate`` parameter exists)."""
        return self.gate is not None

    @classmethod
    def from_conv2d(
        cls,
        conv: nn.Conv2d,
        *,
        gated_residual: bool = True,
        binarize_input: bool = True,
        gate_init: float = 0.0,
    ) -> BinaryConv2d:
        """A :class:`BinaryConv2d` with ``conv``'s geometry, its weights (as latent weights) and its bias.

        TypeError when ``conv`` is not an ``nn.Conv2d``; ValueError for a ``padding_mode`` other than 'zeros'.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv2d expects an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"only padding_mode='zeros' is supported, got {conv.padding_mode!r}")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv2d_pair(conv.kernel_size),
            stride=conv2d_pair(conv.stride),
            padding=conv.padding if isinstance(conv.padding, str) else conv2d_pair(conv.padding),
            dilation=conv2d_pair(conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            gated_residual=gated_residual,
            binarize_input=binarize_input,
            gate_init=gate_init,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    # ------------------------------------------------------------------ deploy form
    def binary_weight(self) -> torch.Tensor:
        """The effective weights ``alpha * sign(Wc)`` (differentiable, see the module docstring)."""
        return binarize_weight(self.weight)

    @torch.no_grad()
    def to_deploy(self) -> BinaryConv2d:
        """Pack the weight signs into bits and cache the scales (see the module docstring); returns ``self``."""
        weight = self.weight.detach()
        centred = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
        self.deploy_scale = centred.abs().mean(dim=(1, 2, 3)).clone()
        self.packed_sign_bits = pack_sign_bits(centred)
        self.deployed = True
        return self

    def undeploy(self) -> BinaryConv2d:
        """Drop the packed weights and return to the training form; returns ``self``."""
        self.packed_sign_bits = None
        self.deploy_scale = None
        self.deployed = False
        return self

    def _deployed_conv(self, x_in: torch.Tensor) -> torch.Tensor:
        packed, scale = self.packed_sign_bits, self.deploy_scale
        if packed is None or scale is None:
            raise RuntimeError("BinaryConv2d: the deploy form is used before to_deploy()")
        signs = unpack_sign_bits(packed, self.weight.shape, x_in.dtype)
        out = F.conv2d(x_in, signs, None, self.stride, self.padding, self.dilation, self.groups)
        return out * scale.view(1, -1, 1, 1)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BinaryConv2d expects a 4-D input [N, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        x_in = binarize_activation(x) if self.binarize_input else x
        if self.deployed:
            if self.training:
                raise RuntimeError("a deployed BinaryConv2d is inference-only; call undeploy() before training")
            out = self._deployed_conv(x_in)
        else:
            weight = binarize_weight(self.weight) if self.binarize_weights else self.weight
            out = F.conv2d(x_in, weight, None, self.stride, self.padding, self.dilation, self.groups)
        if self.gate is not None:
            out = out + self.gate.view(1, -1, 1, 1) * x
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    # ------------------------------------------------------------------ cost model
    def count_ops(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> OpCounts:
        """Arithmetic of one forward pass producing ``output`` (convention of :mod:`compression.op_counts`).

        ``macs = out_numel * (in_channels/groups) * kh * kw``. With binary activations every MAC is one
        XNOR-popcount step (``binary_ops = macs``); with full-precision activations (``binarize_input=False``)
        each product is a sign flip of the input, so the MACs are ``additions`` and ``binary_ops = 0``.
        Full-precision extras per output element: one multiplication by the channel scale; with the gated
        residual one multiplication (``gate * x``) and one addition; with a bias one addition.
        """
        del inputs  # the output shape determines everything
        out_numel = int(output.numel())
        macs = conv_macs(out_numel, self.weight.shape)
        multiplications = out_numel
        additions = 0
        if self.gate is not None:
            multiplications += out_numel
            additions += out_numel
        if self.bias is not None:
            additions += out_numel
        if self.binarize_input:
            binary_ops = macs
        else:
            binary_ops = 0
            additions += macs
        return OpCounts(macs=macs, multiplications=multiplications, additions=additions, binary_ops=binary_ops)

    def packed_weight_bytes(self) -> int:
        """Deploy storage: 1 bit per weight (``ceil(numel / 8)`` bytes) plus 4 bytes per float kept.

        The floats are the per-output-channel scales, the gate (if any) and the bias (if any).
        """
        floats = self.out_channels
        if self.gate is not None:
            floats += self.gate.numel()
        if self.bias is not None:
            floats += self.bias.numel()
        return math.ceil(self.weight.numel() / 8) + 4 * floats

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding!r}"
        )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        text += f", bias={self.bias is not None}, gate={self.has_gate}, binarize_input={self.binarize_input}"
        if self.deployed:
            text += ", deployed=True"
        return text
