"""Teachers and students side by side in ONNX Runtime on this CPU, then int8 on top of the chosen student.

Usage:  python -m bench.bench_latency [--ratio 0.4] [--threads 1] [--rounds 7] [--epochs 1] [--cache PATH] [--skip-int8]

Part 1, for each teacher (the benchmark's ResNet-20 x2 and the small CNN of ``condense example``, input 1x28x28,
5 classes; latency needs only the architecture, so untrained weights are used): the Ghost student sized to a quarter
of the teacher's MACs (the earlier default), a Ghost student whose channel counts are multiples of 16, the plain
ResNet-20 of the same MAC budget, and the student that ``auto_student`` chooses for a latency ratio (``--ratio``,
default 0.4) at batch 1 and 32. All files of one teacher are timed in interleaved rounds in one process (minimum and
median of all runs), so ratios are side by side even on a shared machine. The node count after ONNX Runtime's
optimisation shows the layout reorders (``ReorderInput/Output``) that non-blocked channel counts and unfoldable batch
norms cost.

Part 2: the benchmark teacher's chosen student is trained on the labels of all 30,000 training images for
``--epochs`` (short: enough for an accuracy figure, not for the distillation targets), exported, quantized to int8
with 512 training images for calibration, verified on the 5,000 test images and timed against its float file.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import tempfile
import time
from pathlib import Path

import onnx
import torch
from torch import nn

from compression import create_student
from compression.export import export_onnx
from compression.export.int8 import quantize_int8
from compression.metrics import count_ops
from compression.metrics.latency import measure_side_by_side
from compression.students import Budget
from compression.students.latency_sizing import DEFAULT_LATENCY_RATIO, LatencyBudget, auto_student
from pu_mining.benchmark_task import task_images

INPUT = (1, 28, 28)
CLASSES = 5


def example_teacher() -> nn.Module:
    """The architecture of ``condense example``'s teacher (service/cli/example.py), rebuilt here."""
    from service.cli.example import build_teacher

    return build_teacher()


def optimised_nodes(path: Path, folder: Path) -> str:
    """Node counts of the graph ONNX Runtime runs (after all optimisations): total and layout reorders."""
    options_path = folder / (path.stem + ".opt.onnx")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(options_path)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts = collections.Counter(node.op_type for node in onnx.load(str(options_path)).graph.node)
    reorders = counts["ReorderInput"] + counts["ReorderOutput"]
    return f"{sum(counts.values())} ({reorders} reorders)"


def latency_table(name: str, teacher: nn.Module, args: argparse.Namespace, folder: Path) -> nn.Module:
    budget = Budget.from_teacher(teacher, INPUT, ratio=0.25)
    started = time.perf_counter()
    fit = auto_student(
        teacher, INPUT, CLASSES, LatencyBudget(ratio=args.ratio, threads=args.threads or None), cache_path=args.cache
    )
    search_s = time.perf_counter() - started
    chosen = fit.build(CLASSES, INPUT)
    rows: list[tuple[str, nn.Module]] = [
        (f"teacher: {name}", teacher),
        ("ghost, 0.25 x teacher MACs (previous default)", create_student("ghost", CLASSES, INPUT, budget=budget)),
        ("ghost_resnet20, width 2 (channels multiple of 16)", create_student("ghost", CLASSES, INPUT, width=2.0)),
        ("resnet20 plain, 0.25 x teacher MACs", create_student("resnet20", CLASSES, INPUT, budget=budget)),
        (f"auto (latency ratio {args.ratio:g}): {chosen.describe()}", chosen),
    ]
    paths = []
    for index, (_, model) in enumerate(rows):
        path = folder / f"{name}-{index}.onnx"
        export_onnx(model, path, torch.randn(2, *INPUT))
        paths.append(path)
    threads = args.threads or None
    times = {b: measure_side_by_side(paths, INPUT, b, args.rounds, 20 if b == 1 else 4, intra_op_num_threads=threads)
             for b in (1, 32)}  # fmt: skip
    print(f"### {name} (search for the auto student: {search_s:.0f} s)\n")
    print(f"auto: {fit.reason}\n")
    print("min / median ms per batch over all runs; speed-up = teacher / model, of the minima and of the medians\n")
    print("| model | MACs | ORT nodes | b1 ms | b1 speed-up | b32 ms | b32 speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for index, (label, model) in enumerate(rows):
        macs = count_ops(model, INPUT).total.macs
        cells = []
        for size in (1, 32):
            mine, teacher_stats = times[size][index], times[size][0]
            cells.append(f"{mine.min_ms:.3f} / {mine.median_ms:.3f}")
            cells.append(f"{teacher_stats.min_ms / mine.min_ms:.2f}x / {teacher_stats.median_ms / mine.median_ms:.2f}x")
        print(f"| {label} | {macs / 1e6:.1f}M | {optimised_nodes(paths[index], folder)} | {' | '.join(cells)} |")
    print()
    return chosen


def train_on_labels(model: nn.Module, epochs: int) -> float:
    x, y = task_images("train", 30000)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * ((len(x) + 127) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 128):
            batch = order[start : start + 128]
            inputs = x[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            inputs[flip] = inputs[flip].flip(-1)
            loss = nn.functional.cross_entropy(model(inputs), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    return time.perf_counter() - started


def int8_table(student: nn.Module, args: argparse.Namespace, folder: Path) -> None:
    seconds = train_on_labels(student, args.epochs)
    float_path = folder / "student.onnx"
    export_onnx(student, float_path, torch.randn(2, *INPUT))
    calibration, _ = task_images("train", 512)
    test_x, test_y = task_images("test", 5000)
    result = quantize_int8(
        float_path,
        folder / "student.int8.onnx",
        calibration.numpy(),
        test_x.numpy(),
        test_y.numpy(),
        max_loss=0.005,
        latency_threads=args.threads or None,
    )
    print(
        f"### int8 of the benchmark teacher's auto student "
        f"(trained {args.epochs} epoch(s) on labels, {seconds:.0f} s)\n"
    )
    print("| file | KiB | test top-1 (5,000) | b1 ms (min) | b32 ms (min) |")
    print("|---|---:|---:|---:|---:|")
    for kind, size, acc in (
        ("float", result.float_bytes, result.float_accuracy),
        ("int8 QDQ", result.int8_bytes, result.int8_accuracy),
    ):
        key = "float" if kind == "float" else "int8"
        print(
            f"| {kind} | {size / 1024:.0f} | {acc:.2%} | {result.latency_ms[key][1]:.3f} | "
            f"{result.latency_ms[key][32]:.2f} |"
        )
    print(f"\n{result.describe()}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: one per core)")
    parser.add_argument("--ratio", type=float, default=DEFAULT_LATENCY_RATIO, help="latency budget of auto")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the student quantized in part 2")
    parser.add_argument("--cache", default=None, help="JSON cache of candidate latencies for the search")
    parser.add_argument("--skip-int8", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), shared with other work; ", end="")
    print(f"ONNX Runtime threads: {args.threads or 'default'}; torch {torch.__version__}\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as scratch:
        folder = Path(scratch)
        benchmark_student = latency_table(
            "ResNet-20 x2", create_student("resnet20", CLASSES, INPUT, width=2.0), args, folder
        )
        latency_table("condense example CNN", example_teacher(), args, folder)
        if not args.skip_int8:
            int8_table(benchmark_student, args, folder)
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
