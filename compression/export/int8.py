"""Post-training static int8 quantization of an exported student, verified and timed in ONNX Runtime.

The float ONNX file is pre-processed (shape inference and graph optimisation, ONNX Runtime's
``quant_pre_process``), then quantized by ``onnxruntime.quantization.quantize_static`` in the QDQ format
(QuantizeLinear / DequantizeLinear pairs around each quantized operator, which ONNX Runtime fuses into int8
kernels and other runtimes read as standard ONNX) with per-channel symmetric int8 weights and uint8 activations
whose ranges are calibrated (min-max) on the caller's images, e.g. the job's own transfer data (Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", arXiv:1712.05877,
for the affine scheme).

Verification: the int8 file and the float file classify held-out images; the result gives their top-1 agreement
with its Wilson 95 % interval and the image count, and both accuracies when labels are given. The int8 *loss* is
the accuracy drop with labels, else the disagreement rate; above ``max_loss`` the int8 file is deleted and the
float file is the one to ship (``Int8Result.kept == "float"``). Latency of both files is measured side by side.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from compression.metrics.intervals import paired_difference_interval, wilson_interval
from compression.metrics.latency import measure_side_by_side, open_cpu_session

__all__ = ["Int8Result", "classify_onnx", "quantize_int8"]

_CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class Int8Result:
    """Float vs int8: agreement (with interval), accuracies, latencies, and which file is kept."""

    float_path: str
    int8_path: str | None  # None when the int8 file was discarded
    kept: str  # "int8" or "float"
    num_images: int
    top1_agreement: float
    agreement_interval: tuple[float, float]
    float_accuracy: float | None
    int8_accuracy: float | None
    loss: float  # accuracy drop (labels given) or disagreement rate, as a fraction
    loss_interval: tuple[float, float] | None  # Newcombe's paired 95 % interval of the drop (labels given)
    max_loss: float
    float_bytes: int
    int8_bytes: int
    latency_ms: dict[str, dict[int, float]] = field(default_factory=dict)  # {"float"|"int8": {batch: min ms}}
    median_latency_ms: dict[str, dict[int, float]] = field(default_factory=dict)  # the same, medians
    calibration_images: int = 0

    @property
    def exceeded(self) -> bool:
        return self.loss > self.max_loss

    def speedup(self, batch_size: int) -> float | None:
        timings = self.latency_ms
        if batch_size not in timings.get("float", {}) or batch_size not in timings.get("int8", {}):
            return None
        return timings["float"][batch_size] / timings["int8"][batch_size]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("latency_ms", "median_latency_ms"):
            data[key] = {k: {str(b): ms for b, ms in v.items()} for k, v in getattr(self, key).items()}
        data["exceeded"] = self.exceeded
        return data

    def describe(self) -> str:
        low, high = self.agreement_interval
        text = (
            f"int8 agrees with float on {self.top1_agreement:.2%} of {self.num_images} held-out images "
            f"(95 % CI {low:.2%}-{high:.2%})"
        )
        if self.float_accuracy is not None and self.int8_accuracy is not None:
            text += f"; accuracy float {self.float_accuracy:.2%}, int8 {self.int8_accuracy:.2%}"
            if self.loss_interval is not None:
                text += f" (drop 95 % CI {self.loss_interval[0]:+.2%} to {self.loss_interval[1]:+.2%})"
        for batch in sorted(self.latency_ms.get("float", {})):
            ratio = self.speedup(batch)
            if ratio is not None:
                text += f"; batch {batch}: {ratio:.2f}x faster"
        if self.exceeded:
            text += f"; loss {self.loss:.2%} exceeds the limit {self.max_loss:.2%}: the float file is kept"
        return text


class _ImageReader(CalibrationDataReader):
    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self.input_name = input_name
        self.images = images
        self._batches: Iterator[np.ndarray] | None = None
        self.rewind()

    def rewind(self) -> None:
        self._batches = (
            self.images[i : i + _CALIBRATION_BATCH] for i in range(0, len(self.images), _CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        assert self._batches is not None  # set in __init__
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


def _check_images(images: object, what: str) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{what} must be a numpy array (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"{what} must be a non-empty (N, C, H, W) array, got shape {images.shape}")
    return np.ascontiguousarray(images, dtype=np.float32)


def classify_onnx(path: str | os.PathLike[str], images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Top-1 class of every image by the ONNX file (ONNX Runtime, CPU)."""
    session = open_cpu_session(path)
    name = session.get_inputs()[0].name
    out = [
        session.run(None, {name: images[i : i + batch_size]})[0].argmax(1) for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


def quantize_int8(
    float_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    calibration_images: np.ndarray,
    held_out_images: np.ndarray,
    held_out_labels: np.ndarray | None = None,
    *,
    max_loss: float = 0.005,
    latency_batch_sizes: tuple[int, ...] = (1, 32),
    latency_threads: int | None = 1,
) -> Int8Result:
    """Quantize ``float_path`` to int8 QDQ at ``int8_path``, verify it on held-out images and time both files.

    ``calibration_images``/``held_out_images``: float32 arrays ``(N, C, H, W)`` preprocessed exactly as the model
    expects (a few hundred calibration images are plenty). ``max_loss`` is a fraction (0.005 = half a point).
    Empty ``latency_batch_sizes`` skips timing.
    """
    source = Path(float_path)
    if not source.is_file():
        raise FileNotFoundError(f"float ONNX file not found: {source}")
    calibration = _check_images(calibration_images, "calibration_images")
    held_out = _check_images(held_out_images, "held_out_images")
    if held_out_labels is not None and len(held_out_labels) != len(held_out):
        raise ValueError(f"{len(held_out_labels)} labels for {len(held_out)} held-out images")
    if isinstance(max_loss, bool) or not 0 <= float(max_loss) < 1:
        raise ValueError(f"max_loss must be a fraction in [0, 1), got {max_loss!r}")
    target = Path(int8_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name

    with tempfile.TemporaryDirectory(prefix="condense-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        tmp = target.with_name(f".{target.name}.tmp.onnx")
        quantize_static(
            str(prepared),
            str(tmp),
            _ImageReader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        tmp.replace(target)

    float_top1 = classify_onnx(source, held_out)
    int8_top1 = classify_onnx(target, held_out)
    agree = int((float_top1 == int8_top1).sum())
    float_acc = int8_acc = None
    if held_out_labels is not None:
        labels = np.asarray(held_out_labels)
        float_acc = float((float_top1 == labels).mean())
        int8_acc = float((int8_top1 == labels).mean())
        loss = float_acc - int8_acc
        drop = paired_difference_interval(float_top1 == labels, int8_top1 == labels)
        loss_interval: tuple[float, float] | None = (drop.low, drop.high)
    else:
        loss_interval = None
        loss = 1 - agree / len(held_out)
    latency: dict[str, dict[int, float]] = {"float": {}, "int8": {}}
    medians: dict[str, dict[int, float]] = {"float": {}, "int8": {}}
    for batch in latency_batch_sizes:
        float_ms, int8_ms = measure_side_by_side(
            [source, target], held_out.shape[1:], batch, rounds=5, repeats=20 if batch < 8 else 5,
            intra_op_num_threads=latency_threads,
        )  # fmt: skip
        latency["float"][batch], latency["int8"][batch] = float_ms.min_ms, int8_ms.min_ms
        medians["float"][batch], medians["int8"][batch] = float_ms.median_ms, int8_ms.median_ms
    int8_bytes = target.stat().st_size
    exceeded = loss > max_loss
    if exceeded:
        target.unlink()
    return Int8Result(
        float_path=str(source),
        int8_path=None if exceeded else str(target),
        kept="float" if exceeded else "int8",
        num_images=len(held_out),
        top1_agreement=agree / len(held_out),
        agreement_interval=wilson_interval(agree, len(held_out)),
        float_accuracy=float_acc,
        int8_accuracy=int8_acc,
        loss=loss,
        loss_interval=loss_interval,
        max_loss=float(max_loss),
        float_bytes=source.stat().st_size,
        int8_bytes=int8_bytes,
        latency_ms=latency if latency_batch_sizes else {},
        median_latency_ms=medians if latency_batch_sizes else {},
        calibration_images=len(calibration),
    )
