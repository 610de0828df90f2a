"""How well *any* miner could separate the task from its look-alikes: a fully supervised ceiling.

    python -m bench.bench_mining_ceiling [--arch cnn|resnet] [--epochs 4] [--threads 2] [--out F.json]

Mining must tell the task's images (Fashion-MNIST classes 0-4) from the pool's look-alikes (classes 5-9, above all
Shirt, which looks like a T-shirt, a pullover or a coat) with 300 labelled positives and no labelled negatives. This
benchmark gives the separator every advantage a miner lacks: it trains a 10-class classifier on all 60,000
labelled Fashion-MNIST training images (``cnn``: the three-convolution CNN of ``condense example``; ``resnet``: a
ResNet-20, width 1), scores the 10,000 test images (never trained on) by the probability of the task's classes and
reports, at each benchmark pool's ratio of look-alikes to task images (on-topic: 30,000 to 29,700; wild: 30,000 to
1,500; negatives weighted accordingly, the pool's unrelated images left out, which can only flatter the figures):

- the precision reachable at recall 0.90, and the recall reachable at precision 0.95;
- the precision at the recalls given with ``--at-recall`` (e.g. a miner's own recall, to compare it at equal recall).

A miner's precision and recall above these are not reachable with a separator of this strength.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_curve, roc_auc_score

from pu_mining.sources import fashion_mnist

TASK_CLASSES = 5
LOOKALIKES_IN_POOL = 30_000
TASK_IMAGES_IN_POOL = {"on-topic": 29_700, "wild": 1_500}


def _classifier(arch: str) -> torch.nn.Module:
    if arch == "cnn":
        from service.cli.example import build_teacher

        model = build_teacher()
        model.head = torch.nn.Linear(model.head.in_features, 10)
        return model
    if arch == "resnet":
        from compression import create_student

        return create_student("resnet20", num_classes=10, input_shape=(1, 28, 28), width=1.0)
    raise ValueError(f"arch must be cnn or resnet, got {arch!r}")


def _train(arch: str, epochs: int, seed: int = 0, batch_size: int = 128) -> tuple[torch.nn.Module, list[float]]:
    images, labels = fashion_mnist("train")
    x = torch.from_numpy(images.copy()).float().div(255).unsqueeze(1)
    y = torch.from_numpy(labels)
    torch.manual_seed(seed)
    model = _classifier(arch)
    peak_lr = 3e-3 if arch == "cnn" else 0.1
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=peak_lr)
        if arch == "cnn"
        else torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    )
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, peak_lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    epoch_seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            inputs = torch.where(flip.view(-1, 1, 1, 1), x[batch].flip(3), x[batch])
            loss = F.cross_entropy(model(inputs), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        epoch_seconds.append(round(time.perf_counter() - started, 1))
    return model.eval(), epoch_seconds


def ceiling(task: np.ndarray, scores: np.ndarray, task_in_pool: int, at_recall: list[float]) -> dict[str, float]:
    """Precision / recall figures of ``scores`` (higher: more task-like) on test items with truth ``task``, the
    negatives weighted to ``LOOKALIKES_IN_POOL`` look-alikes per ``task_in_pool`` task images."""
    positives, negatives = int(task.sum()), int((~task).sum())
    weight = (LOOKALIKES_IN_POOL / negatives) / (task_in_pool / positives)
    precision, recall, _ = precision_recall_curve(task, scores, sample_weight=np.where(task, 1.0, weight))
    reachable = precision >= 0.95
    figures = {
        "precision_at_recall_0.90": round(float(precision[recall >= 0.90].max()), 4),
        "recall_at_precision_0.95": round(float(recall[reachable].max()), 4) if reachable.any() else 0.0,
    }
    for wanted in at_recall:
        figures[f"precision_at_recall_{wanted:.2f}"] = round(float(precision[recall >= wanted].max()), 4)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("cnn", "resnet"), default="cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--at-recall", type=float, nargs="*", default=[], help="also the precision at these recalls")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if any(not 0 < r <= 1 for r in args.at_recall):
        parser.error("--at-recall values must be in (0, 1]")
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    model, epoch_seconds = _train(args.arch, args.epochs)
    images, labels = fashion_mnist("test")
    x = torch.from_numpy(images.copy()).float().div(255).unsqueeze(1)
    with torch.no_grad():
        probabilities = torch.cat([model(x[i : i + 1000]).softmax(1) for i in range(0, len(x), 1000)]).numpy()
    task = labels < TASK_CLASSES
    scores = probabilities[:, :TASK_CLASSES].sum(1)
    predicted = probabilities.argmax(1)
    output = {
        "command": "python -m bench.bench_mining_ceiling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {args.threads} threads",
        "arch": args.arch,
        "epochs": args.epochs,
        "epoch_seconds": epoch_seconds,
        "test_images": len(labels),
        "test_accuracy_10_classes": round(float((predicted == labels).mean()), 4),
        "shirts_taken_for_task_classes": round(float((predicted[labels == 6] < TASK_CLASSES).mean()), 4),
        "roc_auc_task_vs_lookalikes": round(float(roc_auc_score(task, scores)), 4),
        "regimes": {
            regime: ceiling(task, scores, count, args.at_recall) for regime, count in TASK_IMAGES_IN_POOL.items()
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(output, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(output, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
