"""A test double of ``service.pipeline.run_compression`` for the worker tests (``CONDENSE_PIPELINE``).

Its "teacher" file is JSON telling it what to do: ``{"mode": "ok" | "loop" | "fail" | "crash" | "hang", "steps": N,
"step_s": seconds, "hang_s": seconds}`` ("hang": a step that does not return for ``hang_s``, checking nothing, as a
stuck read would); a real model file (not JSON) means a short successful run. It counts steps, checkpointing
the count in ``out_dir/work/state.json`` and resuming from it, reports progress after each step, checks
``should_stop`` before each, and writes three small artefacts at the end. Its summary is a real one: teacher 92 %,
student 90 % on 1,000 labelled images, or on 20 when a test set was uploaded (a set too small to decide a gate).
No torch: a worker subprocess running it starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.options import JobCancelled, JobOptions
from service.pipeline.report import Evaluation, LabelledSet, Summary, quality_gate


def _summary(options: JobOptions, images: int) -> dict:
    """A real summary: teacher right on 92 % of ``images`` labelled test images, the student on 90 % (same images)."""
    teacher_right = np.arange(images) < round(0.92 * images)
    student_right = np.arange(images) < round(0.90 * images)
    labels = np.arange(images) % 2
    test = LabelledSet.measure("test", teacher_right, student_right, labels, ["a", "b"])
    evaluation = Evaluation(["a", "b"], test, None, None)
    summary = Summary(
        options.student, "test", images, test.teacher, test.student, test.drop, None, 1000, 10_000, 40_000, 0, 0,
        quality_gate(options.max_accuracy_drop, evaluation),
    )  # fmt: skip
    return summary.to_dict()


def run_compression(
    teacher_path: Path,
    positives_path: Path,
    options: JobOptions,
    out_dir: Path,
    *,
    blob_store: Any,
    on_progress: Callable[[dict], None],
    should_stop: Callable[[], bool],
    pool_cache_dir: Path | None = None,
    num_threads: int | None = None,
    job_id: str | None = None,
    test_path: Path | None = None,
) -> dict:
    try:
        control = json.loads(Path(teacher_path).read_bytes())
    except ValueError:  # a real model file (end-to-end tests through the API): a short successful run
        control = {"mode": "ok", "steps": 3, "step_s": 0.1}
    mode = control["mode"]
    steps = int(control.get("steps", 3))
    step_s = float(control.get("step_s", 0.05))
    if mode == "fail":
        raise ValueError(f"{positives_path}: class 'cat' has no images (test)")
    if mode == "crash":
        raise RuntimeError("the test pipeline crashed")
    if mode == "hang":
        time.sleep(float(control.get("hang_s", 60)))
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    state = work / "state.json"
    step = json.loads(state.read_text())["step"] if state.exists() else 0
    resumed_from = step
    started = time.monotonic()
    while mode == "loop" or step < steps:
        if should_stop():
            raise JobCancelled()
        time.sleep(step_s)
        step += 1
        tmp = work / "state.json.tmp"
        tmp.write_text(json.dumps({"step": step, "pid": os.getpid()}))
        os.replace(tmp, state)
        total = steps if mode != "loop" else step + 10
        on_progress(
            {
                "stage": "train",
                "progress": step / total,
                "eta_s": (total - step) * step_s,
                "message": f"step {step} of {total}",
                "step": step,
                "elapsed_s": time.monotonic() - started,
            }
        )
    (out_dir / "student.onnx").write_bytes(b"not really onnx " + bytes(range(256)) * 4)
    (out_dir / "report.json").write_text(json.dumps({"steps": steps, "student": options.student}))
    (out_dir / "report.html").write_text("<html><body>report</body></html>")
    on_progress({"stage": "done", "progress": 1.0, "eta_s": 0.0, "message": "done"})
    return {
        # the drop: 92 % - 90 % = 2 points, on 1,000 images; on 20 (a tiny set) when a test set was uploaded
        **_summary(options, 1000 if test_path is None else 20),
        "test_set": None if test_path is None else Path(test_path).name,
        "resumed_from": resumed_from,
        "num_threads": num_threads,  # what the worker passed on (CONDENSE_NUM_THREADS)
        "steps": steps,
        "nan_is_dropped": float("nan"),
    }
