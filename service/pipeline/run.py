"""One compression job, end to end: what ``condense compress`` and every service worker run.

``run_compression(teacher_path, positives_path, options, out_dir, ...)`` runs the stages of
:mod:`service.pipeline.stages` in order, each reporting progress through :class:`StageProgress`:

1. **load** the teacher and the positives; a stratified ``holdout_fraction`` of the positives is kept aside to
   measure the teacher's and the student's accuracy (it is never trained on or mined with); without positives
   (the no-labels mode) mining selects as DFND does and distillation adds its noise-adaptation term;
2. **mine** the pool (PU compression, Xu et al. NeurIPS 2019, arXiv:1909.09757) with the ``selection`` option;
   pool items are held back from training for evaluation (the miner's own ``evaluation_ids``, else a stratified
   share of the selection: :func:`service.pipeline.evaluation.hold_back_pool_items`);
3. **distil** a student chosen by :mod:`service.pipeline.student_choice` (MAC, latency or bit-ops budget, ``auto``
   family, binary channel search) with robust KD;
4. **evaluate** the student against the teacher on the optional test set, the held-out positives and the
   held-back pool items (:mod:`service.pipeline.evaluation`);
5. **export** it to ONNX and verify it in ONNX Runtime; **profile** student and teacher; optionally quantize it to
   int8 and time teacher and students side by side (:mod:`service.pipeline.deployment`);
6. **report**: ``student.onnx``, ``report.json`` and ``report.html`` in ``out_dir``
   (:mod:`service.pipeline.report`, :mod:`service.pipeline.report_html`).

Resuming: everything intermediate lives in ``out_dir/work/``: the mining result (reused when the teacher, the
positives, the pool version and the options are the same) and the trainer's checkpoints, so a killed job run again
with the same arguments continues where it was. ``should_stop()`` is polled throughout; when it turns true the
pipeline raises :class:`~service.options.JobCancelled` (checkpoints stay for a resume).

The quality gate: with ``max_accuracy_drop`` set, ``report["gate"]`` says whether the drop from the teacher's
accuracy is surely within it (``passed``), over it (``failed``) or too uncertain to tell (``undecided``); see
:func:`service.pipeline.report.quality_gate`. The caller decides what that means (``condense compress`` exits 3 on
``failed``, 4 on ``undecided``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.options import JobOptions
from service.pipeline.progress import ProgressCallback, StageProgress

__all__ = ["run_compression"]


def run_compression(
    teacher_path: Path,
    positives_path: Path | None,
    options: JobOptions,
    out_dir: Path,
    *,
    blob_store: Any,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    pool_cache_dir: Path | None = None,
    num_threads: int | None = None,
    job_id: str | None = None,
    test_path: Path | None = None,
) -> dict[str, Any]:
    """Run one compression job (module docstring); returns the summary also stored as ``report["summary"]``.

    ``job_id`` (the service's job, if any) is written into the metadata of ``student.onnx``. ``test_path``: an
    optional labelled test set (the positives' format and classes), never trained on.

    ValueError for bad input (the message is for the user); :class:`~service.options.JobCancelled` when
    ``should_stop()`` turned true.
    """
    from service.pipeline.deployment import quantize_and_compare, side_by_side_latency_, student_sections
    from service.pipeline.evaluation import evaluate_student, hold_back_pool_items
    from service.pipeline.onnx_metadata import stamp_onnx_metadata, student_metadata
    from service.pipeline.report import build_report, write_report
    from service.pipeline.report_html import render_report_html
    from service.pipeline.stages import distill_student, export_and_profile, load_inputs, mine_pool

    if not isinstance(options, JobOptions):
        raise TypeError(f"options must be JobOptions, got {type(options).__name__}")
    teacher_path, out_dir = Path(teacher_path), Path(out_dir)
    positives_path = None if positives_path is None else Path(positives_path)
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    progress = StageProgress(on_progress, should_stop)

    progress.stage("load", "loading the teacher and the positives")
    cache_dir = pool_cache_dir or out_dir.parent / ".pool-cache"
    inputs = load_inputs(teacher_path, positives_path, options, blob_store, cache_dir, check=progress.check)

    progress.stage("mining", f"mining pool {inputs.pool.name} ({len(inputs.pool):,} images)")
    mined, held_back_ids = hold_back_pool_items(mine_pool(inputs, options, work, progress, num_threads), options.seed)

    progress.stage("distill", f"distilling a {options.student} student")
    distilled = distill_student(inputs, mined, options, work, progress, num_threads, cache_dir / "students")

    progress.stage("evaluate", "evaluating the student against the teacher")
    evaluation = evaluate_student(inputs, distilled, held_back_ids, None if test_path is None else Path(test_path))

    progress.stage("export", "exporting and verifying the ONNX student")
    exported = export_and_profile(inputs, distilled, options, out_dir, work)
    onnx_path = out_dir / "student.onnx"
    family = str(distilled.sizing.get("family") or options.student)  # auto: the family it chose
    metadata = student_metadata(inputs.positives.class_names, inputs.teacher.input_shape, family)
    stamp_onnx_metadata(onnx_path, {**metadata, **({"condense.job_id": job_id} if job_id else {})})
    if "onnx_bytes" in exported.student_profile:
        exported.student_profile["onnx_bytes"] = onnx_path.stat().st_size
    progress.emit(0.6, "exported; " + ("quantizing to int8 and timing" if options.quantize else "timing side by side"))
    deployment = quantize_and_compare(inputs, distilled, options, out_dir, work)
    progress.emit(1.0, "exported")

    progress.stage("report", "writing the report")
    progress.finish()
    report = build_report(
        options, inputs, mined, distilled, exported, evaluation, held_back_ids, progress.stage_seconds
    )
    report.student.update(student_sections(distilled, deployment))
    side_by_side_latency_(report.teacher, report.student, deployment)
    started = time.monotonic()
    thumbnails = mined.arrays["thumbnails"].tobytes() if "thumbnails" in mined.arrays else None
    html = render_report_html(report, thumbnails)
    report.stages_s["report"] = round(time.monotonic() - started, 3)
    write_report(out_dir, report, html)
    if on_progress is not None:
        on_progress({"stage": "done", "progress": 1.0, "eta_s": 0.0, "message": "done"})
    return report.summary.to_dict()
