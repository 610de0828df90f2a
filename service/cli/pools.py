"""``condense pool ingest | list | show | delete | demo``: manage the unlabelled pools that mining searches.

``condense pool demo`` builds the demo pool (pool ``demo``, :mod:`service.cli.demo_pool`) if it does not exist: what
``condense serve`` does on first start unless ``CONDENSE_DEMO_POOL=0``.

Pools live in the blob store the service uses (``CONDENSE_BLOB_URL``, default a folder under
``CONDENSE_DATA_DIR``; see :mod:`service.settings`), so a pool ingested here is the one ``condense serve`` mines.
S3 pool files are cached under ``CONDENSE_DATA_DIR/cache/pools``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["add_pool_commands"]


def _open_store() -> Any:
    from pu_mining.pool import PoolStore
    from service.settings import Settings

    settings = Settings.from_env()
    return PoolStore(settings.open_blobs(), cache_dir=settings.data_dir / "cache")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def _cmd_ingest(args: argparse.Namespace) -> int:
    from pu_mining.image_files import ReadLimits
    from pu_mining.pool import PoolConfig, PoolNotFoundError
    from service.cli.progress import ProgressLine

    store = _open_store()
    try:
        store.manifest(args.name)
        exists = True
    except PoolNotFoundError:
        exists = False
    config = None
    if not exists or any(v is not None for v in (args.image_size, args.channels, args.resolution)):
        defaults = PoolConfig()
        config = PoolConfig(
            image_size=args.image_size or defaults.image_size,
            channels=args.channels or defaults.channels,
            embedder=args.embedder or defaults.embedder,
            embedder_resolution=args.resolution or defaults.embedder_resolution,
            embedder_weights=args.embedder_weights,
        )
    started = time.monotonic()

    progress = ProgressLine(tty=True)

    def show(event: dict[str, Any]) -> None:
        if not args.quiet:
            progress.update(
                f"{event['source']}: {event['done']:,} read, {event['added']:,} added, "
                f"{event['duplicates']:,} duplicates, {event['skipped']:,} skipped "
                f"({event['images_per_second']:.0f} images/s)"
            )

    limits = ReadLimits(max_files=args.max_files) if args.max_files else None
    report = store.ingest(args.name, args.sources, config=config, limits=limits, on_progress=show)
    progress.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(
            f"pool {args.name} v{report.version}: {report.added:,} added, {report.duplicates:,} duplicates, "
            f"{len(report.skipped):,} skipped in {time.monotonic() - started:.1f} s "
            f"({report.images_per_second:.0f} images/s); index {report.index_kind}"
            + (" (rebuilt)" if report.index_rebuilt else "")
        )
        for line in report.skipped[:10]:
            print(f"  skipped {line}")
        if len(report.skipped) > 10:
            print(f"  ... and {len(report.skipped) - 10} more skipped")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    manifests = _open_store().list()
    if args.json:
        print(json.dumps([m.as_dict() for m in manifests], indent=1))
        return 0
    if not manifests:
        print("no pools (create one with: condense pool ingest NAME SOURCE...)")
        return 0
    print(f"{'name':<20} {'items':>10} {'version':>8} {'index':>6} {'size':>10}")
    for m in manifests:
        print(f"{m.name:<20} {m.count:>10,} {m.version:>8} {m.index_kind or '-':>6} {_size(m.bytes_on_disk):>10}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    manifest = _open_store().manifest(args.name)
    if args.json:
        print(json.dumps(manifest.as_dict(), indent=1))
        return 0
    config = manifest.config
    print(f"pool {manifest.name} (version {manifest.version})")
    print(f"  items         {manifest.count:,} ({manifest.duplicates_skipped:,} exact duplicates skipped)")
    print(f"  stored as     {config.image_size}x{config.image_size}, {config.channels} channel(s)")
    print(f"  embedder      {config.embedder} at {config.embedder_resolution} px, {manifest.embedding_dim}-d")
    print(f"  index         {manifest.index_kind} ({_size(manifest.index_bytes)})")
    print(f"  size on disk  {_size(manifest.bytes_on_disk)} in {len(manifest.shards)} shard(s)")
    print("  sources")
    for source, count in sorted(manifest.sources.items()):
        print(f"    {source:<30} {count:>10,}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    deleted = _open_store().delete(args.name)
    print(f"pool {args.name} deleted ({deleted} files)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from service.cli.demo_pool import DEMO_POOL, ensure_demo_pool
    from service.cli.progress import DemoPoolProgress

    store = _open_store()
    progress = None if args.quiet else DemoPoolProgress()
    try:
        built = ensure_demo_pool(store, progress, size=args.size)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print("condense pool demo: stopped; the pool was not created (run it again to build it)", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
    manifest = store.manifest(DEMO_POOL)
    if not built:
        print(f"pool {DEMO_POOL} exists ({manifest.count:,} images); nothing to do")
    elif args.quiet:
        print(f"pool {DEMO_POOL} built ({manifest.count:,} images)")
    return 0


def add_pool_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``pool`` and its subcommands to the ``condense`` parser."""
    pool = commands.add_parser("pool", help="manage the unlabelled pools mining searches")
    sub = pool.add_subparsers(dest="pool_command", required=True)
    ingest = sub.add_parser(
        "ingest", help="add images to a pool (creating it): folders, zip/tar, .npy/.npz, IDX, image files"
    )
    ingest.add_argument("name", help="pool name (lowercase letters, digits, '-', '_')")
    ingest.add_argument("sources", nargs="+", help="folders, archives, array or image files")
    ingest.add_argument("--image-size", type=int, help="side of the stored copies (new pools; default 32)")
    ingest.add_argument("--channels", type=int, choices=[1, 3], help="1 grey or 3 RGB (new pools; default 1)")
    ingest.add_argument("--embedder", help="'efficientnet-lite0' (default) or 'torchvision:NAME' with weights")
    ingest.add_argument("--embedder-weights", help="state-dict file of the embedder")
    ingest.add_argument("--resolution", type=int, help="embedder input size (default 64)")
    ingest.add_argument("--max-files", type=int, help="refuse archives with more members than this")
    ingest.add_argument("--quiet", action="store_true")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(run=_cmd_ingest)
    listing = sub.add_parser("list", help="the pools, with counts and sizes")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_cmd_list)
    show = sub.add_parser("show", help="one pool: counts, sources, index type, size on disk")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_cmd_show)
    delete = sub.add_parser("delete", help="remove a pool and its files")
    delete.add_argument("name")
    delete.set_defaults(run=_cmd_delete)
    from service.cli.demo_pool import DEMO_POOL_SIZE

    demo = sub.add_parser("demo", help=f"build the demo pool ({DEMO_POOL_SIZE:,} packaged real images) if missing")
    demo.add_argument("--size", type=int, default=DEMO_POOL_SIZE, help=f"images in all (default {DEMO_POOL_SIZE:,})")
    demo.add_argument("--quiet", action="store_true", help="no progress lines")
    demo.set_defaults(run=_cmd_demo)
