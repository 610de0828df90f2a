"""ONNX Runtime against PyTorch: :func:`verify_onnx` runs an ONNX file and its model on the same batches and
measures how far their outputs are apart (largest absolute difference, top-1 agreement)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from compression.export.onnx_records import OnnxVerification, OnnxVerificationError
from compression.metrics.ops import eval_mode

__all__ = [
    "as_batches",
    "check_float_tensor",
    "check_model",
    "check_tolerances",
    "model_device",
    "verify_onnx",
]

_ORT_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_float_tensor(tensor: object, what: str, *, min_ndim: int) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.ndim < min_ndim:
        raise ValueError(
            f"{what} must have a batch dimension plus at least one more (ndim >= {min_ndim}), "
            f"got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] < 1 or tensor.numel() == 0:
        raise ValueError(f"{what} must not be empty, got shape {tuple(tensor.shape)}")
    return tensor


def check_tolerances(atol: float, rtol: float, min_top1_agreement: float) -> None:
    for name, value in (("atol", atol), ("rtol", rtol), ("min_top1_agreement", min_top1_agreement)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if math.isnan(value) or value < 0 or (name != "atol" and math.isinf(value)):
            # atol may be inf: "judge on top-1 alone" (binary students, whose sign() steps amplify rounding).
            raise ValueError(f"{name} must be a number >= 0 (only atol may be inf), got {value!r}")
    if min_top1_agreement > 1:
        raise ValueError(f"min_top1_agreement is a fraction in [0, 1], got {min_top1_agreement!r}")


def as_batches(sample_inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(sample_inputs, torch.Tensor):
        batches = [sample_inputs]
    elif isinstance(sample_inputs, Sequence) and not isinstance(sample_inputs, str | bytes):
        batches = list(sample_inputs)
    else:
        raise TypeError(f"sample_inputs must be a tensor or a sequence of tensors, got {type(sample_inputs).__name__}")
    if not batches:
        raise ValueError("sample_inputs must contain at least one batch")
    for i, batch in enumerate(batches):
        check_float_tensor(batch, f"sample_inputs[{i}]", min_ndim=2)
    return batches


def verify_onnx(
    onnx_path: str | os.PathLike[str],
    model: nn.Module,
    sample_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    atol: float = 1e-4,
    rtol: float = 0.0,
    min_top1_agreement: float = 1.0,
    raise_on_failure: bool = True,
) -> OnnxVerification:
    """Compare ONNX Runtime (CPU) with the PyTorch model (eval mode, no grad) batch by batch.

    Each element of ``sample_inputs`` is one batch ``(N, ...)`` and is run as a whole, so batches of
    different sizes exercise the dynamic batch dimension. Passing requires
    ``|ort - torch| <= atol + rtol * |torch|`` element-wise (so ``max_abs_diff <= atol`` when
    ``rtol`` is 0) and a top-1 agreement (argmax over the flattened non-batch dimensions) of at least
    ``min_top1_agreement``. Non-finite outputs count as an infinite difference.

    On failure raises :class:`OnnxVerificationError` (whose ``verification`` attribute holds the
    result), unless ``raise_on_failure`` is false, in which case the result has ``passed=False``.
    """
    model = check_model(model)
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    batches = as_batches(sample_inputs)
    check_tolerances(atol, rtol, min_top1_agreement)

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OnnxVerificationError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc
    session_inputs = session.get_inputs()
    if len(session_inputs) != 1:
        raise OnnxVerificationError(f"{path.name} has {len(session_inputs)} inputs; exactly one is expected")
    input_name = session_inputs[0].name
    input_dtype = _ORT_FLOAT_TYPES.get(session_inputs[0].type)
    if input_dtype is None:
        raise OnnxVerificationError(
            f"{path.name} input {input_name!r} has type {session_inputs[0].type}; a float tensor is expected"
        )

    device = model_device(model)
    max_abs_diff = 0.0
    agree = 0
    total = 0
    within_tolerance = True
    with eval_mode(model), torch.no_grad():
        for index, batch in enumerate(batches):
            expected = model(batch.to(device))
            if not isinstance(expected, torch.Tensor):
                raise TypeError(f"model must return a single tensor, got {type(expected).__name__}")
            expected_np = expected.detach().float().cpu().numpy()
            try:
                (actual_np,) = session.run(
                    None, {input_name: batch.detach().cpu().numpy().astype(input_dtype, copy=False)}
                )
            except Exception as exc:
                raise OnnxVerificationError(
                    f"ONNX Runtime failed on sample batch {index} of shape {tuple(batch.shape)}: {exc}"
                ) from exc
            actual_np = np.asarray(actual_np, dtype=np.float32)
            if actual_np.shape != expected_np.shape:
                raise OnnxVerificationError(
                    f"ONNX Runtime output shape {actual_np.shape} differs from PyTorch's "
                    f"{expected_np.shape} for input batch of shape {tuple(batch.shape)}"
                )
            diff = np.abs(actual_np.astype(np.float64) - expected_np.astype(np.float64))
            diff[~np.isfinite(diff)] = np.inf
            if diff.size:
                max_abs_diff = max(max_abs_diff, float(diff.max()))
                bound = atol + rtol * np.abs(expected_np.astype(np.float64))
                within_tolerance = within_tolerance and bool(np.all(diff <= bound))
            n = expected_np.shape[0]
            if n:
                top_actual = actual_np.reshape(n, -1).argmax(axis=1)
                top_expected = expected_np.reshape(n, -1).argmax(axis=1)
                agree += int((top_actual == top_expected).sum())
                total += n

    top1 = agree / total if total else 1.0
    result = OnnxVerification(
        max_abs_diff=max_abs_diff,
        top1_agreement=top1,
        num_samples=total,
        batch_sizes=tuple(int(b.shape[0]) for b in batches),
        atol=float(atol),
        rtol=float(rtol),
        min_top1_agreement=float(min_top1_agreement),
        passed=within_tolerance and top1 >= min_top1_agreement,
    )
    if not result.passed and raise_on_failure:
        raise OnnxVerificationError(f"ONNX verification failed: {result.describe()}", result)
    return result
