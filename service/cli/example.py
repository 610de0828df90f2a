"""``condense example DIR``: a small real teacher and its positives, for a first job in one command.

    condense example ex [--images 20000] [--per-class 20] [--seed 0] [--force]

Writes into DIR:

- ``teacher.pt``: a small CNN (:func:`build_teacher`, about 11M MACs -- large enough that a quarter of it fits a
  Ghost student) trained on Fashion-MNIST classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat: the benchmark
  task of ``../shared/BENCHMARK.md``) from the Debian package ``dataset-fashion-mnist``, traced and saved with
  ``torch.jit.save`` (TorchScript: submit it with ``--input-shape 1,28,28``). One pass over the first ``--images``
  training images of those classes, Adam with a one-cycle schedule. Measured on 2 CPU cores shared with other work:
  17 s of training (23 s in all), 87.9 % accuracy on the 5,000 test images of the five classes (printed).
- ``positives.zip``: what a user uploads: ``--per-class`` PNGs of each class from the training split (the first of
  each class in file order), one folder per class (``0-tshirt/`` ... ``4-coat/``). The demo pool
  (:mod:`service.cli.demo_pool`) takes its Fashion-MNIST images from the test split, so none of these is in it.

Then the first job (printed at the end; ``--epochs 30`` keeps it to about a minute on 2 CPU cores, against several
minutes for the default schedule)::

    condense submit --server http://127.0.0.1:8000 --token $TOKEN --teacher ex/teacher.pt \\
        --positives ex/positives.zip --input-shape 1,28,28 --epochs 30 --wait --out ex/result

or on this machine, without a server: ``condense compress --teacher ex/teacher.pt --positives ex/positives.zip
--input-shape 1,28,28 --epochs 30 --pool demo --out ex/result``. Files already in DIR are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CLASS_FOLDERS", "add_example_command", "build_teacher", "train_example_teacher", "write_positives"]

CLASS_FOLDERS = ("0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat")
"""Folder names of the positives, one per class of the benchmark task (``pu_mining.benchmark_task.TASK_CLASS_NAMES``)
in the teacher's output order."""
DEFAULT_TRAIN_IMAGES = 20_000
DEFAULT_PER_CLASS = 20
_BATCH = 128
_MAX_LR = 3e-3


def build_teacher() -> Any:
    """A fresh (untrained) :class:`ExampleTeacher`: built here so that torch is imported only when needed."""
    from torch import nn

    class ExampleTeacher(nn.Module):
        """Three 3x3 convolutions (32, 64, 64 channels, one stride 2), 2x2 average pooling, a linear classifier for
        5 classes on 1x28x28 images in [0, 1]; about 11M MACs and 0.07M parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.stage1 = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU())
            self.stage2 = nn.Sequential(
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()
            )
            self.head = nn.Linear(64 * 7 * 7, len(CLASS_FOLDERS))

        def forward(self, x: Any) -> Any:
            return self.head(nn.functional.avg_pool2d(self.stage2(self.stage1(x)), 2).flatten(1))

    return ExampleTeacher()


def train_example_teacher(
    images: int = DEFAULT_TRAIN_IMAGES, seed: int = 0, on_progress: Callable[[int, int, float], None] | None = None
) -> tuple[Any, float, float]:
    """Train :func:`build_teacher` once over the first ``images`` task images; ``(model, test accuracy, seconds)``.

    ``on_progress(done, total, loss)`` is called every 20 steps.
    """
    import torch
    from torch import nn

    from pu_mining.benchmark_task import images_to_tensor, task_split

    if isinstance(images, bool) or not isinstance(images, int):
        raise TypeError(f"images must be an int, got {type(images).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be callable or None")
    train_x, train_y, _ = task_split("train")
    if not _BATCH <= images <= len(train_x):
        raise ValueError(f"images must be in [{_BATCH}, {len(train_x)}], got {images}")
    torch.manual_seed(seed)
    x = images_to_tensor(train_x[:images])
    y = torch.from_numpy(train_y[:images])
    net = build_teacher()
    optimiser = torch.optim.Adam(net.parameters(), lr=_MAX_LR)
    steps = (len(x) + _BATCH - 1) // _BATCH
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=_MAX_LR, total_steps=steps, pct_start=0.25)
    started = time.monotonic()
    order = torch.randperm(len(x))
    net.train()
    for step, start in enumerate(range(0, len(x), _BATCH)):
        batch = order[start : start + _BATCH]
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if on_progress is not None and (step % 20 == 0 or step == steps - 1):
            on_progress(min(start + _BATCH, len(x)), len(x), loss.item())
    seconds = time.monotonic() - started
    net.eval()
    test_x, test_y, _ = task_split("test")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_x), 1000):
            chunk = images_to_tensor(test_x[start : start + 1000])
            correct += int((net(chunk).argmax(1) == torch.from_numpy(test_y[start : start + 1000])).sum())
    return net, correct / len(test_x), seconds


def write_positives(path: Path, per_class: int = DEFAULT_PER_CLASS) -> int:
    """Write a zip of ``per_class`` training PNGs per class in class folders to ``path``; return the image count."""
    from PIL import Image

    if isinstance(per_class, bool) or not isinstance(per_class, int):
        raise TypeError(f"per_class must be an int, got {type(per_class).__name__}")
    if not 2 <= per_class <= 1000:
        raise ValueError(f"per_class must be in [2, 1000] (some are held out to measure accuracy), got {per_class}")
    from pu_mining.benchmark_task import per_class_indices
    from pu_mining.sources import fashion_mnist

    images, labels = fashion_mnist("train")  # file names carry the index in the training file
    buffer = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, indices in zip(CLASS_FOLDERS, per_class_indices(labels, per_class), strict=True):
            for index in indices:
                png = io.BytesIO()
                Image.fromarray(images[index]).save(png, format="PNG")
                archive.writestr(f"{folder}/train-{index:05d}.png", png.getvalue())
                count += 1
    _write_atomically(path, buffer.getvalue())
    return count


def _write_atomically(path: Path, data: bytes) -> None:
    from storage.files import atomic_write_bytes

    atomic_write_bytes(path, data, mode=0o644)


def _cmd_example(args: argparse.Namespace) -> int:
    import torch

    from service.cli.progress import ProgressLine

    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    teacher_path, positives_path = out / "teacher.pt", out / "positives.zip"
    progress = ProgressLine(log_interval_s=0.0)

    def show(done: int, total: int, loss: float) -> None:
        if not args.quiet:
            progress.update(f"training the example teacher: {done:,}/{total:,} images, loss {loss:.3f}")

    if teacher_path.exists() and not args.force:
        print(f"{teacher_path}: exists, kept (--force to train a new one)")
    else:
        net, accuracy, seconds = train_example_teacher(args.images, args.seed, show)
        progress.close()
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # torch 2.x calls TorchScript deprecated; it is the format users have
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(net, torch.zeros(2, 1, 28, 28)), buffer)  # no control flow: exact
        _write_atomically(teacher_path, buffer.getvalue())
        print(
            f"{teacher_path}: TorchScript CNN for Fashion-MNIST classes 0-4 (input 1x28x28), trained on "
            f"{args.images:,} images in {seconds:.0f} s; test accuracy {accuracy:.2%} on the 5,000 test images"
        )
    if positives_path.exists() and not args.force:
        print(f"{positives_path}: exists, kept (--force to write it again)")
    else:
        count = write_positives(positives_path, args.per_class)
        folders = ", ".join(CLASS_FOLDERS)
        print(f"{positives_path}: {count} training images, {args.per_class} per class, folders {folders}")
    print(
        "next, with 'condense serve' running (its first start prints an API token):\n"
        f"  condense submit --server http://127.0.0.1:8000 --token $TOKEN --teacher {teacher_path} "
        f"--positives {positives_path} --input-shape 1,28,28 --epochs 30 --wait --out {out / 'result'}\n"
        "or on this machine, without a server:\n"
        f"  condense compress --teacher {teacher_path} --positives {positives_path} --input-shape 1,28,28 "
        f"--epochs 30 --pool demo --out {out / 'result'}",
        file=sys.stderr,
    )
    return 0


def add_example_command(commands: argparse._SubParsersAction) -> None:
    """Add ``example`` to the ``condense`` parser."""
    example = commands.add_parser(
        "example", help="write a small trained teacher and a positives archive for a first job"
    )
    example.add_argument("dir", help="folder to write teacher.pt and positives.zip into (created if needed)")
    example.add_argument(
        "--images", type=int, default=DEFAULT_TRAIN_IMAGES, help=f"training images (default {DEFAULT_TRAIN_IMAGES:,})"
    )
    example.add_argument(
        "--per-class", type=int, default=DEFAULT_PER_CLASS, help=f"positives per class (default {DEFAULT_PER_CLASS})"
    )
    example.add_argument("--seed", type=int, default=0)
    example.add_argument("--force", action="store_true", help="replace teacher.pt and positives.zip if present")
    example.add_argument("--quiet", action="store_true", help="no progress lines")
    example.set_defaults(run=_cmd_example)
