"""Transfer sets: images, optional labels and teacher logits that :func:`~compression.distill.trainer.distill` uses.

Data contract (:class:`TransferSet`)
------------------------------------
``train_data`` / ``val_data`` are a :class:`TransferSet` (``images [N, C, H, W]`` float in [0, 1], ``labels [N]``
int64 with -1 for unlabelled samples or None for none, optional precomputed ``teacher_logits [N, K]``), an
``(images, labels_or_None)`` tuple, or a ``torch.utils.data.Dataset`` whose items are an image tensor or an
``(image, label)`` pair (label an int, a 0-d tensor, -1 or None). Everything is held in memory as one tensor.
Mined pool items have no label; the labelled positives do. ``val_data=None`` monitors on the first 2048 training
images instead (then "best" means best on training images; :func:`validation_set`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from compression.distill.losses import IGNORE_LABEL

__all__ = ["TransferSet", "as_transfer_set", "validation_set"]

_MONITOR_FROM_TRAIN = 2048


@dataclass(frozen=True)
class TransferSet:
    """Images to distil on, with optional labels (-1 = unlabelled) and optional precomputed teacher logits."""

    images: torch.Tensor
    """``[N, C, H, W]`` floating point, raw images in [0, 1]."""
    labels: torch.Tensor | None = None
    """``[N]`` int64, :data:`~compression.distill.losses.IGNORE_LABEL` (-1) where unknown; None: no labels."""
    teacher_logits: torch.Tensor | None = None
    """``[N, K]``: the teacher's logits on ``images``, if already known (else :func:`distill` computes them)."""

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise ValueError("images must be a floating-point tensor [N, C, H, W]")
        count = images.shape[0]
        if self.labels is not None:
            if not isinstance(self.labels, torch.Tensor) or self.labels.shape != (count,):
                raise ValueError(f"labels must be a tensor [N] = [{count}]")
            if self.labels.is_floating_point() or (self.labels < IGNORE_LABEL).any():
                raise ValueError("labels must be integers >= 0, or -1 for unlabelled samples")
        if self.teacher_logits is not None:
            logits = self.teacher_logits
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != count:
                raise ValueError(f"teacher_logits must be a tensor [N, K] with N = {count}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labels_or_ignore(self) -> torch.Tensor:
        """Labels as int64 ``[N]``, all -1 when there are none."""
        if self.labels is None:
            return torch.full((len(self),), IGNORE_LABEL, dtype=torch.long)
        return self.labels.long()

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and bool((self.labels != IGNORE_LABEL).any())


def as_transfer_set(data: Any) -> TransferSet:
    """A :class:`TransferSet` from one (see the module docstring for the accepted forms)."""
    if isinstance(data, TransferSet):
        return data
    if isinstance(data, torch.Tensor):
        return TransferSet(data)
    if isinstance(data, tuple | list) and len(data) in (2, 3) and isinstance(data[0], torch.Tensor):
        labels = None if data[1] is None else torch.as_tensor(data[1]).long()
        logits = data[2] if len(data) == 3 else None
        return TransferSet(data[0], labels, logits)
    if isinstance(data, torch.utils.data.Dataset):
        return _transfer_set_from_dataset(data)
    raise TypeError(f"expected a TransferSet, an (images, labels) tuple or a torch Dataset, got {type(data).__name__}")


def _transfer_set_from_dataset(dataset: torch.utils.data.Dataset) -> TransferSet:
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[index]
        label: Any = None
        if isinstance(item, tuple | list):
            item, label = item[0], (item[1] if len(item) > 1 else None)
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"dataset item {index} is not an image tensor (got {type(item).__name__})")
        images.append(item)
        labels.append(IGNORE_LABEL if label is None else int(label))
    if not images:
        raise ValueError("the dataset is empty")
    label_tensor = torch.tensor(labels, dtype=torch.long)
    return TransferSet(
        torch.stack(images).float(), None if (label_tensor == IGNORE_LABEL).all() else label_tensor, None
    )


def validation_set(train: TransferSet, val_data: Any) -> tuple[TransferSet, bool]:
    """The validation set, and whether it was taken from the training set (the first images, without val_data)."""
    if val_data is not None:
        return as_transfer_set(val_data), False
    count = min(len(train), _MONITOR_FROM_TRAIN)
    logits = None if train.teacher_logits is None else train.teacher_logits[:count]
    labels = None if train.labels is None else train.labels[:count]
    return TransferSet(train.images[:count], labels, logits), True
