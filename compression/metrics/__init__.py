"""Model metrics: op counts, parameters, weight bytes, ONNX Runtime latency and the combined profile."""

from __future__ import annotations

from compression.metrics.latency import LatencyStats, measure_onnx_latency
from compression.metrics.ops import LayerOps, ModelOps, count_ops, count_parameters, weight_bytes

__all__ = [
    "LatencyStats",
    "LayerOps",
    "ModelOps",
    "count_ops",
    "count_parameters",
    "measure_onnx_latency",
    "weight_bytes",
]
