"""Ingest the benchmark pool (../shared/BENCHMARK.md) into a pool store and measure the throughput.

    python -m bench.bench_pool_ingest [--regime on-topic|wild] [--root bench/artifacts/pools] [--threads 2]

Builds :func:`pu_mining.benchmark_pool.build_benchmark_pool` (on-topic: 76,997 real images from packages; wild:
48,797), ingests it as pool ``benchmark`` (on-topic) or ``benchmark-wild`` (:func:`pool_name`; 28x28 grey
copies; one :class:`~pu_mining.pool.RecordSource` per source, item names ``SOURCE/INDEX`` so
the mining benchmark can recover the truth), and prints images per second. The pool is the one
``bench/bench_mining.py`` mines. An existing pool of the same name at ``--root`` is replaced; other pools there
are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pu_mining.benchmark_pool import REGIMES, SOURCES, build_benchmark_pool
from pu_mining.image_files import ImageRecord
from pu_mining.pool import PoolConfig, PoolStore, RecordSource
from storage import LocalBlobStore

DEFAULT_ROOT = Path("bench/artifacts/pools")
POOL_NAME = "benchmark"
POOL_NAMES = {"on-topic": POOL_NAME, "wild": "benchmark-wild"}


def pool_name(regime: str) -> str:
    """The stored pool's name for a regime of :data:`pu_mining.benchmark_pool.REGIMES`."""
    if regime not in POOL_NAMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    return POOL_NAMES[regime]


def benchmark_records(images: np.ndarray, source: np.ndarray, source_index: np.ndarray, name: str) -> RecordSource:
    """The pool items of one benchmark source, named ``INDEX`` (their index in that source)."""
    where = np.flatnonzero(source == name)
    return RecordSource(
        name, (ImageRecord(source=name, name=str(int(source_index[i])), image=images[i]) for i in where)
    )


def open_benchmark_pool_store(root: Path = DEFAULT_ROOT) -> PoolStore:
    return PoolStore(LocalBlobStore(root), cache_dir=root / "cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--regime", choices=REGIMES, default="on-topic")
    parser.add_argument("--resolution", type=int, default=None, help="embedder input size (default: the pool's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="ingest only the first N items (a quick check)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    pool = build_benchmark_pool(regime=args.regime)
    name = pool_name(args.regime)
    images, source, source_index = pool.images, pool.source, pool.source_index
    if args.limit is not None:
        images, source, source_index = images[: args.limit], source[: args.limit], source_index[: args.limit]
    store = open_benchmark_pool_store(args.root)
    if any(manifest.name == name for manifest in store.list()):
        store.delete(name)
    config = PoolConfig(image_size=28, channels=1)
    if args.resolution is not None:
        config = PoolConfig(image_size=28, channels=1, embedder_resolution=args.resolution)
    started = time.monotonic()
    embedder = config.load_embedder(num_threads=args.threads)
    load_seconds = time.monotonic() - started

    def show(event: dict) -> None:
        print(
            f"  {event['source']:<16} done {event['done']:>6}  added {event['added']:>6}  "
            f"duplicates {event['duplicates']:>4}  {event['images_per_second']:.0f} img/s",
            file=sys.stderr,
            flush=True,
        )

    sources = [benchmark_records(images, source, source_index, name) for name in SOURCES]
    report = store.ingest(name, sources, config=config, embedder=embedder, on_progress=show)
    manifest = store.manifest(name)
    result = {
        "regime": args.regime,
        "pool": name,
        "items_offered": len(images),
        "added": report.added,
        "duplicates": report.duplicates,
        "skipped": len(report.skipped),
        "ingest_seconds": round(report.seconds, 1),
        "embedder_load_seconds": round(load_seconds, 1),
        "images_per_second": round(report.images_per_second, 1),
        "embedder": manifest.embedder_fingerprint,
        "index_kind": manifest.index_kind,
        "index_bytes": manifest.index_bytes,
        "bytes_on_disk": manifest.bytes_on_disk,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible",
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
