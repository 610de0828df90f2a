"""The teacher's logits on the transfer and validation images: computed once in batches, cached in the checkpoint
folder (``teacher_outputs.pt``) so a resumed run neither pays for them again nor depends on the teacher being bitwise
deterministic. A mixin of the distillation run (:mod:`compression.distill.trainer`)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from compression.distill.checkpoint import TEACHER_OUTPUTS_FILE, read_teacher_outputs, write_teacher_outputs
from compression.distill.run_state import RunState

__all__ = ["TeacherOutputsMixin", "module_device"]


class TeacherOutputsMixin(RunState):
    """Fills ``train_logits`` / ``val_logits`` of the run."""

    def _teacher_outputs(self) -> None:
        cached = self._load_teacher_outputs()
        if cached is not None:
            self.train_logits, self.val_logits = cached
            return
        started = time.perf_counter()
        train_logits = self.train.teacher_logits
        if train_logits is None:
            train_logits = self._run_teacher(self.train.images, "train")
        val_logits = self.val.teacher_logits
        if val_logits is None:
            val_logits = self._run_teacher(self.val.images, "validation")
        self.train_logits = train_logits.detach().float().cpu()
        self.val_logits = val_logits.detach().float().cpu()
        if self.train_logits.shape[1] != self.val_logits.shape[1]:
            raise ValueError("the teacher's training and validation logits have different class counts")
        self.teacher_forward_s += time.perf_counter() - started
        self._save_teacher_outputs()

    def _run_teacher(self, images: torch.Tensor, which: str) -> torch.Tensor:
        batch = self.config.eval_batch_size
        batches = math.ceil(len(images) / batch)
        outputs = []
        started = time.perf_counter()
        self._emit("teacher_outputs", force=True, step=0, steps=batches)
        with torch.no_grad():
            for index in range(batches):
                self._check_stop(teacher_stage=True)
                chunk = images[index * batch : (index + 1) * batch]
                logits = self.teacher(chunk.to(module_device(self.teacher, chunk.device)))
                if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(chunk):
                    raise ValueError(f"the teacher must return logits [n, K] for [n, C, H, W] {which} images")
                outputs.append(logits.detach().float().cpu())
                done = (index + 1) * batch
                rate = min(done, len(images)) / max(time.perf_counter() - started, 1e-9)
                self._emit("teacher_outputs", step=index + 1, steps=batches, samples_per_s=rate)
        return torch.cat(outputs)

    def _load_teacher_outputs(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self._path(TEACHER_OUTPUTS_FILE)
        if path is None:
            return None
        saved = read_teacher_outputs(path)
        if saved is None:
            return None
        self._check_fingerprint(saved["fingerprint"], path)
        return saved["train"], saved["val"]

    def _save_teacher_outputs(self) -> None:
        path = self._path(TEACHER_OUTPUTS_FILE)
        if path is not None:
            write_teacher_outputs(path, self._fingerprint(), self.train_logits, self.val_logits)


def module_device(model: Any, default: torch.device) -> torch.device:
    """The device of ``model``'s first parameter (``default`` for callables and parameter-free modules)."""
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return default
