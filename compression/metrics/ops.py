"""Operation, parameter and weight-size counts of a model.

Counting follows the convention and rules of :mod:`compression.op_counts`:

* :func:`count_ops` runs one batch-1 forward pass in eval mode under ``torch.no_grad`` with forward
  hooks. A module that defines ``count_ops(inputs, output) -> OpCounts`` counts itself and its
  descendants are not visited; ``inputs`` is the tuple of positional arguments the module was called
  with (exactly what a PyTorch forward hook receives) and ``output`` its return value.
  ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (any ``groups``; :func:`~compression.op_counts.conv_macs`) and
  ``nn.Linear`` (:func:`~compression.op_counts.matmul_macs`) are counted here as float layers
  (:func:`~compression.op_counts.float_counts`). Nothing else is counted (batch norm, activations, pooling,
  residual additions), per the convention. A module called several times in one forward is counted each time.
* :func:`count_parameters` counts every parameter element (trainable or not), shared ones once.
* :func:`weight_bytes` is the deploy-time weight storage: ``packed_weight_bytes()`` of modules that
  define it (their parameters and buffers, descendants included, are then not counted again) plus
  ``element_size()`` bytes (4 for float32) per element of every other parameter and floating buffer
  (batch-norm running statistics; integer buffers such as ``num_batches_tracked`` are excluded).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from compression.op_counts import OpCounts, conv_macs, float_counts, matmul_macs

__all__ = [
    "LayerOps",
    "ModelOps",
    "count_ops",
    "count_parameters",
    "weight_bytes",
]

logger = logging.getLogger(__name__)

_COUNT_SEED = 0
# Modules with parameters that the convention deliberately leaves uncounted (no warning for them).
_UNCOUNTED_BY_CONVENTION = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own previous mode afterwards."""
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, was_training in previous:
            module.training = was_training


@dataclass(frozen=True)
class LayerOps:
    """Operations of one counted module (summed over its calls in the forward pass)."""

    name: str  # qualified name in the model ("" for the model itself)
    type: str  # class name
    counts: OpCounts
    calls: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "calls": self.calls, **self.counts.as_dict()}


@dataclass(frozen=True)
class ModelOps:
    """Per-layer breakdown (in order of first call) and total for one sample (batch size 1)."""

    layers: tuple[LayerOps, ...]
    total: OpCounts
    input_shape: tuple[int, ...]  # one sample, without the batch dimension

    @property
    def macs(self) -> int:
        return self.total.macs

    @property
    def multiplications(self) -> int:
        return self.total.multiplications

    @property
    def additions(self) -> int:
        return self.total.additions

    @property
    def binary_ops(self) -> int:
        return self.total.binary_ops

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "total": self.total.as_dict(),
            "layers": [layer.as_dict() for layer in self.layers],
        }


# --------------------------------------------------------------------------------------------------
# validation helpers (shared with the rest of compression.metrics)


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_input_shape(shape: object, *, name: str = "input_shape", ndim: int | None = None) -> tuple[int, ...]:
    """Validate the shape of ONE sample (no batch dimension): a non-empty sequence of positive ints."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise TypeError(f"{name} must be a tuple of ints such as (3, 32, 32), got {type(shape).__name__}")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"{name} must contain only ints, got {tuple(shape)!r}")
    if not shape:
        raise ValueError(f"{name} must not be empty")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions (one sample, no batch dimension), got {tuple(shape)!r}")
    if any(dim <= 0 for dim in shape):
        raise ValueError(f"{name} dimensions must be positive, got {tuple(shape)!r}")
    return tuple(int(dim) for dim in shape)


def check_batch_sizes(batch_sizes: object) -> tuple[int, ...]:
    """A non-empty sequence of positive ints; duplicates are dropped (first occurrence kept)."""
    if not isinstance(batch_sizes, Sequence) or isinstance(batch_sizes, str | bytes):
        raise TypeError(f"batch_sizes must be a sequence of ints, got {type(batch_sizes).__name__}")
    if not batch_sizes:
        raise ValueError("batch_sizes must not be empty")
    for size in batch_sizes:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"batch_sizes must contain only ints, got {tuple(batch_sizes)!r}")
        if size <= 0:
            raise ValueError(f"batch sizes must be positive, got {tuple(batch_sizes)!r}")
    return tuple(dict.fromkeys(int(size) for size in batch_sizes))


def _model_placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cpu")
    found_device = False
    for tensor in (*model.parameters(), *model.buffers()):
        if not found_device:
            device, found_device = tensor.device, True
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return device, torch.float32


def _sample_input(model: nn.Module, inputs: Sequence[int] | torch.Tensor) -> torch.Tensor:
    device, dtype = _model_placement(model)
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim < 2 or inputs.shape[0] < 1:
            raise ValueError(
                f"an example input tensor must be a batch (N, ...) with N >= 1, got shape {tuple(inputs.shape)}"
            )
        return inputs[:1].detach().to(device)
    shape = check_input_shape(inputs)
    generator = torch.Generator().manual_seed(_COUNT_SEED)
    return torch.randn((1, *shape), generator=generator).to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# op counting


def _defines(module: nn.Module, method: str) -> bool:
    return callable(getattr(module, method, None))


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _module_counts(module: nn.Module, args: tuple[Any, ...], output: Any) -> OpCounts:
    """One call's counts: the module's own ``count_ops`` if it defines one, else the rule of its built-in type."""
    count_own = getattr(module, "count_ops", None)
    if callable(count_own):
        counts = count_own(args, output)
        if not isinstance(counts, OpCounts):
            raise TypeError(f"{type(module).__name__}.count_ops must return OpCounts, got {type(counts).__name__}")
        return counts
    if isinstance(module, nn.Linear):
        return float_counts(matmul_macs(output.numel(), module.in_features))
    if isinstance(module, _CONVOLUTIONS):
        return float_counts(conv_macs(output.numel(), module.weight.shape))
    raise TypeError(f"no op-count rule for {type(module).__name__}")  # _counted_modules hooks no other module


def _counted_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Modules whose forward calls are counted: self-counting ones (not descended into) and the
    built-in conv/linear layers. Other parametrised modules are reported once in the log."""
    seen: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        name, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        if _defines(module, "count_ops") or isinstance(module, (*_CONVOLUTIONS, nn.Linear)):
            yield name, module
            continue
        if not isinstance(module, _UNCOUNTED_BY_CONVENTION) and any(True for _ in module.parameters(recurse=False)):
            logger.warning(
                "count_ops: %s (%s) has parameters but no op-count rule; its operations are not counted",
                name or "<model>",
                type(module).__name__,
            )
        children = [
            (f"{name}.{child_name}" if name else child_name, child) for child_name, child in module.named_children()
        ]
        stack.extend(reversed(children))


def count_ops(model: nn.Module, inputs: Sequence[int] | torch.Tensor) -> ModelOps:
    """Count the operations of one forward pass of a single sample.

    ``inputs`` is either the shape of one sample without the batch dimension, e.g. ``(3, 32, 32)``
    (a seeded random input is used), or an example batch tensor ``(N, ...)`` of which only the first
    sample is run. Each module's previous train/eval mode is restored afterwards and every hook is
    removed, also when the forward pass or a ``count_ops`` method raises.
    """
    model = check_model(model)
    sample = _sample_input(model, inputs)
    order: list[int] = []
    records: dict[int, list[Any]] = {}  # id(module) -> [name, type, counts, calls]

    def make_hook(name: str, module: nn.Module) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            counts = _module_counts(mod, args, output)
            record = records.get(id(mod))
            if record is None:
                records[id(mod)] = [name, type(mod).__name__, counts, 1]
                order.append(id(mod))
            else:
                record[2] = record[2] + counts
                record[3] += 1

        return hook

    handles = []
    try:
        for name, module in _counted_modules(model):
            handles.append(module.register_forward_hook(make_hook(name, module)))
        with eval_mode(model), torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()

    layers = tuple(LayerOps(*records[key]) for key in order)
    total = OpCounts()
    for layer in layers:
        total = total + layer.counts
    return ModelOps(layers=layers, total=total, input_shape=tuple(int(d) for d in sample.shape[1:]))


# --------------------------------------------------------------------------------------------------
# parameters and weight bytes


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements, trainable and frozen alike (shared parameters counted once)."""
    model = check_model(model)
    return sum(parameter.numel() for parameter in model.parameters())


def _packed_modules(model: nn.Module) -> list[tuple[str, nn.Module, Callable[[], object]]]:
    """Top-most modules defining ``packed_weight_bytes``, with that method (descendants of one are not listed)."""
    found: list[tuple[str, nn.Module, Callable[[], object]]] = []
    stack: list[tuple[str, nn.Module]] = [("", model)]
    seen: set[int] = set()
    while stack:
        name, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        packed_weight_bytes = getattr(module, "packed_weight_bytes", None)
        if callable(packed_weight_bytes):
            found.append((name, module, packed_weight_bytes))
            continue
        stack.extend(
            (f"{name}.{child_name}" if name else child_name, child) for child_name, child in module.named_children()
        )
    return found


def weight_bytes(model: nn.Module) -> int:
    """Bytes needed to store the deployed weights (see the module docstring for the rule)."""
    model = check_model(model)
    total = 0
    covered: set[int] = set()
    for name, module, packed_weight_bytes in _packed_modules(model):
        packed = packed_weight_bytes()
        if isinstance(packed, bool) or not isinstance(packed, int):
            raise TypeError(
                f"{type(module).__name__}.packed_weight_bytes() must return an int, got {type(packed).__name__}"
            )
        if packed < 0:
            raise ValueError(f"{name or '<model>'}: packed_weight_bytes() returned a negative size {packed}")
        total += packed
        covered.update(id(t) for t in (*module.parameters(), *module.buffers()))
    for parameter in model.parameters():
        if id(parameter) not in covered:
            covered.add(id(parameter))
            total += parameter.numel() * parameter.element_size()
    for buffer in model.buffers():
        if id(buffer) not in covered and buffer.is_floating_point():
            covered.add(id(buffer))
            total += buffer.numel() * buffer.element_size()
    return total
