"""After the export: the optional int8 file, and teacher and student timed side by side for the report.

:func:`quantize_and_compare` runs once the float ``student.onnx`` is written and verified:

1. with ``quantize="int8"``: post-training static quantization of ``student.onnx`` into ``student.int8.onnx``
   (QDQ, per-channel int8 weights, activations calibrated on the job's own transfer data;
   :func:`compression.export.int8.quantize_int8`), verified on images the student never trained on (the held-out
   positives with their labels, else the pool items mining held back, where the loss is the disagreement rate);
   when it loses more than ``quantize_max_loss`` points the int8 file is deleted and the float file is the one to
   ship, and the report says so;
2. teacher, student (and the kept int8 student) timed side by side in ONNX Runtime at batch 1 and 32 on this
   machine (:func:`compression.metrics.side_by_side.compare_latency`: minima and medians, one intra-op thread).

The result is the ``deployment`` record the report shows: ``int8`` (None without the option) and ``latency``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from service.options import JobOptions

if TYPE_CHECKING:
    from service.pipeline.stages import Distilled, Inputs

__all__ = [
    "CALIBRATION_IMAGES",
    "INT8_FILE",
    "VERIFY_IMAGES",
    "quantize_and_compare",
    "side_by_side_latency_",
    "student_sections",
]

INT8_FILE = "student.int8.onnx"
CALIBRATION_IMAGES = 256
"""Transfer images the int8 activation ranges are calibrated on (a seeded sample; a few hundred suffice)."""
VERIFY_IMAGES = 2000
"""At most this many never-trained-on images check the int8 file against the float one."""
LATENCY_BATCHES = (1, 32)


def _verification_set(inputs: Inputs, distilled: Distilled) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Images the student never trained on, with labels where known, and what they are."""
    if distilled.validation is not None and len(distilled.validation.images):
        return distilled.validation.images, distilled.validation.labels, "held-out positives"
    if distilled.held_back is not None and len(distilled.held_back.images):
        return distilled.held_back.images, None, "pool items held back from training (agreement)"
    return inputs.trainable.images, inputs.trainable.labels, "training positives"


def _teacher_file(inputs: Inputs, work: Path) -> Path | None:
    teacher = inputs.teacher
    if teacher.module is None:
        return Path(teacher.path) if str(teacher.path).endswith(".onnx") else None
    path = work / "teacher.onnx"
    return path if path.is_file() else None


def quantize_and_compare(
    inputs: Inputs, distilled: Distilled, options: JobOptions, out_dir: Path, work: Path
) -> dict[str, Any]:
    """The ``deployment`` record (module docstring); writes ``student.int8.onnx`` when int8 is kept."""
    from compression.metrics.side_by_side import compare_latency

    float_file = out_dir / "student.onnx"
    int8: dict[str, Any] | None = None
    files: dict[str, Path] = {}
    teacher_file = _teacher_file(inputs, work)
    if teacher_file is not None:
        files["teacher"] = teacher_file
    files["student"] = float_file
    if options.quantize == "int8":
        try:
            int8 = _quantize(inputs, distilled, options, float_file, out_dir / INT8_FILE)
        except (ValueError, RuntimeError, KeyError) as error:  # the quantizer refused this graph: ship float
            (out_dir / INT8_FILE).unlink(missing_ok=True)
            reason = " ".join(str(error).split())[:500]
            int8 = {"kept": "float", "file": None, "error": reason,
                    "summary": f"int8 quantization failed ({reason}): the float file is kept"}  # fmt: skip
        if int8["kept"] == "int8":
            files["student int8"] = out_dir / INT8_FILE
    try:
        latency = compare_latency(files, tuple(inputs.teacher.input_shape), LATENCY_BATCHES)
    except (ValueError, RuntimeError) as error:  # e.g. a teacher exported with a static batch of 1
        students = {name: path for name, path in files.items() if name != "teacher"}
        latency = compare_latency(students, tuple(inputs.teacher.input_shape), LATENCY_BATCHES)
        latency["note"] = f"the teacher could not be timed at every batch size: {error}"
    latency["rows"] = {name: {str(b): row for b, row in rows.items()} for name, rows in latency["rows"].items()}
    latency["reference"] = next(iter(files))
    return {"int8": int8, "latency": latency}


def _quantize(
    inputs: Inputs, distilled: Distilled, options: JobOptions, float_file: Path, int8_file: Path
) -> dict[str, Any]:
    from compression.export.int8 import quantize_int8

    generator = torch.Generator().manual_seed(options.seed)
    transfer = distilled.transfer.images
    calibration = transfer[torch.randperm(len(transfer), generator=generator)[:CALIBRATION_IMAGES]]
    images, labels, verified_on = _verification_set(inputs, distilled)
    images, labels = images[:VERIFY_IMAGES], None if labels is None else labels[:VERIFY_IMAGES]
    result = quantize_int8(
        float_file,
        int8_file,
        calibration.numpy().astype(np.float32),
        images.numpy().astype(np.float32),
        None if labels is None else labels.numpy(),
        max_loss=options.quantize_max_loss / 100.0,
        latency_batch_sizes=(),  # timed below, side by side with the teacher
    )
    record = result.as_dict()
    record.pop("float_path", None)
    record["int8_path"] = int8_file.name if result.kept == "int8" else None
    record["verified_on"] = verified_on
    record["file"] = INT8_FILE if result.kept == "int8" else None
    record["summary"] = result.describe()
    return record


def student_sections(distilled: Distilled, deployment: dict[str, Any]) -> dict[str, Any]:
    """What the report's ``student`` object gains: ``sizing`` (how the student was chosen), ``int8`` (float and
    int8 side by side, or None) and ``latency_side_by_side`` (teacher and students timed in one run, the machine)."""
    return {"sizing": distilled.sizing, "int8": deployment["int8"], "latency_side_by_side": deployment["latency"]}


def side_by_side_latency_(teacher: dict[str, Any], student: dict[str, Any], deployment: dict[str, Any]) -> None:
    """Make the report's ``latency`` of teacher and student the side-by-side figures (one run, interleaved, the same
    threads), so every speed-up a user reads -- report, job page, jobs list, CLI, CI summary -- is a ratio measured
    side by side. Each one's separate profile, taken at different stages of the job, is kept as
    ``latency_separate``. Nothing changes for a side that was not timed side by side."""
    rows = deployment.get("latency", {}).get("rows", {})
    threads = deployment.get("latency", {}).get("threads")
    for name, target in (("teacher", teacher), ("student", student)):
        timed = rows.get(name)
        if not isinstance(timed, dict) or not timed:
            continue
        target["latency_separate"] = target.get("latency")
        target["latency"] = {
            batch: {**row, "batch_size": int(batch), "side_by_side": True, "threads": threads}
            for batch, row in timed.items()
        }
