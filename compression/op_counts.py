"""Operation counts: the convention and the one implementation of its rules, for torch modules and ONNX graphs.

Convention (the one the GhostNet and AdderNet papers use when they compare networks):

* ``macs`` -- multiply-accumulate *positions* of the conv-like and linear layers: one per
  (output element, input element of its receptive field). For an ordinary convolution that is one
  multiplication plus one addition; an adder layer spends two additions (a subtraction and the
  accumulation) on each instead; a binary layer spends one XNOR-popcount step (a binary operation).
* ``multiplications`` / ``additions`` -- full-precision arithmetic actually performed. A float convolution or
  linear layer counts ``multiplications = additions = macs``: summing the ``K`` products of a receptive field
  takes ``K - 1`` additions and adding the bias one more, so this is exact with a bias and one per output element
  too many without -- kept regardless of the bias so that float and adder layers compare like for like.
* ``binary_ops`` -- 1-bit XNOR/popcount operations (binary layers only).
* ``bit_ops`` -- MACs times weight bits times activation bits of low-bit (LSQ) layers only;
  :func:`layer_bit_ops` prices every other layer at its own precision (the measure of Widening and Squeezing,
  arXiv:2002.00555, and the QNN literature).

Batch norm and activations are not counted: batch norm folds into the preceding convolution at
deploy time, and activations are comparisons, not arithmetic.

The rules, used by every counter:

* :func:`conv_macs` -- a convolution with weight ``[C_out, C_in / groups, *kernel]``: ``C_in / groups x kernel``
  MACs per output element (the layers' own ``count_ops``, ``nn.Conv1d/2d/3d`` in :mod:`compression.metrics.ops`,
  ONNX ``Conv`` nodes in :mod:`compression.metrics.graph_ops`);
* :func:`matmul_macs` -- a linear layer or matrix product: the reduced dimension per output element
  (``nn.Linear``, ONNX ``Gemm`` / ``MatMul``);
* :func:`float_counts` -- the counts of a full-precision layer of ``macs`` MACs;
* :func:`layer_bit_ops`, :func:`float_bit_ops` -- bit-ops of one counted layer, of float MACs.

Walkers: :func:`compression.metrics.count_ops` over an ``nn.Module`` (a module that defines
``count_ops(inputs, output) -> OpCounts`` counts itself; its children are not visited),
:func:`compression.metrics.graph_ops.onnx_macs` over an ONNX graph. A module that stores its weights in a packed
form at deploy time defines ``packed_weight_bytes() -> int``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

__all__ = ["FLOAT_BITS", "OpCounts", "conv_macs", "float_bit_ops", "float_counts", "layer_bit_ops", "matmul_macs"]

FLOAT_BITS = 32
"""Bits of a full-precision weight or activation (float32) in bit-ops."""


@dataclass(frozen=True)
class OpCounts:
    """Arithmetic needed for one forward pass (see the module docstring for the convention)."""

    macs: int = 0
    multiplications: int = 0
    additions: int = 0
    binary_ops: int = 0
    bit_ops: int = 0

    def __add__(self, other: OpCounts) -> OpCounts:
        if not isinstance(other, OpCounts):
            return NotImplemented
        return OpCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def conv_macs(output_elements: int, weight_shape: Sequence[int]) -> int:
    """MACs of a convolution producing ``output_elements`` values with a weight of ``weight_shape``
    ``[C_out, C_in / groups, *kernel]`` (the layout of PyTorch and ONNX): ``C_in / groups x kernel`` per element."""
    return int(output_elements) * math.prod(int(dim) for dim in weight_shape[1:])


def matmul_macs(output_elements: int, reduced: int) -> int:
    """MACs of a linear layer or matrix product producing ``output_elements`` values, each a sum of ``reduced``
    products (``in_features``)."""
    return int(output_elements) * int(reduced)


def float_counts(macs: int) -> OpCounts:
    """A full-precision conv-like or linear layer: one multiplication and one addition per MAC."""
    return OpCounts(macs=macs, multiplications=macs, additions=macs)


def float_bit_ops(macs: int) -> int:
    """Bit-ops of ``macs`` full-precision MACs: :data:`FLOAT_BITS` x :data:`FLOAT_BITS` each."""
    return macs * FLOAT_BITS * FLOAT_BITS


def layer_bit_ops(counts: OpCounts) -> int:
    """Bit-ops of one counted layer: its own ``bit_ops`` (low-bit layers), one per binary operation plus float
    price for any other MAC (binary layers), float price for every MAC otherwise."""
    if counts.bit_ops:
        return counts.bit_ops
    if counts.binary_ops:
        return counts.binary_ops + float_bit_ops(counts.macs - counts.binary_ops)
    return float_bit_ops(counts.macs)
