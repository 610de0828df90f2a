"""One compression job, end to end: what ``condense compress`` and every service worker run.

``run_compression(teacher_path, positives_path, options, out_dir, ...)``:

1. **load**: the teacher (:func:`compression.load_teacher`: TorchScript, ``.pt2`` or ONNX; never unpickled) and
   the positives (:func:`pu_mining.positives.load_positives`: class folders, a zip/tar of them, or ``.npz``),
   converted to the teacher's input; a stratified ``holdout_fraction`` of them is kept aside to measure the
   teacher's and the student's accuracy (it is never trained on or mined with);
2. **mine** the pool (:func:`pu_mining.miner.mine`, PU compression, Xu et al. NeurIPS 2019, arXiv:1909.09757);
3. **distil** a Ghost, binary or adder student sized to ``budget_ratio`` of the teacher's MACs
   (:func:`compression.distill`, robust KD) on the positives plus the mined images;
4. **export** it to ONNX and verify it in ONNX Runtime; **profile** student and teacher (parameters, MACs,
   multiplications, additions, weight bytes, ONNX Runtime latency);
5. **report**: ``student.onnx``, ``report.json`` and ``report.html`` in ``out_dir``.

Resuming: everything intermediate lives in ``out_dir/work/``: the mining result (reused when the teacher, the
positives, the pool version and the options are the same) and the trainer's checkpoints, so a killed job run again
with the same arguments continues where it was. ``should_stop()`` is polled throughout; when it turns true the
pipeline raises :class:`~service.options.JobCancelled` (checkpoints stay for a resume).

The quality gate: with ``max_accuracy_drop`` set, ``report["gate"]`` says whether the student's accuracy on the
held-out positives is within it of the teacher's; the caller decides what a failed gate means (``condense compress``
exits 3).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.options import JobCancelled, JobOptions

__all__ = ["REPORT_FORMAT", "run_compression"]

REPORT_FORMAT = 1
MAX_TRANSFER_BYTES = 4 * 1024**3
"""Largest transfer set held in memory (images as float32 at the teacher's input): mined items beyond it are
dropped, lowest PU score first, and the report says so."""
_EXPORT_RESERVE_S = 60.0
_PACKAGES = ("condense", "torch", "torchvision", "onnx", "onnxruntime", "faiss-cpu", "numpy")

ProgressCallback = Callable[[dict[str, Any]], None]
_STAGE_SPAN = {"load": (0.0, 0.02), "mining": (0.02, 0.3), "distill": (0.3, 0.9), "export": (0.9, 0.97),
               "report": (0.97, 1.0)}  # fmt: skip


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


class _Progress:
    """Maps each stage's own progress into the job's 0..1 and checks ``should_stop`` on every event."""

    def __init__(self, on_progress: ProgressCallback | None, should_stop: Callable[[], bool] | None) -> None:
        self._on_progress = on_progress
        self._should_stop = should_stop
        self.started = time.monotonic()
        self.stage_seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._stage_started = self.started

    def stop_requested(self) -> bool:
        return self._should_stop is not None and bool(self._should_stop())

    def check(self) -> None:
        if self.stop_requested():
            raise JobCancelled(f"stopped during {self._stage}")

    def stage(self, name: str, message: str = "") -> None:
        now = time.monotonic()
        if self._stage is not None:
            self.stage_seconds[self._stage] = round(now - self._stage_started, 3)
        self._stage, self._stage_started = name, now
        self.emit(0.0, message or name)

    def emit(
        self, fraction: float, message: str, eta_s: float | None = None, *, check: bool = True, **extra: Any
    ) -> None:
        low, high = _STAGE_SPAN.get(self._stage or "", (0.0, 1.0))
        if self._on_progress is not None:
            self._on_progress(
                {
                    "stage": self._stage,
                    "progress": round(low + (high - low) * min(max(fraction, 0.0), 1.0), 4),
                    "eta_s": eta_s,
                    "message": message,
                    **extra,
                }
            )
        if check:
            self.check()

    def finish(self) -> None:
        if self._stage is not None:
            self.stage_seconds[self._stage] = round(time.monotonic() - self._stage_started, 3)
            self._stage = None


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
    with tempfile.NamedTemporaryFile(dir=work, suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays)
    os.replace(handle.name, work / "mining.npz")
    temporary = work / "mining.json.tmp"
    temporary.write_text(json.dumps({"fingerprint": fingerprint, "report": report}))
    os.replace(temporary, work / "mining.json")


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


def run_compression(
    teacher_path: Path,
    positives_path: Path,
    options: JobOptions,
    out_dir: Path,
    *,
    blob_store: Any,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    pool_cache_dir: Path | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Run one compression job (module docstring); returns the summary also stored as ``report["summary"]``.

    ValueError for bad input (the message is for the user); :class:`~service.options.JobCancelled` when
    ``should_stop()`` turned true.
    """
    from compression import Budget, create_student, deploy_, distill, load_teacher, profile
    from compression.distill import TransferSet, default_config, evaluate
    from compression.metrics.graph_ops import teacher_macs
    from compression.teachers import adapt_images
    from pu_mining.miner import MiningCancelled, MiningConfig, mine
    from pu_mining.pool import PoolStore
    from pu_mining.positives import load_positives, split_holdout
    from service.report_html import render_report_html

    if not isinstance(options, JobOptions):
        raise TypeError(f"options must be JobOptions, got {type(options).__name__}")
    teacher_path, positives_path, out_dir = Path(teacher_path), Path(positives_path), Path(out_dir)
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    progress = _Progress(on_progress, should_stop)
    time_limit = None if options.time_budget_min is None else options.time_budget_min * 60.0

    # 1. load ---------------------------------------------------------------------------------------------------
    progress.stage("load", "loading the teacher and the positives")
    teacher = load_teacher(
        teacher_path,
        input_shape=options.input_shape,
        mean=list(options.mean) if options.mean else None,
        std=list(options.std) if options.std else None,
    )
    positives = load_positives(positives_path, teacher.input_shape)
    if len(positives.class_names) != teacher.num_classes:
        raise ValueError(
            f"the positives have {len(positives.class_names)} classes ({', '.join(positives.class_names)}) but the "
            f"teacher has {teacher.num_classes} outputs"
        )
    if options.holdout_fraction > 0:
        trainable, held_out = split_holdout(positives, options.holdout_fraction, options.seed)
    else:
        trainable, held_out = positives, None
    teacher_sha = teacher.file_sha256
    pool_store = PoolStore(blob_store, cache_dir=pool_cache_dir or out_dir.parent / ".pool-cache")
    pool = pool_store.open(options.pool)

    # 2. mine ---------------------------------------------------------------------------------------------------
    progress.stage("mining", f"mining pool {pool.name} ({len(pool):,} images)")
    mining_config = MiningConfig(seed=options.seed, num_threads=num_threads)
    fingerprint = hashlib.sha256(
        json.dumps(
            [teacher_sha, positives.source_hash, pool.name, pool.version, options.to_dict(), repr(mining_config)],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    cached = _mining_cached(work, fingerprint)
    if cached is None:
        try:
            result = mine(
                teacher,
                trainable,
                pool,
                mining_config,
                on_progress=lambda event: progress.emit(event["progress"], f"mining: {event['step']}"),
                should_stop=progress.stop_requested,
            )
        except MiningCancelled as error:
            raise JobCancelled(str(error)) from None
        arrays = {
            "ids": result.ids,
            "scores": result.scores,
            "teacher_classes": result.teacher_classes,
            "thumbnails": np.frombuffer(result.thumbnail_grid(pool, positives.class_names), dtype=np.uint8),
        }
        mining_report = result.report.as_dict()
        _save_mining(work, fingerprint, arrays, mining_report)
    else:
        arrays, mining_report = cached
        progress.emit(1.0, "mining: reused the saved result")
    mined_ids = arrays["ids"]
    per_item = int(np.prod(teacher.input_shape)) * 4
    room = max(0, MAX_TRANSFER_BYTES // per_item - len(trainable))
    dropped_for_memory = max(0, len(mined_ids) - room)
    mined_ids = mined_ids[:room]

    # 3. distil -------------------------------------------------------------------------------------------------
    progress.stage("distill", f"distilling a {options.student} student")
    mined_images = pool.image_tensor(mined_ids) if len(mined_ids) else trainable.images[:0]
    if len(mined_ids) and tuple(mined_images.shape[1:]) != tuple(teacher.input_shape):
        mined_images = adapt_images(mined_images, teacher.input_shape)
    transfer = TransferSet(
        torch.cat([trainable.images, mined_images]),
        torch.cat([trainable.labels, torch.full((len(mined_ids),), -1, dtype=torch.int64)]),
    )
    validation = None if held_out is None else TransferSet(held_out.images, held_out.labels)
    reference_macs = teacher_macs(teacher)
    if reference_macs is None:
        raise ValueError("cannot count the teacher's MACs to size the student")
    torch.manual_seed(options.seed)
    student = create_student(
        options.student,
        num_classes=teacher.num_classes,
        input_shape=teacher.input_shape,
        budget=Budget(reference_macs, options.budget_ratio, "macs"),
    )
    overrides: dict[str, Any] = {"seed": options.seed}
    if options.epochs is not None:
        overrides["epochs"] = options.epochs
    if num_threads is not None:
        overrides["num_threads"] = num_threads
    if time_limit is not None:
        spent = time.monotonic() - progress.started
        overrides["time_budget_s"] = max(30.0, time_limit - spent - _EXPORT_RESERVE_S)
    config = default_config(options.student).replace(**overrides)

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

    from compression.distill import DistillCancelled

    try:
        distilled = distill(
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
    if progress.stop_requested() and distilled.stopped_reason != "completed":
        raise JobCancelled("stopped during distillation (checkpoint kept)")

    # 4. export + profile ---------------------------------------------------------------------------------------
    progress.stage("export", "exporting and verifying the ONNX student")
    check_images = validation.images if validation is not None else trainable.images
    check_labels = validation.labels if validation is not None else trainable.labels
    evaluation = evaluate(distilled.student, teacher, check_images, check_labels)
    deploy_(distilled.student)
    binary = options.student == "binary"
    samples = [check_images[i : i + 64] for i in range(0, min(len(check_images), 256), 64)]
    onnx_path = out_dir / "student.onnx"
    student_profile = profile(
        distilled.student,
        teacher.input_shape,
        onnx_path=onnx_path,
        atol=math.inf if binary else 1e-4,
        rtol=1e-4,
        sample_inputs=samples,
        repeats=20,
        warmup=3,
    ).as_dict()
    student_profile.pop("layers", None)
    teacher_profile = _teacher_profile(teacher, work)
    progress.emit(1.0, "exported")

    # 5. report -------------------------------------------------------------------------------------------------
    progress.stage("report", "writing the report")
    teacher_accuracy, student_accuracy = evaluation.teacher_accuracy, evaluation.student_accuracy
    accuracy_drop = (
        None if teacher_accuracy is None or student_accuracy is None else (teacher_accuracy - student_accuracy) * 100
    )
    gate = None
    if options.max_accuracy_drop is not None:
        allowed = options.max_accuracy_drop * 100
        gate = {
            "max_accuracy_drop": allowed,
            "accuracy_drop": accuracy_drop,
            "passed": accuracy_drop is not None and accuracy_drop <= allowed + 1e-9,
        }
        gate["reason"] = (
            "no held-out accuracy to check"
            if accuracy_drop is None
            else f"accuracy drop {accuracy_drop:.2f} points; allowed {allowed:.2f}"
        )
    class_names = positives.class_names
    per_class = [
        {
            "class": name,
            "count": evaluation.class_counts[k],
            "teacher_accuracy": evaluation.per_class_teacher_accuracy[k],
            "student_accuracy": evaluation.per_class_student_accuracy[k],
        }
        for k, name in enumerate(class_names)
    ]
    progress.finish()
    summary = {
        "student": options.student,
        "teacher_accuracy": teacher_accuracy,
        "student_accuracy": student_accuracy,
        "agreement": evaluation.agreement,
        "accuracy_drop_points": accuracy_drop,
        "evaluated_on": "held-out positives" if validation is not None else "training positives",
        "student_parameters": student_profile["parameters"],
        "student_macs": student_profile["macs"],
        "teacher_macs": reference_macs,
        "mined": len(mined_ids),
        "gate": gate,
    }
    report = {
        "format": REPORT_FORMAT,
        "job": {"student": options.student, "options": options.to_dict()},
        "summary": summary,
        "teacher": {**teacher_profile, "accuracy": teacher_accuracy},
        "student": {**student_profile, "accuracy": student_accuracy, "agreement": evaluation.agreement},
        "evaluation": {
            "images": evaluation.num_samples,
            "on": summary["evaluated_on"],
            "class_names": class_names,
            "per_class": per_class,
        },
        "gate": gate,
        "mining": {**mining_report, "dropped_for_memory": dropped_for_memory},
        "distillation": {
            "history": [record.__dict__ for record in distilled.history] if distilled.history else [],
            "best_epoch": distilled.best_epoch,
            "stopped_reason": distilled.stopped_reason,
            "resumed_from_step": distilled.resumed_from_step,
            "class_weights": distilled.class_weights,
            "transfer_set": {"positives": len(trainable), "mined": len(mined_ids)},
            "config": config.to_dict(),
        },
        "stages_s": dict(progress.stage_seconds),
        "manifest": {
            "seed": options.seed,
            "teacher_sha256": teacher_sha,
            "positives_sha256": positives.source_hash,
            "pool": {"name": pool.name, "version": pool.version, "embedder": pool.manifest.embedder_fingerprint},
            "mined_ids": [int(i) for i in mined_ids],
            "packages": _versions(),
        },
    }
    started = time.monotonic()
    thumbnails = arrays["thumbnails"].tobytes() if "thumbnails" in arrays else None
    html = render_report_html(report, thumbnails)
    report["stages_s"]["report"] = round(time.monotonic() - started, 3)
    _write_text(out_dir / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    _write_text(out_dir / "report.html", html)
    if on_progress is not None:
        on_progress({"stage": "done", "progress": 1.0, "eta_s": 0.0, "message": "done"})
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
