"""Turn a trained student's training structure into its inference structure before export.

Like timm's ``reparameterize_model``: every submodule that has a ``to_deploy()`` method (today the binary layer,
which caches its binarised weights) is switched to it, and the model is put in eval mode.
"""

from __future__ import annotations

from torch import nn


def deploy_(model: nn.Module) -> nn.Module:
    """Switch ``model`` (in place) to eval mode and every layer with a deploy form to it; returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model.eval()
    for module in model.modules():
        to_deploy = getattr(module, "to_deploy", None)
        if callable(to_deploy):
            to_deploy()
    return model
