"""Operation counts shared by the layers and the profiler.

Convention (the one the GhostNet and AdderNet papers use when they compare networks):

* ``macs`` -- multiply-accumulate *positions* of the conv-like and linear layers: one per
  (output element, input element of its receptive field). For an ordinary convolution that is one
  multiplication plus one addition; an adder layer spends two additions (a subtraction and the
  accumulation) on each instead; a binary layer spends one XNOR-popcount step (a binary operation).
* ``multiplications`` / ``additions`` -- full-precision arithmetic actually performed.
* ``binary_ops`` -- 1-bit XNOR/popcount operations (binary layers only).
* ``bit_ops`` -- MACs times weight bits times activation bits of low-bit (LSQ) layers only;
  :func:`compression.metrics.bitops.count_bit_ops` adds every other layer at its own precision.

Batch norm and activations are not counted: batch norm folds into the preceding convolution at
deploy time, and activations are comparisons, not arithmetic.

A module that defines ``count_ops(inputs, output) -> OpCounts`` counts itself (its children are not
visited); :func:`compression.metrics.count_ops` handles ``nn.Conv2d`` and ``nn.Linear`` directly.
A module that stores its weights in a packed form at deploy time defines ``packed_weight_bytes() -> int``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


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
