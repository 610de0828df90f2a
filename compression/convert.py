"""Convert an existing ``nn.Module`` in place: swap its ``nn.Conv2d`` layers for a family's layer.

The pattern follows torchao's ``quantize_(model, config, filter_fn)``: one in-place entry point, a per-family
swap (each layer's ``from_conv2d``), and a filter that decides which modules are swapped. By default the first
convolution (it sees the raw image) stays as it is, as in all three papers, and so do convolutions a family
cannot replace (grouped/depthwise, non-zero padding modes; for Ghost modules also non-'same' padding and
dilation). The classifier is an ``nn.Linear`` and is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from compression.families import get_family

ConvFilter = Callable[[nn.Conv2d, str], bool]
"""``filter_fn(conv, qualified_name) -> bool``: True to swap this convolution."""


@dataclass
class ConversionReport:
    """What :func:`convert_` swapped and what it kept, with the reason for each kept convolution."""

    family: str
    converted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    replaced_activations: list[str] = field(default_factory=list)


def convert_(model: nn.Module, family: str, filter_fn: ConvFilter | None = None) -> ConversionReport:
    """Swap every eligible ``nn.Conv2d`` in ``model`` for ``family``'s layer, in place.

    ``filter_fn(conv, name)`` chooses the convolutions to swap; when it is omitted, all but the first
    convolution are candidates. Convolutions the family cannot replace are kept whatever the filter says,
    and the report says why. For the binary family every ``nn.ReLU`` module is replaced by ``nn.Hardtanh``,
    since a ReLU in front of a sign() makes every binary activation +1 (a ReLU applied functionally in a
    ``forward`` cannot be swapped: check your model). Weights carry over for the binary and adder layers;
    Ghost modules start from fresh weights (their structure has no counterpart in the dense convolution).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layer_family = get_family(family)
    report = ConversionReport(layer_family.name)
    if layer_family.name == "plain":
        return report
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    first_conv_name = convs[0][0] if convs else None
    for name, conv in convs:
        if filter_fn is not None:
            wanted = filter_fn(conv, name)
            reason = "filtered out"
        else:
            wanted = name != first_conv_name
            reason = "first convolution (sees the raw image)"
        if not wanted:
            report.kept[name] = reason
        elif not layer_family.can_replace(conv):
            report.kept[name] = f"not replaceable by a {layer_family.name} layer ({_describe(conv)})"
        else:
            swapped = layer_family.from_conv2d(conv).to(device=conv.weight.device, dtype=conv.weight.dtype)
            _set_submodule(model, name, swapped.train(conv.training))
            report.converted.append(name)
    if layer_family.name == "binary" and report.converted:
        for name, module in list(model.named_modules()):
            if type(module) is nn.ReLU:
                _set_submodule(model, name, nn.Hardtanh())
                report.replaced_activations.append(name)
    return report


def _describe(conv: nn.Conv2d) -> str:
    return (
        f"kernel {conv.kernel_size}, stride {conv.stride}, padding {conv.padding}, "
        f"dilation {conv.dilation}, groups {conv.groups}, padding_mode {conv.padding_mode!r}"
    )


def _set_submodule(model: nn.Module, qualified_name: str, new_module: nn.Module) -> None:
    parent_name, _, child_name = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, new_module)
