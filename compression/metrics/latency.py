"""Inference latency of an ONNX file under ONNX Runtime on the CPU.

One :class:`onnxruntime.InferenceSession` (``CPUExecutionProvider``, all graph optimisations on) is
created per call and each batch size is timed separately: ``warmup`` untimed runs, then ``repeats``
timed ``session.run`` calls on a fixed seeded random input (wall clock, ``time.perf_counter``; input
creation is outside the timed region). ``intra_op_num_threads=None`` keeps ONNX Runtime's default
(one thread per physical core); pass 1 for single-thread numbers that are stable on a busy machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from compression.metrics.ops import check_batch_sizes, check_input_shape

__all__ = ["LatencyStats", "measure_onnx_latency", "measure_side_by_side", "open_cpu_session"]

_LATENCY_SEED = 0
_ORT_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


@dataclass(frozen=True)
class LatencyStats:
    """Timing of ``repeats`` runs of one batch, in milliseconds per batch (not per sample)."""

    batch_size: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_count(value: object, name: str, minimum: int) -> int:
    """Validate an int argument (``repeats``, ``warmup``, thread counts) against a minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def measure_onnx_latency(
    onnx_path: str | os.PathLike[str],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 50,
    warmup: int = 5,
    *,
    intra_op_num_threads: int | None = None,
) -> dict[int, LatencyStats]:
    """Time the ONNX model on batches of ``input_shape`` (one sample, no batch dimension).

    Returns ``{batch_size: LatencyStats}`` in the order of ``batch_sizes``. The file must have a single
    float input with a dynamic (or matching) batch dimension.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    shape = check_input_shape(input_shape)
    sizes = check_batch_sizes(batch_sizes)
    repeats = check_count(repeats, "repeats", 1)
    warmup = check_count(warmup, "warmup", 0)
    if intra_op_num_threads is not None:
        check_count(intra_op_num_threads, "intra_op_num_threads", 0)

    session = open_cpu_session(path, intra_op_num_threads)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path.name} has {len(inputs)} inputs; exactly one is expected")
    (graph_input,) = inputs
    dtype = _ORT_FLOAT_TYPES.get(graph_input.type)
    if dtype is None:
        raise ValueError(
            f"{path.name} input {graph_input.name!r} has type {graph_input.type}; a float tensor is expected"
        )
    declared = list(graph_input.shape)
    if len(declared) != len(shape) + 1:
        raise ValueError(
            f"input_shape {shape} does not fit {path.name}, whose input is {declared} "
            "(input_shape is one sample, without the batch dimension)"
        )
    for got, want in zip(shape, declared[1:], strict=True):
        if isinstance(want, int) and want != got:
            raise ValueError(f"input_shape {shape} does not fit {path.name}, whose input is {declared}")
    if isinstance(declared[0], int) and any(size != declared[0] for size in sizes):
        raise ValueError(f"{path.name} has a fixed batch size of {declared[0]}; cannot time {list(sizes)}")

    rng = np.random.default_rng(_LATENCY_SEED)
    results: dict[int, LatencyStats] = {}
    for size in sizes:
        feed = {graph_input.name: rng.standard_normal((size, *shape)).astype(dtype)}
        for _ in range(warmup):
            session.run(None, feed)
        times = np.empty(repeats, dtype=np.float64)
        for i in range(repeats):
            start = time.perf_counter()
            session.run(None, feed)
            times[i] = time.perf_counter() - start
        times_ms = times * 1e3
        results[size] = LatencyStats(
            batch_size=size,
            median_ms=float(np.median(times_ms)),
            p90_ms=float(np.percentile(times_ms, 90)),
            mean_ms=float(times_ms.mean()),
            min_ms=float(times_ms.min()),
            repeats=repeats,
        )
    return results


def open_cpu_session(path: str | os.PathLike[str], intra_op_num_threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimisation on (BN folding, fusions, the blocked layout)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure_side_by_side(
    onnx_paths: Sequence[str | os.PathLike[str]],
    input_shape: Sequence[int],
    batch_size: int = 1,
    rounds: int = 7,
    repeats: int = 10,
    *,
    intra_op_num_threads: int | None = 1,
) -> list[LatencyStats]:
    """Latency (ms per batch) of each file, timed in interleaved rounds on the same input.

    Every round times ``repeats`` runs of each file in turn, so a load change on a shared machine hits all files
    alike; each result summarises all ``rounds * repeats`` runs of its file. On a machine shared with other work the
    minimum is the better estimate of the unloaded latency: a run longer than the scheduler's time slice is likely
    to be preempted, which inflates the medians of larger models more than those of small ones
    (``intra_op_num_threads=1`` by default: single-thread figures are the stable ones on a busy machine; pass None
    for ONNX Runtime's default of one thread per core).
    """
    shape = check_input_shape(input_shape)
    (size,) = check_batch_sizes([batch_size])
    check_count(rounds, "rounds", 1)
    check_count(repeats, "repeats", 1)
    sessions = [open_cpu_session(Path(p), intra_op_num_threads) for p in onnx_paths]
    feed_array = np.random.default_rng(_LATENCY_SEED).standard_normal((size, *shape)).astype(np.float32)
    feeds = [{s.get_inputs()[0].name: feed_array} for s in sessions]
    for session, feed in zip(sessions, feeds, strict=True):
        session.run(None, feed)  # warm-up: first-run allocations
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for index, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, feed)
                times[index].append(time.perf_counter() - start)
    return [_stats(size, np.asarray(t) * 1e3) for t in times]


def _stats(batch_size: int, times_ms: np.ndarray) -> LatencyStats:
    return LatencyStats(
        batch_size=batch_size,
        median_ms=float(np.median(times_ms)),
        p90_ms=float(np.percentile(times_ms, 90)),
        mean_ms=float(times_ms.mean()),
        min_ms=float(times_ms.min()),
        repeats=len(times_ms),
    )
