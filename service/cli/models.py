"""``condense students | profile | distill``: the compression library from the command line, no service needed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_model_commands", "parse_input_shape"]


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"1,28,28"`` or ``"1x28x28"`` as ``(C, H, W)`` (an argparse type)."""
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers C,H,W, got {text!r}")
    return parts


def _cmd_students(args: argparse.Namespace) -> int:
    from compression.students import family_defaults, list_students, resolve_student

    defaults = {arch: family for family, arch in family_defaults().items()}
    rows = [resolve_student(name) for name in list_students(args.family)]
    if args.json:
        print(json.dumps([{"name": r.name, "family": r.family, "description": r.description} for r in rows]))
        return 0
    for info in rows:
        alias = f"  (default for '{defaults[info.name]}')" if info.name in defaults else ""
        print(f"{info.name:<16} {info.family:<7} {info.description}{alias}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from compression import create_student, profile
    from compression.students import Budget

    budget = None
    if args.budget_ratio is not None:
        reference = create_student(args.reference, num_classes=args.num_classes, input_shape=args.input_shape)
        budget = Budget.from_teacher(reference, args.input_shape, ratio=args.budget_ratio, metric=args.budget_metric)
    model = create_student(
        args.student,
        num_classes=args.num_classes,
        input_shape=args.input_shape,
        width=args.width,
        budget=budget,
    )
    # A fresh binary network amplifies float rounding through its sign() steps, so on random inputs its
    # top-1 is noise: the ONNX check is reported but not enforced for it (trained students are checked strictly).
    untrained_binary = getattr(model, "family", None) == "binary"
    result = profile(
        model,
        args.input_shape,
        onnx_path=args.onnx,
        atol=float("inf") if untrained_binary else 1e-4,
        min_top1_agreement=0.0 if untrained_binary else 1.0,
    )
    summary = {"student": args.student, "input_shape": list(args.input_shape), **result.as_dict()}
    summary.pop("layers")
    if args.onnx:
        summary["onnx"] = args.onnx
    print(json.dumps(summary, indent=2) if args.json else _format_profile(summary))
    return 0


def _verdict(check: dict) -> str:
    if check["min_top1_agreement"] == 0:
        return "reported, not enforced (untrained binary network)"
    return "passed" if check["passed"] else "FAILED"


def _format_profile(summary: dict) -> str:
    check = summary["verification"]
    lines = [f"{key:<16} {summary[key]:,}" for key in ("parameters", "macs", "multiplications", "additions")]
    lines += [f"{key:<16} {summary[key]:,}" for key in ("binary_ops", "weight_bytes", "onnx_bytes")]
    lines.append(
        f"{'onnx check':<16} {_verdict(check)}: max abs diff {check['max_abs_diff']:.2e}, "
        f"top-1 agreement {check['top1_agreement']:.1%} over {check['num_samples']} samples"
    )
    for size, stats in summary["latency"].items():
        lines.append(f"{'latency b' + size:<16} {stats['median_ms']:.2f} ms median (p90 {stats['p90_ms']:.2f} ms)")
    if "onnx" in summary:
        lines.append(f"{'onnx file':<16} {summary['onnx']}")
    return "\n".join(lines)


def _cmd_distill(args: argparse.Namespace) -> int:
    import signal

    from compression import Budget, create_student, deploy_, distill, load_teacher, profile
    from compression.distill import TransferSet, default_config, evaluate, infer_family
    from compression.metrics.graph_ops import teacher_macs
    from pu_mining.arrays import read_image_arrays
    from service.cli.progress import ProgressBar

    teacher = load_teacher(args.teacher, input_shape=args.input_shape)
    train = read_image_arrays(args.train)
    val = read_image_arrays(args.val) if args.val else None
    reference = teacher_macs(teacher)
    if reference is None:
        raise ValueError("cannot count the teacher's MACs for --budget-ratio; give --width instead")
    budget = None if args.width is not None else Budget(reference, args.budget_ratio, "macs")
    shape = teacher.input_shape
    student = create_student(
        args.student, num_classes=teacher.num_classes, input_shape=shape, width=args.width, budget=budget
    )
    overrides = _config_overrides(args)
    config = default_config(infer_family(student)).replace(**overrides)
    bar = None if args.quiet else ProgressBar()
    interrupted = {"count": 0}

    def on_interrupt(signum: int, frame: object) -> None:  # first Ctrl-C: stop and keep the best student
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt

    train_set = TransferSet(_fit(train.images, shape), train.labels)  # adapted once, for training and the report
    val_set = None if val is None else TransferSet(_fit(val.images, shape), val.labels)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = distill(
            teacher,
            student,
            train_set,
            val_set,
            config,
            on_progress=bar,
            checkpoint_dir=args.checkpoint_dir,
            should_stop=lambda: interrupted["count"] > 0,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    check_set = val_set if val_set is not None else train_set  # the report says which one
    check_images = check_set.images
    evaluation = evaluate(result.student, teacher, check_images, check_set.labels)
    deploy_(result.student)
    binary = infer_family(result.student) == "binary"
    samples = [check_images[i : i + 64] for i in range(0, min(len(check_images), 256), 64)]
    # Trained logits can be large: the check is relative as well as absolute (binary: top-1 only, see profile).
    measured = profile(
        result.student,
        shape,
        onnx_path=args.out,
        atol=float("inf") if binary else 1e-4,
        rtol=1e-4,
        sample_inputs=samples,
    )
    summary = {
        "student": args.student,
        "family": infer_family(result.student),
        "teacher_macs": reference,
        "stopped_reason": result.stopped_reason,
        "epochs_done": max(record.epoch for record in result.history),
        "best_epoch": result.best_epoch,
        "wall_s": round(result.wall_s, 1),
        "evaluated_on": "val" if val is not None else "train",
        "student_accuracy": evaluation.student_accuracy,
        "teacher_accuracy": evaluation.teacher_accuracy,
        "agreement": evaluation.agreement,
        **{k: v for k, v in measured.as_dict().items() if k != "layers"},
    }
    if args.out:
        summary["onnx"] = str(args.out)
    print(json.dumps(summary, indent=2) if args.json else _format_distill(summary))
    return 0


def _config_overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    if args.config:
        try:
            overrides.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--config {args.config}: not a readable JSON object ({error})") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of DistillConfig fields")
    for field, value in (("epochs", args.epochs), ("seed", args.seed), ("batch_size", args.batch_size)):
        if value is not None:
            overrides[field] = value
    if args.time_budget is not None:
        overrides["time_budget_s"] = args.time_budget * 60.0
    return overrides


def _fit(images, shape: tuple[int, int, int]):
    """Images resized / channel-converted to the teacher's input shape (the student takes the same input)."""
    from compression.teachers import adapt_images

    return images if tuple(images.shape[1:]) == tuple(shape) else adapt_images(images, shape)


def _format_distill(summary: dict) -> str:
    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2%}"

    lines = [
        f"{'stopped':<18} {summary['stopped_reason']} after {summary['epochs_done']} epoch(s), "
        f"best epoch {summary['best_epoch']}, {summary['wall_s']} s",
        f"{'student accuracy':<18} {percent(summary['student_accuracy'])} ({summary['evaluated_on']} images)",
        f"{'teacher accuracy':<18} {percent(summary['teacher_accuracy'])}",
        f"{'agreement':<18} {percent(summary['agreement'])}",
        f"{'parameters':<18} {summary['parameters']:,}",
        f"{'MACs':<18} {summary['macs']:,} (teacher {summary['teacher_macs']:,})",
        f"{'multiplications':<18} {summary['multiplications']:,}",
        f"{'weight bytes':<18} {summary['weight_bytes']:,}",
    ]
    for size, stats in summary["latency"].items():
        lines.append(f"{'latency b' + size:<18} {stats['median_ms']:.2f} ms median")
    if "onnx" in summary:
        lines.append(f"{'onnx file':<18} {summary['onnx']}")
    return "\n".join(lines)


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``students``, ``profile`` and ``distill`` to the ``condense`` parser."""
    students = commands.add_parser("students", help="list the student architectures")
    students.add_argument("--family", choices=["plain", "ghost", "binary", "adder"])
    students.add_argument("--json", action="store_true", help="machine-readable output")
    students.set_defaults(run=_cmd_students)

    prof = commands.add_parser("profile", help="build a student, export and verify it in ONNX Runtime, profile it")
    prof.add_argument("student", help="architecture or family name (see 'condense students')")
    prof.add_argument("--num-classes", type=int, default=10)
    prof.add_argument("--input-shape", type=parse_input_shape, default=(3, 32, 32), metavar="C,H,W")
    prof.add_argument("--width", type=float, help="width multiplier (default 1.0)")
    prof.add_argument("--budget-ratio", type=float, help="size the student to this fraction of --reference")
    prof.add_argument("--budget-metric", choices=["macs", "params"], default="macs")
    prof.add_argument("--reference", default="resnet56", help="reference architecture for --budget-ratio")
    prof.add_argument("--onnx", help="also write the verified ONNX file here")
    prof.add_argument("--json", action="store_true", help="machine-readable output")
    prof.set_defaults(run=_cmd_profile)

    dist = commands.add_parser(
        "distill", help="distil a teacher into a student on images you have (robust KD), export it to ONNX"
    )
    dist.add_argument("--teacher", required=True, help="TorchScript (.pt), torch.export (.pt2) or ONNX file")
    dist.add_argument("--train", required=True, help=".npz with 'x' (images) and optional 'y' (labels, -1 unknown)")
    dist.add_argument("--val", help="held-out labelled .npz to pick the best epoch and report accuracy on")
    dist.add_argument("--student", default="ghost", help="family or architecture (see 'condense students')")
    dist.add_argument("--budget-ratio", type=float, default=0.25, help="student MACs as a fraction of the teacher's")
    dist.add_argument("--width", type=float, help="width multiplier instead of --budget-ratio")
    dist.add_argument(
        "--input-shape", type=parse_input_shape, metavar="C,H,W", help="the teacher's input, if not in it"
    )
    dist.add_argument("--epochs", type=int, help="schedule length (default: the family's, see docs)")
    dist.add_argument("--batch-size", type=int)
    dist.add_argument("--seed", type=int)
    dist.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop and keep the best student by then",
    )
    dist.add_argument("--config", help="JSON file of DistillConfig fields (command-line options win)")
    dist.add_argument("--checkpoint-dir", help="resume from / checkpoint to this folder")
    dist.add_argument("--out", help="write the verified ONNX student here")
    dist.add_argument("--quiet", action="store_true", help="no progress bar")
    dist.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    dist.set_defaults(run=_cmd_distill)
