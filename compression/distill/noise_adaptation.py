"""DFND's noise adaptation: the teacher's hard labels on wild pool images are noisy; a learned transition matrix
absorbs the noise so that the student is trained towards the clean classes.

Chen et al., "Learning Student Networks in the Wild" (CVPR 2021): the student ``S`` is trained on the pool images
the teacher is most confident on with knowledge distillation plus a cross-entropy on the teacher's hard labels
``y_T = argmax T(x)`` taken through a noise adaptation matrix ``Q`` (``Q_ij``: probability that clean class ``i``
is labelled ``j``; rows sum to one): ``L = KD(S(x), T(x)) + lambda * CE(log(softmax(S(x)) Q), y_T)``. ``Q`` is
parameterised by row-wise softmax of free logits initialised near the identity, and learned with the student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NoiseAdaptation", "dfnd_loss"]


class NoiseAdaptation(nn.Module):
    """A ``K x K`` row-stochastic transition matrix ``Q = softmax(W, dim=1)``, ``W`` initialised to
    ``log(confidence)`` on the diagonal and ``log((1 - confidence) / (K - 1))`` elsewhere."""

    def __init__(self, num_classes: int, confidence: float = 0.9) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not isinstance(confidence, int | float) or not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        off = (1.0 - confidence) / (num_classes - 1)
        initial = torch.full((num_classes, num_classes), off).fill_diagonal_(confidence)
        self.logits = nn.Parameter(initial.log())

    @property
    def matrix(self) -> torch.Tensor:
        """``Q``: rows sum to one."""
        return torch.softmax(self.logits, dim=1)

    def forward(self, student_logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the *noisy* labels: ``log(softmax(student_logits) Q)``."""
        if student_logits.ndim != 2 or student_logits.shape[1] != self.logits.shape[0]:
            raise ValueError(f"student_logits must be (N, {self.logits.shape[0]}), got {tuple(student_logits.shape)}")
        clean = torch.softmax(student_logits, dim=1)
        return torch.log((clean @ self.matrix).clamp_min(1e-12))


def dfnd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    adaptation: NoiseAdaptation,
    temperature: float = 4.0,
    noisy_weight: float = 1.0,
) -> torch.Tensor:
    """DFND's training loss: KD (Hinton et al. 2015; ``temperature^2``-scaled KL of the softened outputs) plus
    ``noisy_weight`` times the cross-entropy of the noise-adapted student against the teacher's hard labels."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"shapes differ: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if temperature <= 0 or noisy_weight < 0:
        raise ValueError("temperature must be positive and noisy_weight non-negative")
    kd = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits.detach() / temperature, dim=1),
        reduction="batchmean",
    ) * (temperature**2)
    hard = teacher_logits.detach().argmax(dim=1)
    return kd + noisy_weight * F.nll_loss(adaptation(student_logits), hard)
