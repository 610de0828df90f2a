"""Real images for tests: the benchmark task's Fashion-MNIST classes 0-4 (Debian package dataset-fashion-mnist),
from :mod:`pu_mining.benchmark_task`, under the names the tests import.

scripts/test.sh installs the package; a missing file is a failed test, not a skip.
"""

from pu_mining.benchmark_task import TASK_CLASS_NAMES, TASK_CLASSES, task_images

__all__ = ["TASK_CLASSES", "TASK_CLASS_NAMES", "task_images"]
