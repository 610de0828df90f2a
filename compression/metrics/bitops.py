"""Bit-operations: the cost measure of quantized networks.

``bit-ops = MACs x weight bits x activation bits`` per layer (the measure Widening and Squeezing, arXiv:2002.00555,
and the QNN literature use to compare networks of mixed precision), priced per layer by
:func:`compression.op_counts.layer_bit_ops`: LSQ layers count themselves
(:attr:`~compression.op_counts.OpCounts.bit_ops`), binary layers cost one bit-op per XNOR-popcount step, and every
other counted layer (float convolutions, linear layers) costs 32 x 32 bit-ops per MAC.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from compression.metrics.ops import ModelOps, count_ops
from compression.op_counts import FLOAT_BITS, layer_bit_ops

__all__ = ["FLOAT_BITS", "bit_ops_of", "count_bit_ops"]


def count_bit_ops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Total bit-ops of one forward pass at batch 1 (see the module docstring)."""
    return bit_ops_of(count_ops(model, input_shape))


def bit_ops_of(ops: ModelOps) -> int:
    """Total bit-ops of an already counted model."""
    return sum(layer_bit_ops(layer.counts) for layer in ops.layers)
