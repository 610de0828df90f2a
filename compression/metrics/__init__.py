"""Model metrics: op counts, parameters, weight bytes, ONNX Runtime latency and the combined profile.

The names below are loaded on first use (PEP 562): ``compression.metrics.intervals`` imports without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compression.metrics.latency import LatencyStats, measure_onnx_latency
    from compression.metrics.ops import LayerOps, ModelOps, count_ops, count_parameters, weight_bytes

_WHERE = {
    "LatencyStats": "compression.metrics.latency",
    "measure_onnx_latency": "compression.metrics.latency",
    "LayerOps": "compression.metrics.ops",
    "ModelOps": "compression.metrics.ops",
    "count_ops": "compression.metrics.ops",
    "count_parameters": "compression.metrics.ops",
    "weight_bytes": "compression.metrics.ops",
}

__all__ = [
    "LatencyStats",
    "LayerOps",
    "ModelOps",
    "count_ops",
    "count_parameters",
    "measure_onnx_latency",
    "weight_bytes",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'compression.metrics' has no attribute {name!r}")
