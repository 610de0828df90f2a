"""The PU compression results table: every student family distilled on the transfer sets of the
PU compression paper's CIFAR-10 table, on the benchmark task.

Usage (repository root)::

    python -m bench.bench_pool_ingest                  # once: the pool (bench/artifacts/pools)
    python -m bench.bench_table --mode smoke           # a few minutes: a few hundred images, 1 epoch, no docs
    python -m bench.bench_table --mode quick           # about 45 minutes on 2 CPU cores
    python -m bench.bench_table --mode full            # longer schedules: for a GPU (uses CUDA when present)
    [--regime on-topic|wild] [--families ghost binary adder] [--rows ROW ...] [--seeds 3] [--epochs N]
    [--threads 2] [--no-write] [--resume] [--teacher resnet|cnn]

``--regime`` picks the pool of ../shared/BENCHMARK.md (``on-topic``: 29,700 task images among 76,997; ``wild``:
1,500 among 48,797); the wild regime's files carry a ``_wild`` suffix. ``--rows`` runs only those rows,
``--seeds N`` every row with DistillConfig seeds 0..N-1 (the table gives mean and standard deviation),
``--epochs N`` overrides the schedule's epochs of the pool rows (say so when reporting). ``--teacher cnn`` repeats
the table for the second benchmark teacher (the plain CNN of ``condense example`` trained on all 30,000 images by
``python -m bench.train_teacher --arch cnn``; its students get a quarter of *its* MACs); its files carry a ``_cnn``
suffix.

Writes ``docs/results/table_<mode>.json`` and the table of ``docs/results.md`` between the ``table:<mode>``
markers (not for ``smoke``, whose figures go to ``bench/artifacts/table_smoke.json`` only).

Rows, per student family (transfer-set sizes count the 300 labelled positives where they are part of the set):

- **teacher**: trained on all 30,000 labelled training images (``bench/artifacts/teacher.pt``).
- **KD, full data**: the 30,000 training images. **Positives only**: the 300. Both are the runs of
  ``bench/bench_distill.py``; they are reused from ``docs/results/distill_<mode>.json`` when that file has them with
  this mode's schedule (the table says so), and run here otherwise.
- **PU-s1**: the positives plus everything PU mining selects (``S`` pool items).
- **random pool**: the positives plus ``S`` pool items drawn uniformly at random: the benchmark's row, as many random
  items as PU selects, so PU-s1 against it shows what choosing the items is worth at the same size.
- **default**: the positives plus the training part of the default selection (:mod:`pu_mining.selection`; its
  held-back evaluation part is never trained on), **random, default size**: the positives plus the training part
  of the ``random`` selection (as many items), **DFND**: the positives plus the training part of the ``dfnd``
  selection (the teacher's most self-confident pool items, no labels used to choose them, same size), distilled
  with the family's default config plus DFND's noise-adaptation term (``noise_adaptation_weight=1``,
  :mod:`compression.distill.noise_adaptation`).
- **PU-s2**: the positives plus the ``S // 2`` best-scoring PU selections, and **random pool, half**: the
  positives plus the first ``S // 2`` of the random draw (the same size and positives as PU-s2). BENCHMARK.md's
  PU-s2, "capped at the random row's count", would change nothing with the random row at ``S``; halving makes PU-s2
  a real second point, with a random row of its own size to compare with. The ``S`` random items are the half
  row's items (seed 0) plus ``S - S // 2`` more drawn from the rest of the pool (seed 1).

Mining runs once (estimated class prior, default :class:`~pu_mining.miner.MiningConfig`, ``--threads`` threads),
is shared by every family and cached in ``bench/artifacts/table_mining.{npz,json}`` (keyed by the pool's name and
version, the teacher file's hash, the mining config and the thread count). The teacher's logits on the pool items
used are cached in ``bench/artifacts/table_pool_logits.npz``. Mining precision / recall count an item as a true
positive iff its pool name starts with ``fmnist_task:`` (the 29,700 task images in the pool); they are given for
the random rows too (their precision is the pool's share of task images).

Each run: the family's default :class:`~compression.distill.DistillConfig`, the same number of epochs as the
"KD, full data" run of its family (so PU rows compare with it), batch 128, and the best epoch chosen by top-1
agreement with the teacher on the first 2,048 images of the (seed-0 shuffled) transfer set, a random sample of it:
no test image and no image outside the transfer set is used for any choice. Accuracy on the 5,000 test images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_distill import (
    FAMILIES,
    RESULTS_DIR,
    ROOT,
    _log,
    _machine,
    _run,
    _teacher,
)
from bench.bench_distill import SCHEDULES as DISTILL_SCHEDULES
from bench.task import TASK_CLASSES, load_task
from bench.train_teacher import TEACHERS
from compression import Budget
from compression.distill import TransferSet, default_config, predict_logits
from compression.metrics.graph_ops import teacher_macs
from storage.hashing import file_sha256

ARTIFACTS = ROOT / "bench" / "artifacts"
MINING_CACHE = ARTIFACTS / "table_mining"
LOGITS_CACHE = ARTIFACTS / "table_pool_logits.npz"
TRUTH_PREFIX = "fmnist_task:"
PU_ROWS = ("random_full", "pu_s1", "random", "pu_s2", "default", "random_default", "dfnd")
ALL_ROWS = ("full", "positives", *PU_ROWS)
REGIME_SUFFIX = {"on-topic": "", "wild": "_wild"}


def table_suffix(regime: str, teacher_name: str = "resnet") -> str:
    """The suffix of one pool and teacher's files: ``""`` for the on-topic pool and the ResNet, ``_wild_cnn``, ..."""
    return REGIME_SUFFIX[regime] + ("" if teacher_name == "resnet" else f"_{teacher_name}")


def table_name(mode: str, regime: str, teacher_name: str = "resnet") -> str:
    """The name of one table's files and docs markers: ``quick``, ``quick_wild``, ``quick_wild_cnn``, ..."""
    return mode + table_suffix(regime, teacher_name)


ROW_LABELS = {
    "teacher": "teacher",
    "full": "KD, full data",
    "positives": "positives only",
    "random_full": "random pool",
    "random": "random pool, half",
    "pu_s1": "PU-s1",
    "pu_s2": "PU-s2",
    "default": "default selection",
    "random_default": "random, default size",
    "dfnd": "DFND",
}
ROW_DATA = {
    "full": "the labelled training images",
    "positives": "the 300 labelled positives",
    "random_full": "300 positives + {pool:,} random pool items",
    "random": "300 positives + {pool:,} random pool items",
    "pu_s1": "300 positives + all {pool:,} PU selections",
    "pu_s2": "300 positives + {pool:,} best PU selections",
    "default": "300 positives + {pool:,} default-selection items (training part)",
    "random_default": "300 positives + {pool:,} random pool items",
    "dfnd": "300 positives + {pool:,} most self-confident pool items",
}
PAPER_CIFAR10 = {"teacher": 95.61, "full": 94.40, "random_full": 87.02, "pu_s1": 93.75}
GHOST_GAP_GOAL = 1.0  # points PU-s1 may fall below KD on full data (ghost)


@dataclass(frozen=True)
class TableSchedule:
    """Epochs per family (full data and every PU-style row), epochs for the 300 positives, and, for the smoke
    mode only, a cap on the images of every transfer set."""

    epochs: dict[str, int]
    positives: int
    limit: int | None = None


SCHEDULES = {
    "smoke": TableSchedule(epochs={"ghost": 1, "binary": 1, "adder": 1}, positives=1, limit=400),
    "quick": TableSchedule(
        epochs=dict(DISTILL_SCHEDULES["quick"].full), positives=DISTILL_SCHEDULES["quick"].positives
    ),
    "full": TableSchedule(epochs=dict(DISTILL_SCHEDULES["full"].full), positives=DISTILL_SCHEDULES["full"].positives),
}


# ---------------------------------------------------------------------------------------------------------------
# Mining, once, cached


def _open_pool(regime: str = "on-topic") -> Any:
    from bench.bench_pool_ingest import DEFAULT_ROOT, open_benchmark_pool_store, pool_name

    root = ROOT / DEFAULT_ROOT
    if not root.exists():
        raise SystemExit(f"{root} missing: ingest the benchmark pool first (python -m bench.bench_pool_ingest)")
    return open_benchmark_pool_store(root).open(pool_name(regime))


def mine_once(
    teacher: Any,
    pool: Any,
    teacher_hash: str,
    threads: int,
    regime: str = "on-topic",
    teacher_name: str = "resnet",
    min_selection: int | None = None,
) -> dict[str, Any]:
    """The selections (``ids``: PU-s1's training part, best first; ``strategy_ids``: the training part of every
    strategy of :data:`pu_mining.selection.SELECTIONS`), from the cache when its key matches, else mined and
    cached."""
    from bench.bench_mining import benchmark_positives, score, strategy_figures
    from pu_mining.miner import MiningConfig, score_pool, select
    from pu_mining.selection import SELECTIONS

    config = MiningConfig(num_threads=threads, min_selection=min_selection)
    floor_suffix = "" if min_selection is None else f"_min{min_selection}"
    cache = MINING_CACHE.with_name(MINING_CACHE.name + table_suffix(regime, teacher_name) + floor_suffix)
    key = {
        "pool": pool.name,
        "pool_version": pool.version,
        "pool_items": len(pool),
        "teacher_sha256": teacher_hash,
        "mining_config": asdict(config),
    }
    meta_path, arrays_path = cache.with_suffix(".json"), cache.with_suffix(".npz")
    if meta_path.exists() and arrays_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            arrays = np.load(arrays_path)
            _log(f"mining: cached result {meta_path.relative_to(ROOT)} ({meta['figures']['selected']:,} selected)")
            strategy_ids = {name: arrays[f"strategy_{name}"] for name in SELECTIONS}
            return {
                **meta,
                "ids": arrays["ids"],
                "scores": arrays["scores"],
                "strategy_ids": strategy_ids,
                "cached": True,
            }
    _log(f"mining pool {pool.name!r} ({len(pool):,} items), estimated prior, {threads} threads")
    started = time.perf_counter()
    scored = score_pool(teacher, benchmark_positives(), pool, config, on_progress=lambda event: _log(f"  {event}"))
    strategies = {name: select(scored, name, min_selection=min_selection) for name in SELECTIONS}
    result = strategies["pu"]
    wall = time.perf_counter() - started
    figures = score(names := pool.names(), result.ids, result.candidate_ids, result.candidate_scores)
    report = result.report
    meta = {
        "key": key,
        "wall_s": round(wall, 1),
        "figures": figures,
        "prior_used": round(report.prior, 4),
        "prior_estimated": report.prior_estimated,
        "holdout_recall": None if report.holdout_recall is None else round(report.holdout_recall, 4),
        "class_histogram": report.class_histogram,
        "seconds": report.seconds,
        "strategies": {
            name: {
                "training": len(chosen.ids),
                "evaluation": len(chosen.evaluation_ids),
                "holdout_recall": chosen.report.holdout_recall,
                "holdout_recall_interval": chosen.report.holdout_recall_interval,
                "selection_recall": strategy_figures(names, chosen)["recall"],  # with its held-back part
                "class_makeup": chosen.report.class_histogram,
            }
            for name, chosen in strategies.items()
        },
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    strategy_ids = {name: chosen.ids for name, chosen in strategies.items()}
    np.savez(
        arrays_path, ids=result.ids, scores=result.scores, **{f"strategy_{n}": ids for n, ids in strategy_ids.items()}
    )
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    _log(
        f"mining: {figures['selected']:,} selected, precision {figures['precision']:.3f}, "
        f"recall {figures['recall']:.3f} ({wall:.0f} s)"
    )
    return {**meta, "ids": result.ids, "scores": result.scores, "strategy_ids": strategy_ids, "cached": False}


def pool_logits(
    teacher: Any,
    pool: Any,
    ids: np.ndarray,
    teacher_hash: str,
    regime: str = "on-topic",
    teacher_name: str = "resnet",
) -> tuple[torch.Tensor, float]:
    """The teacher's logits on pool items ``ids`` (cached per item), and the seconds spent computing new ones."""
    cache = LOGITS_CACHE.with_name(LOGITS_CACHE.stem + table_suffix(regime, teacher_name) + ".npz")
    logits = np.full((len(pool), TASK_CLASSES), np.nan, dtype=np.float32)
    if cache.exists():
        cached = np.load(cache)
        if (
            str(cached["teacher_sha256"]) == teacher_hash
            and int(cached["pool_version"]) == pool.version
            and cached["logits"].shape == logits.shape
        ):
            logits = cached["logits"].copy()
    missing = ids[np.isnan(logits[ids, 0])]
    seconds = 0.0
    if len(missing):
        _log(f"teacher logits on {len(missing):,} pool items")
        started = time.perf_counter()
        missing = np.sort(missing)
        for start in range(0, len(missing), 8192):
            chunk = missing[start : start + 8192]
            logits[chunk] = predict_logits(teacher, pool.image_tensor(chunk)).numpy()
        seconds = time.perf_counter() - started
        np.savez(cache, logits=logits, teacher_sha256=teacher_hash, pool_version=pool.version)
    return torch.from_numpy(logits[ids]), seconds


def selection_figures(names: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """Precision / recall of a set of pool items against the truth (task images of the pool)."""
    truth = np.char.startswith(names.astype(str), TRUTH_PREFIX)
    hits = int(truth[ids].sum())
    return {
        "pool_items": len(ids),
        "task_items": hits,
        "precision": round(hits / max(1, len(ids)), 4),
        "recall": round(hits / int(truth.sum()), 4),
    }


# ---------------------------------------------------------------------------------------------------------------
# Transfer sets and runs


def _pu_transfer_set(
    positives: Any, positive_logits: torch.Tensor, pool_images: torch.Tensor, logits: torch.Tensor, seed: int = 0
) -> TransferSet:
    """The 300 labelled positives and unlabelled pool items (label -1), shuffled with ``seed``."""
    images = torch.cat([positives.images, pool_images])
    labels = torch.cat([positives.labels, torch.full((len(pool_images),), -1, dtype=torch.long)])
    teacher_logits = torch.cat([positive_logits, logits])
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return TransferSet(images[order], labels[order], teacher_logits[order])


def random_rows(pool_size: int, selected: int) -> tuple[np.ndarray, np.ndarray]:
    """The random rows' pool items: ``selected // 2`` drawn uniformly without replacement (seed 0, the half row),
    and those followed by ``selected - selected // 2`` more drawn uniformly from the rest (seed 1): again a uniform
    draw, of ``selected`` items (the full row)."""
    half = np.random.default_rng(0).choice(pool_size, size=selected // 2, replace=False)
    rest = np.setdiff1d(np.arange(pool_size), half)
    extra = np.random.default_rng(1).choice(rest, size=selected - len(half), replace=False)
    return half, np.concatenate([half, extra])


def _reusable_distill_runs(mode: str, schedule: TableSchedule, teacher_accuracy: float) -> dict[str, Any]:
    """``family/full`` and ``family/positives`` runs of ``docs/results/distill_<mode>.json`` made with this mode's
    epochs, this teacher (same test accuracy) and the family's current default config (the fields that file
    records); {} where none."""
    path = RESULTS_DIR / f"distill_{mode}.json"
    if schedule.limit is not None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("mode") != mode or abs(data["teacher"]["test_accuracy"] - teacher_accuracy) > 1e-6:
        return {}
    reusable = {}
    for key, run in data.get("runs", {}).items():
        family, row = key.split("/", 1)
        wanted = schedule.epochs.get(family) if row == "full" else schedule.positives if row == "positives" else None
        if wanted is None or run.get("epochs") != wanted or family not in FAMILIES:
            continue
        config = default_config(family, **({"batch_size": 32} if row == "positives" else {})).to_dict()
        if run.get("config") == {name: config[name] for name in run.get("config", {})} and run.get("config"):
            reusable[key] = {**run, "reused_from": str(path.relative_to(ROOT)), "reused_date": data["machine"]["date"]}
    return reusable


def _load_partial(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("fingerprint") == fingerprint:
            return data["runs"]
    return {}


def _quarter_of_teacher(teacher: Any) -> Budget:
    """The students' budget: a quarter of the teacher's MACs."""
    reference = teacher_macs(teacher)
    if reference is None:
        raise RuntimeError("cannot count the teacher's MACs")
    return Budget(reference, 0.25, "macs")


def run_table(
    mode: str,
    families: tuple[str, ...],
    threads: int,
    resume: bool,
    regime: str = "on-topic",
    rows: tuple[str, ...] = ALL_ROWS,
    seeds: int = 1,
    epochs_override: int | None = None,
    teacher_name: str = "resnet",
    min_selection: int | None = None,
) -> dict[str, Any]:
    schedule = SCHEDULES[mode]
    torch.set_num_threads(threads)
    started = time.perf_counter()
    task = load_task()
    teacher = _teacher(teacher_name)
    teacher_spec = TEACHERS[teacher_name]
    teacher_hash = file_sha256(teacher_spec.path)
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    test_logits = predict_logits(teacher, task.test.images)
    positive_logits = predict_logits(teacher, task.positives.images)
    timings["teacher_test_logits_s"] = round(time.perf_counter() - clock, 1)
    teacher_accuracy = float((test_logits.argmax(1) == task.test.labels).float().mean())
    budget = _quarter_of_teacher(teacher)
    reference = budget.reference

    pool = _open_pool(regime)
    names = pool.names()
    mining = mine_once(teacher, pool, teacher_hash, threads, regime, teacher_name, min_selection)
    timings["mining_s"] = 0.0 if mining["cached"] else mining["wall_s"]
    selected = np.asarray(mining["ids"], dtype=np.int64)
    half = len(selected) // 2
    random_half, random_full = random_rows(len(pool), len(selected))
    pool_ids = {"pu_s1": selected, "pu_s2": selected[:half], "random": random_half, "random_full": random_full}
    strategy_ids = mining["strategy_ids"]
    pool_ids.update(default=strategy_ids["default"], random_default=strategy_ids["random"], dfnd=strategy_ids["dfnd"])
    if schedule.limit is not None:  # smoke: a few hundred images per transfer set
        pool_ids = {row: ids[: schedule.limit - len(task.positives)] for row, ids in pool_ids.items()}
    needed = np.unique(np.concatenate(list(pool_ids.values())))
    logits_all, logits_s = pool_logits(teacher, pool, needed, teacher_hash, regime, teacher_name)
    timings["pool_logits_s"] = round(logits_s, 1)
    position = {int(item): k for k, item in enumerate(needed)}

    runs: dict[str, Any] = _reusable_distill_runs(mode, schedule, teacher_accuracy)
    runs = {key: run for key, run in runs.items() if key.split("/")[0] in families}
    fingerprint = {
        "mode": mode,
        "regime": regime,
        "epochs_override": epochs_override,
        "teacher_sha256": teacher_hash,
        "mining_key": mining["key"],
        "schedule": asdict(schedule),
        "threads": threads,
    }
    partial_path = ARTIFACTS / f"table_{table_name(mode, regime, teacher_name)}_partial.json"
    done = _load_partial(partial_path, fingerprint) if resume else {}
    train_logits: torch.Tensor | None = None

    def record(key: str, run: dict[str, Any]) -> None:
        runs[key] = run
        done[key] = run
        partial_path.write_text(json.dumps({"fingerprint": fingerprint, "runs": done}, indent=1) + "\n")

    jobs = [(family, row, seed) for family in families for row in rows for seed in range(seeds)]
    for family, row, seed in jobs:
        epochs = schedule.epochs[family] if epochs_override is None or row == "full" else epochs_override
        key = f"{family}/{row}" + (f"@seed{seed}" if seed else "")
        seed_override: dict[str, Any] = {"seed": seed} if seed else {}
        if key in runs:
            continue
        if key in done:
            runs[key] = {**done[key], "resumed": True}
            continue
        clock = time.perf_counter()
        if row == "full":
            count = schedule.limit or len(task.train)
            if train_logits is None:
                logits_clock = time.perf_counter()
                train_logits = predict_logits(teacher, task.train.images[:count])
                timings["teacher_train_logits_s"] = round(time.perf_counter() - logits_clock, 1)
            transfer = TransferSet(task.train.images[:count], task.train.labels[:count], train_logits[:count])
            _log(f"{family}: KD on {len(transfer):,} training images ({epochs} epochs)")
            run = _run(family, budget, transfer, epochs, teacher, test_logits, task, **seed_override)
        elif row == "positives":
            transfer = TransferSet(task.positives.images, task.positives.labels, positive_logits)
            _log(f"{family}: KD on the 300 positives ({schedule.positives} epochs)")
            run = _run(
                family,
                budget,
                transfer,
                schedule.positives,
                teacher,
                test_logits,
                task,
                batch_size=32,
                **seed_override,
            )
        else:
            ids = pool_ids[row]
            transfer = _pu_transfer_set(
                task.positives,
                positive_logits,
                pool.image_tensor(ids),
                logits_all[torch.tensor([position[int(i)] for i in ids], dtype=torch.long)],
            )
            _log(f"{family}: {ROW_LABELS[row]}, {len(transfer):,} images ({epochs} epochs, seed {seed})")
            extra: dict[str, Any] = {"noise_adaptation_weight": 1.0} if row == "dfnd" else {}
            run = _run(family, budget, transfer, epochs, teacher, test_logits, task, **seed_override, **extra)
            run["pool_items"] = len(ids)
            run["selection"] = selection_figures(names, ids)
        run["total_s"] = round(time.perf_counter() - clock, 1)
        _log(
            f"  test accuracy {run['test_accuracy']:.4f} "
            f"({run['wall_s']:.0f} s training, {run['total_s']:.0f} s in all)"
        )
        record(key, run)

    wall = time.perf_counter() - started
    return {
        "mode": mode,
        "regime": regime,
        "seeds": seeds,
        "rows": list(rows),
        "epochs_override": epochs_override,
        "min_selection": min_selection,
        "command": f"python -m bench.bench_table --mode {mode} --regime {regime}"
        + ("" if families == FAMILIES else f" --families {' '.join(families)}")
        + ("" if rows == ALL_ROWS else f" --rows {' '.join(rows)}")
        + ("" if seeds == 1 else f" --seeds {seeds}")
        + ("" if epochs_override is None else f" --epochs {epochs_override}")
        + ("" if teacher_name == "resnet" else f" --teacher {teacher_name}")
        + ("" if min_selection is None else f" --min-selection {min_selection}"),
        "machine": {**_machine(), "cores": threads},
        "schedule": asdict(schedule),
        "teacher": {
            "name": teacher_name,
            "label": teacher_spec.label,
            "file": str(teacher_spec.path.relative_to(ROOT)),
            "sha256": teacher_hash,
            "test_accuracy": teacher_accuracy,
            "parameters": teacher.parameter_count,
            "macs": reference,
            "multiplications": reference,
        },
        "mining": {key: value for key, value in mining.items() if key not in ("ids", "scores", "strategy_ids")},
        "pool_ids_sha256": {
            row: hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()[:16] for row, ids in pool_ids.items()
        },
        "runs": runs,
        "timings": timings,
        "run_seconds_sum": round(sum(run["wall_s"] for run in runs.values() if "reused_from" not in run), 1),
        "run_total_sum": round(
            sum(run.get("total_s", run["wall_s"]) for run in runs.values() if "reused_from" not in run), 1
        ),
        "raw_path": "bench/artifacts/table_smoke.json" if mode == "smoke" else f"docs/results/table_{mode}.json",
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    from bench.table_controls import CONTROLS, run_controls
    from bench.table_report import render_markdown, write_markdown_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(SCHEDULES), default="quick")
    parser.add_argument(
        "--families", type=lambda text: text.replace(",", " ").split(), nargs="+", default=[list(FAMILIES)]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--regime", choices=tuple(REGIME_SUFFIX), default="on-topic")
    parser.add_argument("--rows", nargs="+", choices=ALL_ROWS, default=list(ALL_ROWS))
    parser.add_argument("--seeds", type=int, default=1, help="DistillConfig seeds 0..N-1 for every row")
    parser.add_argument("--epochs", type=int, default=None, help="override the pool rows' epochs (report it)")
    parser.add_argument(
        "--min-selection",
        type=int,
        default=None,
        help="the fewest items the default selection takes (MiningConfig.min_selection; the service's floor is "
        "pu_mining.selection.default_min_selection(pool size): 6,000 on both benchmark pools)",
    )
    parser.add_argument("--resume", action="store_true", help="keep the runs of an interrupted run of this mode")
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="resnet", help="the benchmark teacher")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--out", type=Path, default=None, help="also write the raw figures to this JSON file")
    parser.add_argument(
        "--controls",
        nargs="+",
        metavar="FAMILY/CONTROL",
        help=f"run only these control runs ({', '.join(CONTROLS)}) into docs/results/table_<mode>_controls.json",
    )
    args = parser.parse_args(argv)
    families = tuple(dict.fromkeys(name for group in args.families for name in group))
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families: {', '.join(sorted(unknown))} (choose from {', '.join(FAMILIES)})")
    families = tuple(name for name in FAMILIES if name in families)
    if args.controls:
        for job in args.controls:
            family, _, control = job.partition("/")
            if family not in FAMILIES or control not in CONTROLS:
                parser.error(
                    f"--controls takes FAMILY/CONTROL with a family of {FAMILIES} and a control of "
                    f"{tuple(CONTROLS)}, got {job!r}"
                )
        run_controls(args.mode, args.controls, args.threads)
        return
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    rows = tuple(row for row in ALL_ROWS if row in args.rows)
    results = run_table(
        args.mode,
        families,
        args.threads,
        args.resume,
        args.regime,
        rows,
        args.seeds,
        args.epochs,
        args.teacher,
        args.min_selection,
    )
    name = table_name(args.mode, args.regime, args.teacher)
    results["raw_path"] = (
        f"bench/artifacts/table_{name}.json" if args.mode == "smoke" else f"docs/results/table_{name}.json"
    )
    if args.out is not None:
        results["raw_path"] = str(args.out)
    body = render_markdown(results)
    print(body)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.mode == "smoke":
        (ARTIFACTS / f"table_{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    elif not args.no_write:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"table_{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        write_markdown_section(name, body)


if __name__ == "__main__":
    main()
