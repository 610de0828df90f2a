"""Checkpoint files of a distillation run: what they hold, atomic writes, RNG states and the run's fingerprint.

Checkpoints (``checkpoint_dir``)
--------------------------------
``checkpoint.pt`` (:data:`CHECKPOINT_FILE`) holds the model, optimizer, schedule position (epoch, step in epoch,
global step), the epoch's running loss, RNG states, the best state so far, the history and the time spent. It is
written every ``checkpoint_every_steps`` steps and/or ``checkpoint_every_s`` seconds, at every epoch end and when the
run stops, always atomically (a temporary file in the same folder, fsync, ``os.replace``). Only tensors and plain
Python values are saved, and files are read with ``torch.load(weights_only=True)``. The checkpoint and the teacher
outputs (``teacher_outputs.pt``, :data:`TEACHER_OUTPUTS_FILE`) record a fingerprint of the run
(:func:`run_fingerprint`: the config fields that shape the trajectory, order-sensitive digests of the training and
validation data, the student's parameter names and shapes); resuming from the files of a different run is a
ValueError (:func:`check_fingerprint`). The teacher itself cannot be fingerprinted: a checkpoint folder belongs to
one teacher. Re-running a finished run returns its result from the checkpoint without training.

The global RNG states (torch, numpy, Python ``random``) are saved as tensors and plain values
(:func:`rng_states`, :func:`set_rng_states`), so that a resumed run continues model-internal randomness (e.g.
dropout) exactly where it stopped.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compression.distill.config import DistillConfig
from compression.distill.data import TransferSet
from compression.files import atomic_path

__all__ = [
    "CHECKPOINT_FILE",
    "TEACHER_OUTPUTS_FILE",
    "check_fingerprint",
    "read_checkpoint",
    "read_teacher_outputs",
    "rng_states",
    "run_fingerprint",
    "set_rng_states",
    "write_checkpoint",
    "write_teacher_outputs",
]

CHECKPOINT_FILE = "checkpoint.pt"
TEACHER_OUTPUTS_FILE = "teacher_outputs.pt"
_CHECKPOINT_FORMAT = 2
# Config fields that do not change the trajectory of a run: a resumed run may change them.
_NON_TRAJECTORY_FIELDS = frozenset(
    {"time_budget_s", "checkpoint_every_steps", "checkpoint_every_s", "eval_batch_size", "num_threads"}
    | {"progress_interval_s"}
)


def run_fingerprint(config: DistillConfig, train: TransferSet, val: TransferSet, student: nn.Module) -> dict[str, Any]:
    """What identifies the run: trajectory-shaping config fields, data digests, the student's parameters."""
    trajectory = {k: v for k, v in config.to_dict().items() if k not in _NON_TRAJECTORY_FIELDS}
    return {
        "config": trajectory,
        "train_data": _digest(train),
        "val_data": _digest(val),
        "parameters": [[name, list(value.shape)] for name, value in student.state_dict().items()],
    }


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """A ValueError naming what differs if the file at ``path``, fingerprinted ``found``, is of a different run."""
    if found == expected:
        return
    differing = sorted(key for key in expected if found.get(key) != expected[key])
    if "config" in differing:
        differing.remove("config")
        differing += sorted(
            f"config.{k}" for k in expected["config"] if found.get("config", {}).get(k) != expected["config"][k]
        )
    raise ValueError(f"{path} belongs to a different run (differs in: {', '.join(differing)})")


def write_checkpoint(path: Path, fingerprint: dict[str, Any], state: dict[str, Any]) -> None:
    """Save the run ``state`` (tensors and plain values) atomically to ``path``, with the format and fingerprint."""
    _atomic_save({"format": _CHECKPOINT_FORMAT, "fingerprint": fingerprint, **state}, path)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None if there is none; the caller checks its fingerprint.

    First removes the temporary files left in ``path``'s folder by a run killed while writing. An unknown
    checkpoint format is a ValueError.
    """
    for stale in path.parent.glob(f".{CHECKPOINT_FILE}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a run killed while writing
    for stale in path.parent.glob(f".{TEACHER_OUTPUTS_FILE}.*.tmp"):
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has an unknown checkpoint format {checkpoint.get('format')!r}")
    return checkpoint


def write_teacher_outputs(
    path: Path, fingerprint: dict[str, Any], train_logits: torch.Tensor, val_logits: torch.Tensor
) -> None:
    """Save the teacher's training and validation logits atomically to ``path``, with the run's fingerprint."""
    _atomic_save({"fingerprint": fingerprint, "train": train_logits, "val": val_logits}, path)


def read_teacher_outputs(path: Path) -> dict[str, Any] | None:
    """The saved teacher outputs (``fingerprint``, ``train``, ``val``) at ``path``, or None if there are none."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _digest(data: TransferSet) -> list[float]:
    """A cheap order-sensitive digest of a transfer set: its size and sums of its images, labels and logits."""
    images = data.images.detach().flatten(1).double()
    positions = torch.arange(1, len(data) + 1, dtype=torch.float64)
    per_image = images.sum(dim=1)
    digest = [float(len(data)), float(per_image.sum()), float(per_image @ positions), float(images.pow(2).sum())]
    digest += [float(images.shape[1]), float(data.labels_or_ignore.double() @ positions)]
    if data.teacher_logits is not None:
        digest.append(float(data.teacher_logits.detach().double().sum()))
    return digest


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`compression.files.atomic_path` (a reader never sees half a checkpoint)."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def rng_states() -> dict[str, Any]:
    """The global RNG states of torch, numpy and Python ``random``, as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=False)
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
