"""A test double of ``service.pipeline.run_compression`` for the worker tests (``CONDENSE_PIPELINE``).

Its "teacher" file is JSON telling it what to do: ``{"mode": "ok" | "loop" | "fail" | "crash", "steps": N,
"step_s": seconds}``; a real model file (not JSON) means a short successful run. It counts steps, checkpointing
the count in ``out_dir/work/state.json`` and resuming from it, reports progress after each step, checks
``should_stop`` before each, and writes three small artefacts at the end. No torch: a worker subprocess running it
starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.options import JobCancelled, JobOptions
from service.pipeline.report import quality_gate


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
    job_id: str | None = None,
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
        "teacher_accuracy": 0.92,
        "student_accuracy": 0.9,
        "gate": quality_gate(options.max_accuracy_drop, 2.0),  # the drop: 92 % - 90 % = 2 points
        "resumed_from": resumed_from,
        "steps": steps,
        "nan_is_dropped": float("nan"),
    }
