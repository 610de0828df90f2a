"""Train the benchmark task's teacher: a ResNet-20 at width 2 (1.07M parameters) on all 30,000 images.

Usage:  python bench/train_teacher.py [--epochs 4] [--out bench/artifacts/teacher.pt]

Plain SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a one-cycle learning rate (peak 0.1), batch 128,
random horizontal flips, as ../shared/BENCHMARK.md calibrates. Saves the teacher as TorchScript (the format
users upload) and prints its test accuracy. Seeded; the file is reused by the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.task import INPUT_SHAPE, TASK_CLASSES, load_task
from compression import create_student

DEFAULT_OUT = Path(__file__).resolve().parent / "artifacts" / "teacher.pt"


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    with torch.no_grad():
        predictions = torch.cat(
            [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )
    return (predictions == labels).float().mean().item()


def train_teacher(epochs: int, seed: int = 0, batch_size: int = 128, peak_lr: float = 0.1) -> torch.nn.Module:
    task = load_task()
    torch.manual_seed(seed)
    model = create_student("resnet20", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=2.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = train_teacher(args.epochs, args.seed)
    task = load_task()
    test_accuracy = accuracy(model, task.test.images, task.test.labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(model), str(args.out))
    summary = {"test_accuracy": test_accuracy, "epochs": args.epochs, "seed": args.seed}
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
