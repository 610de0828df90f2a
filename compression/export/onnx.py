"""ONNX export of compressed students, verified against PyTorch with ONNX Runtime.

:func:`export_onnx` writes one self-contained ``.onnx`` file (no external-data side files) whose
graph has a single input named ``input`` and a single output named ``logits``, both with a dynamic
batch dimension. The file is checked (ONNX checker, standard operator domains only) and, by default,
verified: ONNX Runtime (``CPUExecutionProvider``) and PyTorch are run on the same sample batches --
including a batch size different from the example input's, which proves the batch dimension really
is dynamic -- and the outputs must agree to within ``atol`` with the required top-1 agreement.

Exporter choice. ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter) is
used. Measured with torch 2.14.1 on the 2-core CPU development machine (three exports each, in one
process): small convnets of the tests (conv / depthwise conv / BN / ReLU / pooling / linear, 1x28x28
and 3x32x32) 2.5 s for the first export of a process (one-off warm-up), then 0.7-0.9 s; a CIFAR
ResNet-20 1.7-1.9 s. The legacy TorchScript exporter (``dynamo=False``) takes 0.01-0.06 s for the
same models. Dynamo is still the choice: the TorchScript exporter is deprecated since torch 2.9 (it
warns on every call and is slated for removal) while the dynamo exporter is the supported,
maintained path; it never specialises silently (a batch-size-dependent reshape is an export error,
not a baked-in constant) and emits an already-optimised graph at opset 18+ (20 by default). A second
or two per delivered model is negligible next to distillation. If the dynamo exporter raises on a
model, the TorchScript exporter is tried as a fallback (``fallback=True``, the default) and a WARNING
is logged saying so (also recorded in ``OnnxExport.notes``); the fallback's file is checked and
verified exactly like a dynamo one. The checks and the fixes of the exported graph are in
:mod:`compression.export.onnx_graph`, the verification in :mod:`compression.export.onnx_verify`.

Atomicity: the exporter writes to a hidden temporary file in the destination folder, which is
renamed over ``path`` only after every check passed; on any failure the temporary file is removed,
so a failed export or verification never leaves a file at ``path``.

Errors (:mod:`compression.export.onnx_records`): :class:`OnnxExportError` for a model that cannot be delivered as
ONNX, ``ValueError`` / ``TypeError`` for bad arguments.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from compression.export.onnx_graph import (
    FOLDED_CONSTANT_ELEMENT_LIMIT,
    STANDARD_DOMAINS,
    check_standard_domains,
    check_written_file,
    external_data_tensors,
    tidy_exported_model,
)
from compression.export.onnx_records import (
    INPUT_NAME,
    OUTPUT_NAME,
    NonStandardDomainError,
    OnnxExport,
    OnnxExportError,
    OnnxVerification,
    OnnxVerificationError,
)
from compression.export.onnx_verify import (
    as_batches,
    check_float_tensor,
    check_model,
    check_tolerances,
    model_device,
    verify_onnx,
)
from compression.files import atomic_path
from compression.metrics.ops import eval_mode

__all__ = [
    "FOLDED_CONSTANT_ELEMENT_LIMIT",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "STANDARD_DOMAINS",
    "NonStandardDomainError",
    "OnnxExport",
    "OnnxExportError",
    "OnnxVerification",
    "OnnxVerificationError",
    "check_standard_domains",
    "eval_mode",
    "export_onnx",
    "external_data_tensors",
    "verify_onnx",
]

logger = logging.getLogger(__name__)

_BATCH_DIM_NAME = "batch"
_VERIFY_SEED = 0


def _verification_batches(example: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
    """The example batch plus ``num_samples`` seeded random samples split into a batch of one and a
    batch of the rest, so that at least one batch size differs from the example's."""
    example_batch = example.shape[0]
    sizes = [1, num_samples - 1] if num_samples > 2 else [num_samples]
    if all(size == example_batch for size in sizes):  # e.g. num_samples=2 with a batch-1 example
        sizes = [num_samples]
    generator = torch.Generator().manual_seed(_VERIFY_SEED)
    sample_shape = tuple(example.shape[1:])
    randoms = [
        torch.randn((size, *sample_shape), generator=generator, dtype=torch.float32).to(example.dtype) for size in sizes
    ]
    return [example.detach(), *randoms]


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    # The exporter prints its progress ("[torch.onnx] Obtain model graph...") to the console; keep it out of
    # the CLI's output and in the debug log instead. Errors still surface as exceptions.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            _run_dynamo_export(model, example, path, opset)
    finally:
        if chatter.getvalue():
            logger.debug("torch.onnx exporter output:\n%s", chatter.getvalue().rstrip())


def _run_dynamo_export(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    program = torch.onnx.export(
        model,
        (example,),
        None,
        dynamo=True,
        external_data=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim(_BATCH_DIM_NAME)},),
        opset_version=opset,
        optimize=False,
        verbose=False,
    )
    if program is None:  # only the TorchScript exporter (dynamo=False) writes without returning a program
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
    program.model = tidy_exported_model(program.model)
    program.save(str(path), external_data=False)


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: _BATCH_DIM_NAME}, OUTPUT_NAME: {0: _BATCH_DIM_NAME}},
            opset_version=opset,
        )


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """Short description of an exporter error: the innermost cause's type and first message line
    (the dynamo exporter wraps the real error in a pages-long ``TorchExportError``)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
    text = f"{type(exc).__name__}: {line}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: torch.Tensor,
    *,
    opset: int | None = None,
    verify: bool = True,
    num_samples: int = 16,
    sample_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    atol: float = 1e-4,
    rtol: float = 0.0,
    min_top1_agreement: float = 1.0,
    fallback: bool = True,
) -> OnnxExport:
    """Export ``model`` to a single self-contained ONNX file at ``path`` and verify it.

    ``example_input`` is one batch ``(N, ...)``; its batch dimension becomes dynamic. The model is
    exported in eval mode (each submodule's previous mode is restored afterwards) and its parameters
    are not modified. ``opset=None`` uses the exporter's default opset (recorded in the result).

    With ``verify`` (the default) ONNX Runtime is compared with PyTorch (see :func:`verify_onnx`) on
    the example batch plus ``num_samples`` seeded standard-normal samples (a batch of 1 and a batch
    of ``num_samples - 1``), or on ``sample_inputs`` when given (then it is the caller's job to
    include a batch size other than the example's). Binary students typically pass a looser ``atol``
    with ``min_top1_agreement=1.0``; float students keep ``atol=1e-4``.

    Raises :class:`OnnxExportError` if export or the structural checks fail,
    :class:`NonStandardDomainError` for non-standard operator domains and
    :class:`OnnxVerificationError` if verification fails; in every failure case nothing is left at
    ``path`` (an existing file there is left untouched).
    """
    model = check_model(model)
    example = check_float_tensor(example_input, "example_input", min_ndim=2)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be None or an integer >= 7, got {opset!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"num_samples must be an int, got {type(num_samples).__name__}")
    if verify and sample_inputs is None and num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 to test another batch size, got {num_samples}")
    check_tolerances(atol, rtol, min_top1_agreement)
    batches = as_batches(sample_inputs) if sample_inputs is not None else None
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"path {target} is a directory; give a file name such as model.onnx")

    example = example.detach().to(model_device(model))
    notes: list[str] = []
    verification: OnnxVerification | None = None
    exporter = "dynamo"
    with eval_mode(model), atomic_path(target, suffix=".tmp.onnx", sidecar_suffixes=(".data",)) as tmp:
        with torch.no_grad():
            probe = model(example)
        if not isinstance(probe, torch.Tensor):
            raise TypeError(f"model must return a single tensor (the logits), got {type(probe).__name__}")
        start = time.perf_counter()
        try:
            _export_dynamo(model, example, tmp, opset)
        except Exception as exc:
            if not fallback:
                raise OnnxExportError(f"dynamo ONNX export failed: {exc}") from exc
            _remove_quietly(tmp)
            note = f"dynamo ONNX export failed ({_first_line(exc)}); falling back to the TorchScript exporter"
            logger.warning("%s", note)
            logger.debug("full dynamo export error", exc_info=exc)
            notes.append(note)
            exporter = "torchscript"
            try:
                _export_torchscript(model, example, tmp, opset)
            except Exception as exc2:
                raise OnnxExportError(
                    f"ONNX export failed with both exporters: dynamo: {exc}; torchscript: {exc2}"
                ) from exc2
        export_seconds = time.perf_counter() - start
        if not tmp.is_file():
            raise OnnxExportError("the exporter did not write a file")
        written_opset = check_written_file(tmp)
        if verify:
            if batches is None:
                batches = _verification_batches(example, num_samples)
            verification = verify_onnx(tmp, model, batches, atol=atol, rtol=rtol, min_top1_agreement=min_top1_agreement)
    file_bytes = target.stat().st_size
    logger.info(
        "exported %s with the %s exporter in %.2f s (opset %d, %d bytes)%s",
        target,
        exporter,
        export_seconds,
        written_opset,
        file_bytes,
        "" if verification is None else f"; verified: {verification.describe()}",
    )
    return OnnxExport(
        path=target,
        file_bytes=file_bytes,
        opset=written_opset,
        exporter=exporter,
        input_shape=(_BATCH_DIM_NAME, *(int(d) for d in example.shape[1:])),
        export_seconds=export_seconds,
        verification=verification,
        notes=tuple(notes),
    )
