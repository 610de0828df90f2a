"""The pipeline's stages, one function each: load, mine, distil, export and profile.

Each takes what the stages before it produced and returns a small record of its own; :func:`service.pipeline.run`
calls them in order and :mod:`service.pipeline.report` turns their records into the report.

- :func:`load_inputs`: the teacher (:func:`compression.load_teacher`: TorchScript, ``.pt2`` or ONNX; never
  unpickled) and the positives (:func:`pu_mining.positives.load_positives`), with a stratified hold-out;
- :func:`mine_pool`: PU mining of the pool (:func:`pu_mining.miner.mine`; Xu et al., NeurIPS 2019,
  arXiv:1909.09757), reusing a saved result when teacher, positives, pool version and options are the same;
- :func:`distill_student`: a Ghost, binary or adder student sized to ``budget_ratio`` of the teacher's MACs,
  distilled with robust KD (:func:`compression.distill`) on the positives plus the mined images;
- :func:`export_and_profile`: accuracy on the held-out positives, ONNX export verified in ONNX Runtime, and the
  profiles (parameters, MACs, multiplications, additions, weight bytes, latency) of student and teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.options import JobCancelled, JobOptions
from service.pipeline.progress import StageProgress
from service.pipeline.student_choice import choose_student, distill_family
from storage.files import atomic_write

__all__ = [
    "MAX_TRANSFER_BYTES",
    "Distilled",
    "Exported",
    "Inputs",
    "Mined",
    "distill_student",
    "export_and_profile",
    "load_inputs",
    "mine_pool",
]

MAX_TRANSFER_BYTES = 4 * 1024**3
"""Largest transfer set held in memory (images as float32 at the teacher's input): mined items beyond it are
dropped, lowest PU score first, and the report says so."""
_EXPORT_RESERVE_S = 60.0
MIN_STEPS_PER_EPOCH = 16
"""A small transfer set trains with smaller batches so that an epoch has at least this many optimiser steps (batches
not below :data:`MIN_BATCH_SIZE`): at the default batch of 128 a 400-image set gets 3 steps an epoch and a short
job's student can stay at chance (measured on the benchmark's wild pool: 3 epochs on ~1,000 images, 20 %)."""
MIN_BATCH_SIZE = 16


def batch_size_for(transfer_size: int, batch_size: int) -> int:
    """The batch size of a job: ``batch_size``, or smaller for a small transfer set (:data:`MIN_STEPS_PER_EPOCH`)."""
    if transfer_size // max(1, batch_size) >= MIN_STEPS_PER_EPOCH:
        return batch_size
    return max(MIN_BATCH_SIZE, min(batch_size, transfer_size // MIN_STEPS_PER_EPOCH))


@dataclass
class Inputs:
    """The loaded teacher, the positives split into trainable and held-out ones, and the opened pool."""

    teacher: Any
    positives: Any
    trainable: Any
    held_out: Any | None
    pool: Any


@dataclass
class Mined:
    """The mining result: the mined ids kept for the transfer set, the saved arrays, and mining's own report.

    ``evaluation_ids``: pool items the selection held back for evaluation (never in ``ids``, never trained on);
    ``selection``: the strategy used (``dfnd`` in the no-labels mode)."""

    ids: np.ndarray
    arrays: dict[str, np.ndarray]
    report: dict[str, Any]
    dropped_for_memory: int
    evaluation_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    selection: str = "default"


@dataclass
class Distilled:
    """The distilled student with its training record, the transfer and validation sets and the teacher's MACs."""

    result: Any
    config: Any
    transfer: Any
    validation: Any | None
    teacher_macs: int
    sizing: dict[str, Any] = field(default_factory=dict)
    """How the student was chosen (:func:`service.pipeline.student_choice.choose_student`), for the report."""
    held_back: Any | None = None
    """The pool items mining held back (``Mined.evaluation_ids``), unlabelled: never trained on."""


@dataclass
class Exported:
    """Accuracy figures and the student's and teacher's profiles (the ONNX file is written by then)."""

    evaluation: Any
    student_profile: dict[str, Any]
    teacher_profile: dict[str, Any]


def load_inputs(
    teacher_path: Path,
    positives_path: Path | None,
    options: JobOptions,
    blob_store: Any,
    pool_cache_dir: Path,
    check: Callable[[], None] | None = None,
) -> Inputs:
    """Load the teacher and the positives (converted to its input), hold out a share, open the pool.

    Without ``positives_path`` (the no-labels mode) the positives are an empty set named by ``options.class_names``
    (else ``class_0``, ``class_1``, ...): mining then selects without labels and nothing is held out.
    ``check`` (raising :class:`~service.options.JobCancelled` when the job should stop) runs before each of these
    steps, so a cancel during the load stage takes effect at the next step, not after the whole stage. A TorchScript
    teacher's code runs here, in the worker process (see docs/hardening.md).
    """
    step = check or (lambda: None)
    step()
    from compression import load_teacher
    from pu_mining.pool import PoolStore
    from pu_mining.positives import load_positives, split_holdout

    teacher = load_teacher(
        teacher_path,
        input_shape=options.input_shape,
        mean=list(options.mean) if options.mean else None,
        std=list(options.std) if options.std else None,
    )
    step()
    if positives_path is None:
        positives = no_positives(teacher, options)
        pool = PoolStore(blob_store, cache_dir=pool_cache_dir).open(options.pool)
        return Inputs(teacher, positives, positives, None, pool)
    positives = load_positives(positives_path, teacher.input_shape)
    step()
    if options.class_names is not None and list(options.class_names) != positives.class_names:
        raise ValueError(
            f"class_names {list(options.class_names)} differ from the positives' classes {positives.class_names}"
        )
    if len(positives.class_names) != teacher.num_classes:
        raise ValueError(
            f"the positives have {len(positives.class_names)} classes ({', '.join(positives.class_names)}) but the "
            f"teacher has {teacher.num_classes} outputs"
        )
    if options.holdout_fraction > 0:
        trainable, held_out = split_holdout(positives, options.holdout_fraction, options.seed)
    else:
        trainable, held_out = positives, None
    pool = PoolStore(blob_store, cache_dir=pool_cache_dir).open(options.pool)
    return Inputs(teacher, positives, trainable, held_out, pool)


def no_positives(teacher: Any, options: JobOptions) -> Any:
    """An empty labelled set at the teacher's input, named like the teacher's outputs (the no-labels mode)."""
    from pu_mining.positives import Positives

    names = list(options.class_names) if options.class_names else [f"class_{k}" for k in range(teacher.num_classes)]
    if len(names) != teacher.num_classes:
        raise ValueError(f"class_names has {len(names)} names but the teacher has {teacher.num_classes} outputs")
    empty = torch.zeros((0, *teacher.input_shape), dtype=torch.float32)
    return Positives(empty, torch.zeros(0, dtype=torch.int64), names, [], "none")


def _mining_cached(work: Path, fingerprint: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    try:
        saved = json.loads((work / "mining.json").read_text())
        if saved.get("fingerprint") != fingerprint:
            return None
        with np.load(work / "mining.npz", allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        return arrays, saved["report"]
    except (OSError, ValueError, KeyError):
        return None


def _save_mining(work: Path, fingerprint: str, arrays: dict[str, np.ndarray], report: dict[str, Any]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(work / "mining.npz") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy stubs: **arrays are arrays, not flags
    with atomic_write(work / "mining.json") as handle:
        handle.write(json.dumps({"fingerprint": fingerprint, "report": report}).encode())


def mine_pool(
    inputs: Inputs, options: JobOptions, work: Path, progress: StageProgress, num_threads: int | None
) -> Mined:
    """Mine the pool for images like the positives (or reuse the saved result); cap them to the memory limit."""
    from pu_mining.miner import MiningCancelled, MiningConfig, mine
    from pu_mining.selection import default_min_selection

    teacher, positives, pool = inputs.teacher, inputs.positives, inputs.pool
    labelled = len(inputs.trainable) > 0
    if not labelled and options.selection in ("pu", "pu-half"):
        raise ValueError(f"selection {options.selection!r} needs positives; without them use default, dfnd or random")
    selection = options.selection if labelled or options.selection != "default" else "dfnd"
    mining_config = MiningConfig(
        seed=options.seed,
        num_threads=num_threads,
        selection=selection,
        min_selection=default_min_selection(len(pool)),
    )
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                teacher.file_sha256,
                positives.source_hash,
                pool.name,
                pool.version,
                options.to_dict(),
                repr(mining_config),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    cached = _mining_cached(work, fingerprint)
    if cached is None:
        try:
            result = mine(
                teacher,
                inputs.trainable if labelled else None,
                pool,
                mining_config,
                class_names=positives.class_names,
                on_progress=lambda event: progress.emit(event["progress"], f"mining: {event['step']}"),
                should_stop=progress.stop_requested,
            )
        except MiningCancelled as error:
            raise JobCancelled(str(error)) from None
        arrays = {
            "ids": result.ids,
            "scores": result.scores,
            "teacher_classes": result.teacher_classes,
            "evaluation_ids": result.evaluation_ids,
            "evaluation_teacher_classes": result.evaluation_teacher_classes,
            "thumbnails": np.frombuffer(result.thumbnail_grid(pool, positives.class_names), dtype=np.uint8),
        }
        report = result.report.as_dict()
        _save_mining(work, fingerprint, arrays, report)
    else:
        arrays, report = cached
        progress.emit(1.0, "mining: reused the saved result")
    ids = arrays["ids"]
    per_item = int(np.prod(teacher.input_shape)) * 4
    room = max(0, MAX_TRANSFER_BYTES // per_item - len(inputs.trainable))
    dropped = max(0, len(ids) - room)
    evaluation_ids = arrays.get("evaluation_ids", np.empty(0, dtype=np.int64))
    return Mined(ids[:room], arrays, report, dropped, evaluation_ids, str(report.get("selection", selection)))


def distill_student(
    inputs: Inputs,
    mined: Mined,
    options: JobOptions,
    work: Path,
    progress: StageProgress,
    num_threads: int | None,
    cache_dir: Path | None = None,
) -> Distilled:
    """Build the student for the job's budget (:mod:`service.pipeline.student_choice`) and distil it on the
    positives plus the mined images (resumable); a ``dfnd`` selection adds DFND's noise-adaptation term."""
    from compression import distill
    from compression.distill import DistillCancelled, TransferSet, default_config
    from compression.metrics.graph_ops import teacher_macs
    from compression.teachers import adapt_images

    teacher, trainable, held_out = inputs.teacher, inputs.trainable, inputs.held_out
    mined_ids = mined.ids
    mined_images = inputs.pool.image_tensor(mined_ids) if len(mined_ids) else trainable.images[:0]
    if len(mined_ids) and tuple(mined_images.shape[1:]) != tuple(teacher.input_shape):
        mined_images = adapt_images(mined_images, teacher.input_shape)
    transfer = TransferSet(
        torch.cat([trainable.images, mined_images]),
        torch.cat([trainable.labels, torch.full((len(mined_ids),), -1, dtype=torch.int64)]),
    )
    validation = None if held_out is None else TransferSet(held_out.images, held_out.labels)
    held_back = None
    if len(mined.evaluation_ids):
        held_back_images = inputs.pool.image_tensor(mined.evaluation_ids)
        if tuple(held_back_images.shape[1:]) != tuple(teacher.input_shape):
            held_back_images = adapt_images(held_back_images, teacher.input_shape)
        held_back = TransferSet(held_back_images)
    reference_macs = teacher_macs(teacher)
    if reference_macs is None:
        raise ValueError("cannot count the teacher's MACs to size the student")
    torch.manual_seed(options.seed)
    student, sizing = choose_student(
        teacher, options, reference_macs, transfer.images, work, cache_dir or work / "cache"
    )
    torch.manual_seed(options.seed)
    overrides: dict[str, Any] = {"seed": options.seed}
    if mined.selection == "dfnd":  # Chen et al., CVPR 2021: KD plus the noise-adaptation matrix on hard labels
        overrides["noise_adaptation_weight"] = 1.0
    if options.epochs is not None:
        overrides["epochs"] = options.epochs
    if num_threads is not None:
        overrides["num_threads"] = num_threads
    if options.time_budget_min is not None:
        spent = time.monotonic() - progress.started
        overrides["time_budget_s"] = max(30.0, options.time_budget_min * 60.0 - spent - _EXPORT_RESERVE_S)
    config = default_config(distill_family(options, sizing)).replace(**overrides)
    config = config.replace(batch_size=batch_size_for(len(transfer), config.batch_size))

    def on_distill(event: Any) -> None:
        total = max(1, event.epochs * max(1, event.steps_per_epoch))
        if event.stage == "train":
            done = max(0, event.epoch - 1) * event.steps_per_epoch + event.step
        elif event.stage == "validate":  # after an epoch's training: that epoch is done
            done = event.epoch * max(1, event.steps_per_epoch)
        else:
            done = 0
        progress.emit(
            done / total if event.stage != "done" else 1.0,
            f"distill: {event.stage}, epoch {event.epoch}/{event.epochs}",
            eta_s=event.eta_s,
            epoch=event.epoch,
            epochs=event.epochs,
            loss=event.loss,
            val_accuracy=event.val_accuracy,
            check=False,  # the trainer polls should_stop itself and stops at a clean point
        )

    try:
        result = distill(
            teacher,
            student,
            transfer,
            validation,
            config,
            on_progress=on_distill,
            checkpoint_dir=work / "distill",
            should_stop=progress.stop_requested,
        )
    except (JobCancelled, DistillCancelled) as error:
        raise JobCancelled(str(error)) from None
    if progress.stop_requested() and result.stopped_reason != "completed":
        raise JobCancelled("stopped during distillation (checkpoint kept)")
    return Distilled(result, config, transfer, validation, reference_macs, sizing, held_back)


def _teacher_profile(teacher: Any, work: Path) -> dict[str, Any]:
    """Parameters, MACs and ONNX Runtime latency of the teacher (exported to ONNX first when it is a torch model)."""
    from compression.metrics.graph_ops import teacher_macs
    from compression.metrics.latency import measure_onnx_latency
    from pu_mining.features import torch_to_onnx

    macs = teacher_macs(teacher)
    if teacher.module is not None:
        path = work / "teacher.onnx"
        if not path.exists():
            path.write_bytes(torch_to_onnx(teacher.module, teacher.input_shape).SerializeToString())
    else:
        path = Path(teacher.path)
    latency: dict[str, Any] = {}
    try:
        stats = measure_onnx_latency(path, teacher.input_shape, (1, 32), repeats=20, warmup=3)
        latency = {str(size): value.as_dict() for size, value in stats.items()}
    except (ValueError, RuntimeError):
        latency = {}  # e.g. a static batch of 1: only what can be measured is reported
    return {
        "format": teacher.format,
        "parameters": teacher.parameter_count,
        "macs": macs,
        "multiplications": macs,
        "additions": macs,
        "weight_bytes": teacher.file_bytes,
        "latency": latency,
    }


def export_and_profile(
    inputs: Inputs, distilled: Distilled, options: JobOptions, out_dir: Path, work: Path
) -> Exported:
    """Measure accuracy, export ``student.onnx`` verified in ONNX Runtime, and profile student and teacher."""
    from compression import deploy_, profile
    from compression.distill import evaluate

    teacher, trainable, validation = inputs.teacher, inputs.trainable, distilled.validation
    check_images = validation.images if validation is not None else trainable.images
    check_labels = validation.labels if validation is not None else trainable.labels
    if not len(check_images) and distilled.held_back is not None:  # no labels: the held-back pool items
        check_images, check_labels = distilled.held_back.images, None
    student = distilled.result.student
    evaluation = evaluate(student, teacher, check_images, check_labels)
    deploy_(student)
    binary = options.student == "binary"
    low_bit = options.student in ("qnn4", "qnn2")
    samples = [check_images[i : i + 64] for i in range(0, min(len(check_images), 256), 64)]
    student_profile = profile(
        student,
        teacher.input_shape,
        onnx_path=out_dir / "student.onnx",
        atol=math.inf if binary else 1e-3 if low_bit else 1e-4,  # LSQ rounding: ties may round apart in ORT
        rtol=1e-4,
        sample_inputs=samples,
        repeats=20,
        warmup=3,
    ).as_dict()
    student_profile.pop("layers", None)
    return Exported(evaluation, student_profile, _teacher_profile(teacher, work))
