"""What each format's loader returns to :func:`compression.teachers.loading.load_teacher`: a
:class:`LoadedModel` (a function running one prepared batch, plus what the model states about its input,
normalisation and size), and :func:`torch_runner`, that function for a torch module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort
import torch
from torch import nn

__all__ = ["LoadedModel", "torch_runner"]


@dataclass
class LoadedModel:
    run: Callable[[torch.Tensor], Any]
    input_dims: tuple[int | None, int | None, int | None] | None  # (C, H, W) as the model states them
    fixed_batch_size: int | None = None
    mean: Any = None  # as carried by the model, unvalidated
    std: Any = None
    mean_origin: str = ""
    std_origin: str = ""
    parameter_count: int | None = None
    module: nn.Module | None = None
    session: ort.InferenceSession | None = None
    exported_program: Any = None


def _floating_dtype(module: nn.Module) -> torch.dtype:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def torch_runner(module: nn.Module) -> Callable[[torch.Tensor], Any]:
    dtype = _floating_dtype(module)

    def run(batch: torch.Tensor) -> Any:
        return module(batch.to(dtype))

    return run
