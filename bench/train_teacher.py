"""Train a benchmark teacher on all 30,000 task images.

Usage:  python -m bench.train_teacher [--arch resnet|cnn] [--epochs 4] [--out PATH]

``resnet`` (the benchmark teacher, ``bench/artifacts/teacher.pt``): a ResNet-20 at width 2 (1.07M parameters),
plain SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a one-cycle learning rate (peak 0.1), batch 128, random
horizontal flips, as ../shared/BENCHMARK.md calibrates. ``cnn`` (the second teacher, ``bench/artifacts/
teacher_cnn.pt``): the plain three-convolution CNN of ``condense example`` (no batch norm, no residuals, about 11M
MACs), Adam with a one-cycle rate (peak 3e-3) as ``condense example`` trains it, the same batches and flips; it
exists so that no default is tuned to one architecture. Saves the teacher as TorchScript (the format users upload)
and prints its test accuracy. Seeded; the file is reused by the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.task import INPUT_SHAPE, TASK_CLASSES, load_task
from compression import create_student

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class TeacherSpec:
    """One benchmark teacher: where its file lives and how the tables name it."""

    path: Path
    label: str


TEACHERS = {
    "resnet": TeacherSpec(ARTIFACTS / "teacher.pt", "ResNet-20 x2"),
    "cnn": TeacherSpec(ARTIFACTS / "teacher_cnn.pt", "plain CNN, 3 convs"),
}


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    with torch.no_grad():
        predictions = torch.cat(
            [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )
    return (predictions == labels).float().mean().item()


def train_teacher(epochs: int, seed: int = 0, batch_size: int = 128, arch: str = "resnet") -> torch.nn.Module:
    task = load_task()
    torch.manual_seed(seed)
    optimizer: torch.optim.Optimizer
    if arch == "resnet":
        model = create_student("resnet20", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=2.0)
        peak_lr = 0.1
        optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    elif arch == "cnn":
        from service.cli.example import build_teacher

        model = build_teacher()
        peak_lr = 3e-3
        optimizer = torch.optim.Adam(model.parameters(), lr=peak_lr)
    else:
        raise ValueError(f"arch must be one of {sorted(TEACHERS)}, got {arch!r}")
    steps_per_epoch = -(-len(task.train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, peak_lr, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(task.train), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x, y = task.train.images[batch], task.train.labels[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        test_accuracy = accuracy(model, task.test.images, task.test.labels)
        print(f"epoch {epoch + 1}/{epochs}: {time.perf_counter() - started:.0f} s, test accuracy {test_accuracy:.4f}")
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(TEACHERS), default="resnet")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: the teacher's file in bench/artifacts")
    args = parser.parse_args(argv)
    out = args.out or TEACHERS[args.arch].path
    started = time.perf_counter()
    model = train_teacher(args.epochs, args.seed, arch=args.arch)
    task = load_task()
    test_accuracy = accuracy(model, task.test.images, task.test.labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The ResNet is scripted; the example CNN has no control flow and untyped forward arguments, so it is traced.
    scripted = torch.jit.script(model) if args.arch == "resnet" else torch.jit.trace(model, task.test.images[:2])
    torch.jit.save(scripted, str(out))
    summary = {"arch": args.arch, "test_accuracy": test_accuracy, "epochs": args.epochs, "seed": args.seed}
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
