"""Ingest the benchmark pool (../shared/BENCHMARK.md) into a pool store and measure the throughput.

    python -m bench.bench_pool_ingest [--root bench/artifacts/pools] [--resolution 64] [--threads 2]

Builds :func:`pu_mining.benchmark_pool.build_benchmark_pool` (76,997 real images from packages), ingests it as
pool ``benchmark`` (28x28 grey copies; one :class:`~pu_mining.pool.RecordSource` per source, item names
``SOURCE/INDEX`` so the mining benchmark can recover the truth), and prints images per second. The pool is the
one ``bench/bench_mining.py`` mines. An existing pool at ``--root`` is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pu_mining.benchmark_pool import SOURCES, build_benchmark_pool
from pu_mining.image_files import ImageRecord
from pu_mining.pool import PoolConfig, PoolStore, RecordSource
from storage import LocalBlobStore

DEFAULT_ROOT = Path("bench/artifacts/pools")
POOL_NAME = "benchmark"


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
    parser.add_argument("--resolution", type=int, default=None, help="embedder input size (default: the pool's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="ingest only the first N items (a quick check)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    pool = build_benchmark_pool()
    images, source, source_index = pool.images, pool.source, pool.source_index
    if args.limit is not None:
        images, source, source_index = images[: args.limit], source[: args.limit], source_index[: args.limit]
    if args.root.exists():
        shutil.rmtree(args.root)
    store = open_benchmark_pool_store(args.root)
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
    report = store.ingest(POOL_NAME, sources, config=config, embedder=embedder, on_progress=show)
    manifest = store.manifest(POOL_NAME)
    result = {
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
