"""Teacher and student files timed side by side, in the shape a report shows them (one call for the service)."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from compression.metrics.latency import measure_side_by_side

__all__ = ["compare_latency", "machine_description"]


def machine_description() -> str:
    """``x86_64, 2 cores (AMD EPYC ...)``: what a latency figure was measured on."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    except OSError:
        cpu = platform.processor() or "?"
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu})"


def compare_latency(
    files: Mapping[str, str | os.PathLike[str]],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    *,
    rounds: int = 5,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Time every file (e.g. ``{"teacher": ..., "student": ..., "student int8": ...}``) side by side.

    Returns ``{"machine", "threads", "rows": {name: {batch: {"min_ms", "median_ms", "speedup"}}}}`` where
    ``speedup`` is the first file's minimum over this file's (the first file is the reference, e.g. the teacher).
    """
    names = list(files)
    if not names:
        raise ValueError("give at least one ONNX file")
    rows: dict[str, dict[int, dict[str, float]]] = {name: {} for name in names}
    for batch in batch_sizes:
        stats = measure_side_by_side(
            [files[n] for n in names], input_shape, batch, rounds, 20 if batch < 8 else 4, intra_op_num_threads=threads
        )
        for name, stat in zip(names, stats, strict=True):
            rows[name][batch] = {
                "min_ms": stat.min_ms,
                "median_ms": stat.median_ms,
                "speedup": stats[0].min_ms / stat.min_ms,
            }
    return {"machine": machine_description(), "threads": threads or "default", "rows": rows}
