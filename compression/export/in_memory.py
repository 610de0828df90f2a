"""A torch model as an in-memory ONNX graph, for looking at it rather than delivering it.

:func:`torch_to_onnx` brings any torch teacher (``nn.Module``, ``torch.jit`` ScriptModule, ``torch.fx`` /
``torch.export`` ``GraphModule``) to one tensor-level dataflow graph, which the feature taps of
:mod:`pu_mining.features`, the pool embedder and the service's teacher profile read. It uses the TorchScript-based
exporter (``torch.onnx.export(..., dynamo=False)``): tens of milliseconds, and it accepts ScriptModules. Nothing is
verified here; the students Condense delivers go through :func:`compression.export.onnx.export_onnx` instead.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import torch
from torch import nn

__all__ = ["check_input_shape", "floating_dtype", "torch_to_onnx"]

# The example batch of an export with a dynamic batch: not 1, so that a batch size baked into the graph shows as
# soon as the graph runs at batch 1.
_EXAMPLE_BATCH = 2


def floating_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter or buffer (float32 if it has none)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def check_input_shape(input_shape: object) -> tuple[int, int, int]:
    """``(C, H, W)`` as three positive ints; TypeError / ValueError otherwise."""
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or len(input_shape) != 3:
        raise TypeError(f"input_shape must be a sequence (C, H, W), got {input_shape!r}")
    if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in input_shape):
        raise ValueError(f"input_shape must hold three positive ints (C, H, W), got {input_shape!r}")
    channels, height, width = (int(d) for d in input_shape)
    return channels, height, width


def torch_to_onnx(
    module: nn.Module, input_shape: Sequence[int], *, fixed_batch_size: int | None = None
) -> onnx.ModelProto:
    """Export a torch model (``nn.Module``, ScriptModule, ``GraphModule``) to an in-memory ONNX model.

    TorchScript-based exporter (``dynamo=False``), eval mode (a module that refuses ``train()`` is exported
    as it is), input ``input`` of shape ``(batch, *input_shape)`` with a dynamic batch unless
    ``fixed_batch_size`` is given, output ``logits``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    shape = check_input_shape(input_shape)
    batch = fixed_batch_size or _EXAMPLE_BATCH
    example = torch.zeros((batch, *shape), dtype=floating_dtype(module))
    dynamic = None if fixed_batch_size else {"input": {0: "batch"}}

    def export(training: torch.onnx.TrainingMode) -> bytes:
        buffer = io.BytesIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter (dynamo=False) writes to file objects
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=dynamic,
                training=training,
            )
        return buffer.getvalue()

    try:
        data = export(torch.onnx.TrainingMode.EVAL)
    except NotImplementedError:  # e.g. torch.export's GraphModule: "Calling train() is not supported yet."
        data = export(torch.onnx.TrainingMode.PRESERVE)
    return onnx.load_from_string(data)
