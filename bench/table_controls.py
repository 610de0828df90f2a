"""Control runs of the PU compression table (:mod:`bench.bench_table` ``--controls``): the same rows with other
seeds, epochs or caps, to tell a real difference between rows from seed noise."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from bench.bench_distill import (
    RESULTS_DIR,
    TEACHER_PATH,
    _log,
    _machine,
    _run,
    _teacher,
)
from bench.bench_table import (
    SCHEDULES,
    _open_pool,
    _pu_transfer_set,
    _quarter_of_teacher,
    mine_once,
    pool_logits,
    random_rows,
    selection_figures,
)
from bench.task import TASK_CLASSES, load_task
from compression.distill import TransferSet, predict_logits
from storage.hashing import file_sha256

CONTROLS = {
    "random_2x": "the half random row with twice the epochs (as many steps as PU-s1)",
    "random_full_seed1": "the random row (PU-s1's size) with DistillConfig seed 1",
    "pu_s2_2x": "PU-s2 with twice the epochs (as many steps as PU-s1)",
    "pu_s2_stratified": "PU-s2 capped per teacher class (the whole selection's class mix, best scores within a class)",
    "pu_s1_seed1": "PU-s1 with DistillConfig seed 1 (batch order and flips; same initial weights)",
    "pu_s2_seed1": "PU-s2 with DistillConfig seed 1",
    "pu_s1_seed2": "PU-s1 with DistillConfig seed 2",
    "full_seed1": "KD on the 30,000 labelled training images with DistillConfig seed 1",
}


def stratified_cap(ids: np.ndarray, classes: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    """``count`` of ``ids`` (best first) keeping the teacher-class mix of all of them: per class its share of
    ``count`` (largest remainders), best-scoring first."""
    counts = np.bincount(classes, minlength=num_classes)
    exact = counts * count / len(ids)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota))[: count - quota.sum()]] += 1
    return np.concatenate([ids[classes == k][: quota[k]] for k in range(num_classes)])


def run_controls(mode: str, jobs: list[str], threads: int) -> dict[str, Any]:
    """Control runs for reading the table (``FAMILY/CONTROL`` jobs, :data:`CONTROLS`), on the cached mining and
    logits of ``mode``; merged into ``docs/results/table_<mode>_controls.json``."""
    schedule = SCHEDULES[mode]
    torch.set_num_threads(threads)
    task = load_task()
    teacher = _teacher()
    teacher_hash = file_sha256(TEACHER_PATH)
    test_logits = predict_logits(teacher, task.test.images)
    positive_logits = predict_logits(teacher, task.positives.images)
    budget = _quarter_of_teacher(teacher)
    pool = _open_pool()
    names = pool.names()
    mining = mine_once(teacher, pool, teacher_hash, threads)
    selected = np.asarray(mining["ids"], dtype=np.int64)
    half = len(selected) // 2
    random_ids, random_full = random_rows(len(pool), len(selected))  # the table's random rows
    selected_logits, _ = pool_logits(teacher, pool, selected, teacher_hash)
    stratified = stratified_cap(selected, selected_logits.argmax(1).numpy(), half, TASK_CLASSES)
    sets = {
        "random_2x": (random_ids, 2, {}),
        "random_full_seed1": (random_full, 1, {"seed": 1}),
        "pu_s2_2x": (selected[:half], 2, {}),
        "pu_s2_stratified": (stratified, 1, {}),
        "pu_s1_seed1": (selected, 1, {"seed": 1}),
        "pu_s2_seed1": (selected[:half], 1, {"seed": 1}),
        "pu_s1_seed2": (selected, 1, {"seed": 2}),
        "full_seed1": (None, 1, {"seed": 1}),
    }
    path = RESULTS_DIR / f"table_{mode}_controls.json"
    results = json.loads(path.read_text()) if path.exists() else {"mode": mode, "runs": {}}
    results["machine"] = {**_machine(), "cores": threads}
    for job in jobs:
        family, control = job.split("/")
        ids, factor, overrides = sets[control]
        epochs = schedule.epochs[family] * factor
        if ids is None:  # KD on the labelled training images, as bench_distill does
            transfer = TransferSet(task.train.images, task.train.labels, predict_logits(teacher, task.train.images))
        else:
            logits, _ = pool_logits(teacher, pool, ids, teacher_hash)
            transfer = _pu_transfer_set(task.positives, positive_logits, pool.image_tensor(ids), logits)
        _log(f"{job}: {CONTROLS[control]}; {len(transfer):,} images, {epochs} epochs")
        run = _run(family, budget, transfer, epochs, teacher, test_logits, task, **overrides)
        run["control"] = CONTROLS[control]
        if ids is not None:
            run.update(pool_items=len(ids), selection=selection_figures(names, ids))
        _log(f"  test accuracy {run['test_accuracy']:.4f} ({run['wall_s']:.0f} s training)")
        results["runs"][job] = run
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    return results


# ---------------------------------------------------------------------------------------------------------------
# Markdown
