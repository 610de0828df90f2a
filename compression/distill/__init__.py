"""Robust knowledge distillation (PU compression, Xu et al., NeurIPS 2019, arXiv:1909.09757) and its trainer.

:func:`distill` trains a student against a teacher on a transfer set (:class:`TransferSet`) with the losses of
:mod:`compression.distill.losses` and the settings of :class:`DistillConfig`; :func:`evaluate` compares the two.
"""

from __future__ import annotations

from compression.distill.config import DistillConfig, default_config
from compression.distill.data import TransferSet, as_transfer_set
from compression.distill.evaluate import Evaluation, evaluate, evaluate_predictions, predict_logits
from compression.distill.losses import (
    IGNORE_LABEL,
    ClassLossTracker,
    WeightedLoss,
    class_terms,
    class_weighted_loss,
    distillation_loss,
    labelled_cross_entropy,
    teacher_class_weights,
    worst_case_class_factors,
)
from compression.distill.records import DistillCancelled, DistillProgress, DistillResult, EpochRecord
from compression.distill.trainer import distill, infer_family

__all__ = [
    "IGNORE_LABEL",
    "ClassLossTracker",
    "DistillCancelled",
    "DistillConfig",
    "DistillProgress",
    "DistillResult",
    "EpochRecord",
    "Evaluation",
    "TransferSet",
    "WeightedLoss",
    "as_transfer_set",
    "class_terms",
    "class_weighted_loss",
    "default_config",
    "distill",
    "distillation_loss",
    "evaluate",
    "evaluate_predictions",
    "infer_family",
    "labelled_cross_entropy",
    "predict_logits",
    "teacher_class_weights",
    "worst_case_class_factors",
]
