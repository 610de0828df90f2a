"""The benchmark task of ../shared/BENCHMARK.md; defined in :mod:`pu_mining.benchmark_task`, re-exported here for
the benchmark scripts' older imports."""

from pu_mining.benchmark_task import (
    INPUT_SHAPE,
    POSITIVES_PER_CLASS,
    TASK_CLASS_NAMES,
    TASK_CLASSES,
    BenchmarkTask,
    LabelledImages,
    load_task,
)

__all__ = [
    "INPUT_SHAPE",
    "POSITIVES_PER_CLASS",
    "TASK_CLASSES",
    "TASK_CLASS_NAMES",
    "BenchmarkTask",
    "LabelledImages",
    "load_task",
]
