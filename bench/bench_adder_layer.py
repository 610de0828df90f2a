"""Benchmark: AdderConv2d (compression/layers/adder.py) vs a straightforward unfold-and-broadcast version.

Both compute the same formula with the same custom gradients (AdderNet, arXiv:1912.13200):
``Y = -sum_k |X - W|``, ``dW = sum G * (X - W)``, ``dX = fold(sum_o G * clamp(W - X, -1, 1))``.
The naive version below is a custom ``torch.autograd.Function`` that unfolds the input, saves the
unfolded input and builds the ``[N, out, K, positions]`` broadcast tensor in forward and backward.

Measured:

* forward+backward wall time: median (and minimum) over ``--naive-repeats`` naive runs and at least
  ``--repeats`` fast runs after ``--warmup`` runs of each, in this process, ``torch`` at its default
  thread count; the runs are interleaved so that both versions see the same background load, and the
  load average is printed (on a shared machine it tells how much the numbers are disturbed);
* peak memory: each implementation runs once in a fresh subprocess; after a tiny warm-up (other shape)
  that initialises the thread pools, the peak resident set size is reset through
  ``/proc/self/clear_refs`` and the reported number is ``VmHWM - VmRSS`` (from ``/proc/self/status``)
  around one forward+backward. (``tracemalloc`` would not see torch's allocations.)
* correctness: output, input gradient and weight gradient of both versions agree to
  ``max|a - b| / max|b| <= 1e-4``.

Run: ``python bench/bench_adder_layer.py`` (defaults: CIFAR ResNet-20 first stage, batch 64, 16->16
channels, 32x32, 3x3, stride 1, padding 1, float32). ``--stages`` also times the other two ResNet-20
stages (32 channels at 16x16, 64 channels at 8x8).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compression.layers.adder import adder_conv2d, set_adder_kernel

RELATIVE_TOLERANCE = 1e-4


class NaiveAdderFunction(torch.autograd.Function):
    """Unfold + broadcast: materialises ``[N, out, K, positions]`` in forward and (twice) in backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        batch, _, height, width = x.shape
        out_channels, _, kernel_h, kernel_w = weight.shape
        columns = F.unfold(x, (kernel_h, kernel_w), padding=padding, stride=stride)  # [N, K, L]
        difference = columns.unsqueeze(1) - weight.reshape(1, out_channels, -1, 1)  # [N, O, K, L]
        out = -difference.abs().sum(dim=2)
        ctx.save_for_backward(columns, weight)
        ctx.geometry = (height, width, stride, padding)
        out_h = (height + 2 * padding - kernel_h) // stride + 1
        out_w = (width + 2 * padding - kernel_w) // stride + 1
        return out.view(batch, out_channels, out_h, out_w)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        columns, weight = ctx.saved_tensors
        height, width, stride, padding = ctx.geometry
        out_channels, _, kernel_h, kernel_w = weight.shape
        grad = grad_output.reshape(grad_output.shape[0], out_channels, 1, -1)  # [N, O, 1, L]
        difference = columns.unsqueeze(1) - weight.reshape(1, out_channels, -1, 1)  # X - W
        grad_weight = (grad * difference).sum(dim=(0, 3)).view_as(weight)
        grad_columns = (grad * (-difference).clamp(-1.0, 1.0)).sum(dim=1)
        grad_input = F.fold(grad_columns, (height, width), (kernel_h, kernel_w), padding=padding, stride=stride)
        return grad_input, grad_weight, None, None


def naive_adder(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    return NaiveAdderFunction.apply(x, weight, stride, padding)


def torch_kernel_adder(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """The layer with its PyTorch-operator kernel (chunked gathering + cdist)."""
    previous = set_adder_kernel("torch")
    try:
        return adder_conv2d(x, weight, None, stride, padding)
    finally:
        set_adder_kernel(previous)


def compiled_kernel_adder(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """The layer with its compiled C++ kernel (error if it cannot be built)."""
    previous = set_adder_kernel("compiled")
    try:
        return adder_conv2d(x, weight, None, stride, padding)
    finally:
        set_adder_kernel(previous)


IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]] = {
    "naive": naive_adder,
    "torch": torch_kernel_adder,
    "compiled": compiled_kernel_adder,
}
FAST = ("torch", "compiled")


@dataclass(frozen=True)
class Shape:
    batch: int
    in_channels: int
    out_channels: int
    size: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    def describe(self) -> str:
        return (
            f"batch {self.batch}, {self.in_channels}->{self.out_channels} channels, {self.size}x{self.size}, "
            f"{self.kernel}x{self.kernel}, stride {self.stride}, padding {self.padding}, float32"
        )


def make_inputs(shape: Shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.batch, shape.in_channels, shape.size, shape.size, generator=generator)
    weight = torch.randn(shape.out_channels, shape.in_channels, shape.kernel, shape.kernel, generator=generator)
    weight *= 0.5
    out_size = (shape.size + 2 * shape.padding - shape.kernel) // shape.stride + 1
    grad_output = torch.randn(shape.batch, shape.out_channels, out_size, out_size, generator=generator)
    return x, weight, grad_output


def forward_backward(
    implementation: str, shape: Shape, x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    out = IMPLEMENTATIONS[implementation](x, weight, shape.stride, shape.padding)
    out.backward(grad_output)
    if x.grad is None or weight.grad is None:
        raise RuntimeError(f"{implementation}: backward produced no gradient")
    return out.detach(), x.grad, weight.grad


def time_forward_backward(shape: Shape, warmup: int, repeats: int, naive_repeats: int) -> dict[str, list[float]]:
    """Wall seconds per forward+backward. The two versions are interleaved (one naive run, then a few fast
    runs, per round) so that both see the same background load on a shared machine."""
    x, weight, grad_output = make_inputs(shape)
    for implementation in IMPLEMENTATIONS:
        for _ in range(warmup):
            forward_backward(implementation, shape, x, weight, grad_output)
    seconds: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    fast_per_round = max(1, math.ceil(repeats / naive_repeats))
    for _ in range(naive_repeats):
        schedule = [("naive", 1)] + [(name, 1) for _ in range(fast_per_round) for name in FAST]
        for implementation, runs in schedule:
            for _ in range(runs):
                start = time.perf_counter()
                forward_backward(implementation, shape, x, weight, grad_output)
                seconds[implementation].append(time.perf_counter() - start)
    return seconds


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return ((result - reference).abs().max() / reference.abs().max()).item()


def read_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak_memory_in_this_process(implementation: str, shape: Shape) -> dict[str, int | bool]:
    """Peak RSS growth (KiB) over one forward+backward; meant to run in a fresh subprocess."""
    tiny = Shape(batch=2, in_channels=shape.in_channels, out_channels=shape.out_channels, size=8)
    forward_backward(implementation, tiny, *make_inputs(tiny))  # thread pools, MKL, lazy init
    x, weight, grad_output = make_inputs(shape)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    baseline = read_status_kib("VmRSS")
    forward_backward(implementation, shape, x, weight, grad_output)
    peak = read_status_kib("VmHWM")
    return {"peak_delta_kib": peak - baseline, "baseline_kib": baseline, "hwm_reset": reset}


def measure_peak_memory(implementation: str, shape: Shape) -> dict[str, int | bool]:
    command = [
        sys.executable,
        __file__,
        "--memory-worker",
        implementation,
        "--shape-json",
        json.dumps(shape.__dict__),
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """1, 5 and 15 minute load averages: above ``nproc`` other processes competed for the cores."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "0 0 0"


def benchmark_shape(shape: Shape, warmup: int, repeats: int, naive_repeats: int) -> dict[str, float]:
    print(f"\nshape: {shape.describe()}")
    x, weight, grad_output = make_inputs(shape)
    reference = forward_backward("naive", shape, x, weight, grad_output)
    results = {name: forward_backward(name, shape, x, weight, grad_output) for name in FAST}
    for name, result in results.items():
        errors = {
            part: relative_error(mine, theirs)
            for part, mine, theirs in zip(("output", "grad_input", "grad_weight"), result, reference, strict=True)
        }
        line = ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        print(f"relative error {name} vs naive (max|a-b|/max|b|): {line}")
        if max(errors.values()) > RELATIVE_TOLERANCE:
            raise SystemExit(f"MISMATCH: relative error above {RELATIVE_TOLERANCE}")
    compiled_vs_torch = [
        relative_error(mine, theirs) for mine, theirs in zip(results["compiled"], results["torch"], strict=True)
    ]
    cosines = [
        F.cosine_similarity(mine.flatten().double(), theirs.flatten().double(), dim=0).item()
        for mine, theirs in zip(results["compiled"][1:], results["torch"][1:], strict=True)
    ]
    print(
        f"compiled vs torch kernel: relative error output {compiled_vs_torch[0]:.2e} (goal <= 1e-5), "
        f"grad_input {compiled_vs_torch[1]:.2e}, grad_weight {compiled_vs_torch[2]:.2e}; "
        f"gradient cosines {cosines[0]:.7f} / {cosines[1]:.7f} (goal >= 0.9999)"
    )

    seconds = time_forward_backward(shape, warmup, repeats, naive_repeats)
    medians = {name: statistics.median(runs) for name, runs in seconds.items()}
    for name, runs in seconds.items():
        print(
            f"{name:>8}: forward+backward median {medians[name] * 1e3:8.1f} ms "
            f"(min {min(runs) * 1e3:.1f}, max {max(runs) * 1e3:.1f}, {len(runs)} runs)"
        )
    memory = {name: measure_peak_memory(name, shape) for name in IMPLEMENTATIONS}
    for name, measured in memory.items():
        print(
            f"{name:>8}: peak RSS growth over one forward+backward "
            f"{measured['peak_delta_kib'] / 1024:8.1f} MiB "
            f"(baseline RSS {measured['baseline_kib'] / 1024:.0f} MiB, VmHWM reset: {measured['hwm_reset']})"
        )
    for name in FAST:
        print(
            f"speed-up naive/{name}: {medians['naive'] / medians[name]:.1f}x of medians; memory {name}/naive "
            f"{memory[name]['peak_delta_kib'] / memory['naive']['peak_delta_kib']:.3f}"
        )
    speedup = medians["torch"] / medians["compiled"]
    print(
        f"speed-up torch kernel/compiled kernel: {speedup:.1f}x of medians, "
        f"{min(seconds['torch']) / min(seconds['compiled']):.1f}x of minima   (goal >= 3x)"
    )
    return {"speedup": speedup}


def benchmark_training_steps(steps: int, warmup: int) -> dict[str, float]:
    """Training steps of the benchmark task's default adder student (batch 128 of real Fashion-MNIST images,
    cross-entropy, SGD, the paper's adaptive learning rate), the two kernels alternating step by step; the
    epoch figure is the median step time times the steps of one epoch over the 30,000 training images."""
    from bench.task import INPUT_SHAPE, TASK_CLASSES, load_task
    from compression import Budget, create_student
    from compression.layers import scale_adder_gradients_

    task = load_task()
    # The budget of bench_distill: a quarter of the teacher's MACs (ResNet-20 at width 2, bench/train_teacher.py).
    teacher_shape = create_student("resnet20", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, width=2.0)
    budget = Budget.from_teacher(teacher_shape, INPUT_SHAPE)
    torch.manual_seed(0)
    student = create_student("adder", num_classes=TASK_CLASSES, input_shape=INPUT_SHAPE, budget=budget)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    batch = 128
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(0))
    seconds: dict[str, list[float]] = {name: [] for name in FAST}
    for step in range(warmup + steps):
        for name in FAST:
            indices = order[(step * batch) % len(order) :][:batch]
            previous = set_adder_kernel(name)
            start = time.perf_counter()
            loss = F.cross_entropy(student(task.train.images[indices]), task.train.labels[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            scale_adder_gradients_(student)
            optimizer.step()
            elapsed = time.perf_counter() - start
            set_adder_kernel(previous)
            if step >= warmup:
                seconds[name].append(elapsed)
    steps_per_epoch = math.ceil(len(task.train) / batch)
    print(f"\ntraining steps: default adder student, batch {batch}, {steps} steps per kernel after {warmup} warm-up")
    medians = {}
    for name, runs in seconds.items():
        medians[name] = statistics.median(runs)
        print(
            f"{name:>8}: step median {medians[name] * 1e3:7.1f} ms (min {min(runs) * 1e3:.1f}), "
            f"epoch of {steps_per_epoch} steps ~ {medians[name] * steps_per_epoch / 60:.2f} min"
        )
    speedup = medians["torch"] / medians["compiled"]
    print(f"epoch speed-up torch kernel/compiled kernel: {speedup:.1f}x of median steps   (goal >= 3x)")
    return {"epoch_speedup": speedup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of the fast version (at least)")
    parser.add_argument("--naive-repeats", type=int, default=5, help="timed runs of the naive version")
    parser.add_argument("--stages", action="store_true", help="also the 2nd and 3rd ResNet-20 stages")
    parser.add_argument("--train-steps", type=int, default=0, help="also time this many training steps per kernel")
    parser.add_argument("--layer", action=argparse.BooleanOptionalAction, default=True, help="time the layer")
    parser.add_argument("--memory-worker", choices=sorted(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--shape-json", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_worker:
        shape = Shape(**json.loads(args.shape_json))
        print(json.dumps(measure_peak_memory_in_this_process(args.memory_worker, shape)))
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, nproc {os.cpu_count()}")
    print(f"CPU: {cpu_model()}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average before: {load_average()}")
    if os.cpu_count() and float(load_average().split()[0]) > os.cpu_count():
        print(
            "WARNING: other processes compete for the cores. With the default (spinning) OpenMP wait policy "
            "short parallel ops then stall for whole scheduler slices, which hits the fast version's many "
            "small ops far harder than the naive version's few huge ones; rerun on a quiet machine or with "
            "OMP_WAIT_POLICY=PASSIVE."
        )
    shapes = [Shape(batch=64, in_channels=16, out_channels=16, size=32)]
    if args.stages:
        shapes += [
            Shape(batch=64, in_channels=32, out_channels=32, size=16),
            Shape(batch=64, in_channels=64, out_channels=64, size=8),
        ]
    for shape in shapes if args.layer else []:
        benchmark_shape(shape, args.warmup, args.repeats, args.naive_repeats)
    if args.train_steps:
        benchmark_training_steps(args.train_steps, args.warmup)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
