"""Two-stage training of binary, adder and low-bit (LSQ) students: a full-precision twin first, then the student.

Most binary-network work trains a real-valued network of the same shape first and starts the binary one from its
weights (e.g. Bulat and Tzimiropoulos' real-to-binary distillation, Martinez et al., ICLR 2020, arXiv:2003.11535;
the two-step schedule of ReActNet, Liu et al., ECCV 2020, arXiv:2003.03488); the AdderNet paper
(arXiv:1912.13200) trains from scratch, and a warm start from a trained float network is the analogous shortcut.

* :func:`float_twin` copies the student and swaps every :class:`~compression.layers.BinaryConv2d` /
  :class:`~compression.layers.AdderConv2d` / :class:`~compression.layers.lsq.LsqConv2d` for an ``nn.Conv2d`` of the
  same geometry (the rest, including the
  binary family's ``Hardtanh`` activations, stays), so the twin's state dict names match the student's.
* :func:`load_float_twin_` copies the trained twin back into the student: every parameter and buffer of the same
  name and shape. A binary layer takes the twin's weights as its latent weights (their centred signs become the
  binary weights; the gate stays at its value). An adder layer compares its inputs with templates by L1 distance,
  so a dot-product filter of Kaiming scale (``~0.1``) would put all templates near zero, where they answer alike
  (see :meth:`compression.layers.AdderConv2d.reset_parameters`); its weights are the twin's divided by their
  standard deviation over the layer, the filters' shapes on the unit scale of the batch-normalised inputs. An LSQ
  layer takes the twin's weights and sets its step sizes from them and from its first training batch, as LSQ
  quantization-aware training starts from a trained full-precision network (Esser et al., arXiv:1902.08153).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compression.layers.adder import AdderConv2d
from compression.layers.binary import BinaryConv2d
from compression.layers.lsq import LsqConv2d

_REPLACED = (BinaryConv2d, AdderConv2d, LsqConv2d)

__all__ = ["float_twin", "has_low_bit_layers", "load_float_twin_"]


def has_low_bit_layers(model: nn.Module) -> bool:
    """Whether ``model`` has binary, adder or LSQ layers (what the float stage replaces)."""
    return any(isinstance(module, _REPLACED) for module in model.modules())


def float_twin(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with every binary / adder / LSQ convolution replaced by an ``nn.Conv2d``."""
    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
    twin = copy.deepcopy(student)
    for name, module in list(twin.named_modules()):
        if not isinstance(module, _REPLACED):
            continue
        if isinstance(module, BinaryConv2d) and module.deployed:
            module.undeploy()
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
        ).to(device=module.weight.device, dtype=module.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent_name) if parent_name else twin, child, conv.train(module.training))
    return twin


@torch.no_grad()
def load_float_twin_(student: nn.Module, twin: nn.Module) -> list[str]:
    """Copy ``twin``'s parameters and buffers into ``student`` by name (see the module docstring for the binary and
    adder layers' weights); returns the names of the student's tensors that were not copied."""
    twin_state = twin.state_dict()
    adder_weights = {f"{name}.weight" for name, module in student.named_modules() if isinstance(module, AdderConv2d)}
    kept = []
    for name, tensor in student.state_dict().items():
        source = twin_state.get(name)
        if source is None or source.shape != tensor.shape:
            kept.append(name)
            continue
        if name in adder_weights:
            source = source / source.std().clamp_min(torch.finfo(source.dtype).tiny)
        tensor.copy_(source)
    return kept
