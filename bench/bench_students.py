"""Students against their teacher: size, arithmetic and measured ONNX Runtime latency.

Usage:  python bench/bench_students.py [--ratio 0.25] [--repeats 50]

Part 1 checks our counts against the GhostNet paper's CIFAR-10 figures (arXiv:1911.11907, tables 4 and 5).
Part 2 uses the input of the benchmark task (../shared/BENCHMARK.md: Fashion-MNIST, 1x28x28, 5 classes): a
ResNet-20 teacher at width 2 (about 1M parameters) and, for each family, its default student sized to
``--ratio`` of the teacher's MACs. Every model is exported to ONNX, verified against PyTorch in ONNX Runtime
and timed there at batch 1 and 32 (median of ``--repeats`` runs). Untrained weights: latency and counts do
not depend on training; accuracy is the distillation benchmark's job.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from compression import create_student, deploy_, profile
from compression.metrics import count_ops, count_parameters
from compression.students import Budget

PAPER_SIZES = [  # name, parameters, multiply-adds on 3x32x32 (GhostNet paper, tables 4 and 5)
    ("resnet56", 0.85e6, 125e6),
    ("ghost_resnet56", 0.43e6, 63e6),
    ("vgg16", 15e6, 313e6),
    ("ghost_vgg16", 7.7e6, 158e6),
]
TASK_INPUT = (1, 28, 28)
TASK_CLASSES = 5


def paper_check() -> None:
    print("## Sizes against the GhostNet paper (3x32x32, 10 classes)\n")
    print("| model | params | paper | diff | MACs | paper | diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, paper_params, paper_macs in PAPER_SIZES:
        model = create_student(name, num_classes=10, input_shape=(3, 32, 32))
        params = count_parameters(model)
        macs = count_ops(model, (3, 32, 32)).total.macs
        print(
            f"| {name} | {params / 1e6:.3f}M | {paper_params / 1e6:.2f}M | {params / paper_params - 1:+.1%} "
            f"| {macs / 1e6:.1f}M | {paper_macs / 1e6:.0f}M | {macs / paper_macs - 1:+.1%} |"
        )
    print()


def family_table(ratio: float, repeats: int) -> None:
    teacher = create_student("resnet20", num_classes=TASK_CLASSES, input_shape=TASK_INPUT, width=2.0)
    budget = Budget.from_teacher(teacher, TASK_INPUT, ratio=ratio, metric="macs")
    rows = [("teacher resnet20 x2", "plain", teacher)]
    for family in ("ghost", "binary", "adder"):
        student = create_student(family, num_classes=TASK_CLASSES, input_shape=TASK_INPUT, budget=budget)
        rows.append((f"{family} ({student.__class__.__name__}, {_stage_widths(student)})", family, student))
    print(f"## Teacher and students on {TASK_INPUT} input, {TASK_CLASSES} classes, budget {ratio:g} x teacher MACs\n")
    print(
        "| model | params | MACs | mults | adds | binary ops | weight KiB | ONNX KiB "
        "| ORT b1 ms | ORT b32 ms | ONNX max diff | top-1 agree |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, family, model in rows:
        started = time.perf_counter()
        # An untrained binary network amplifies float rounding through its sign() steps, so its top-1 on random
        # inputs is noise; the check is reported, not enforced, here (tests check trained binary students).
        strict = family != "binary"
        result = profile(
            deploy_(model),  # the inference form users ship (binary: 1-bit packed weights)
            TASK_INPUT,
            repeats=repeats,
            atol=1e-4 if strict else float("inf"),
            min_top1_agreement=1.0 if strict else 0.0,
        )
        d = result.as_dict()
        print(
            f"| {label} | {d['parameters']:,} | {d['macs'] / 1e6:.2f}M | {d['multiplications'] / 1e6:.2f}M "
            f"| {d['additions'] / 1e6:.2f}M | {d['binary_ops'] / 1e6:.2f}M | {d['weight_bytes'] / 1024:.1f} "
            f"| {d['onnx_bytes'] / 1024:.1f} | {result.latency[1].median_ms:.3f} | {result.latency[32].median_ms:.2f} "
            f"| {result.verification.max_abs_diff:.1e} | {result.verification.top1_agreement:.3f} |"
        )
        print(f"<!-- {label}: profiled in {time.perf_counter() - started:.1f} s -->")
    print()


def _stage_widths(model: torch.nn.Module) -> str:
    widths = [stage[0].bn2.num_features for stage in getattr(model, "stages", [])]
    return "widths " + "/".join(map(str, widths)) if widths else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.25, help="student MACs as a fraction of the teacher's")
    parser.add_argument("--repeats", type=int, default=50, help="timed ONNX Runtime runs per batch size")
    args = parser.parse_args()
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}); torch {torch.__version__}\n")
    paper_check()
    family_table(args.ratio, args.repeats)


if __name__ == "__main__":
    main()
