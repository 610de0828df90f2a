"""``condense compress``: one whole compression job on this machine (what a service worker runs for each job).

    condense compress --teacher FILE [--positives PATH] --pool NAME
                      [--student ghost|binary|adder|slim|qnn4|qnn2|auto] [--budget RATIO]
                      [--latency-ratio R | --latency-ms MS [--latency-batch N]] [--search]
                      [--selection default|pu|pu-half|random|dfnd] [--quantize int8 [--quantize-max-loss POINTS]]
                      [--time-budget MINUTES] [--epochs N] [--seed N] [--max-accuracy-drop POINTS] --out DIR

Without ``--positives`` the job runs in the no-labels mode: mining selects the teacher's most confident pool items
(DFND) and the student is distilled with DFND's noise adaptation; ``--class-names`` names the teacher's outputs.

Writes ``student.onnx``, ``report.json`` and ``report.html`` into DIR (see :mod:`service.pipeline`). Run again with
the same arguments after a kill or Ctrl-C, it resumes from what DIR/work holds. Exit status: 0 done, 1 failed,
2 bad input, 3 the student broke ``--max-accuracy-drop`` (points of accuracy on the held-out positives), so a CI
pipeline can gate on it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from service.cli.option_flags import add_student_option_flags, student_option_values
from service.options import STUDENT_FAMILIES

__all__ = ["EXIT_GATE_FAILED", "add_compress_command"]

EXIT_GATE_FAILED = 3


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _format(summary: dict[str, Any], out: Path) -> str:
    gate = summary.get("gate")
    lines = [
        f"{'teacher accuracy':<20} {_percent(summary['teacher_accuracy'])} ({summary['evaluated_on']})",
        f"{'student accuracy':<20} {_percent(summary['student_accuracy'])}",
        f"{'agreement':<20} {_percent(summary['agreement'])}",
        f"{'student size':<20} {summary['student_parameters']:,} parameters, {summary['student_macs']:,} MACs "
        f"(teacher {summary['teacher_macs']:,})",
        f"{'mined images':<20} {summary['mined']:,}",
    ]
    if gate is not None:
        drop = "n/a" if gate["accuracy_drop"] is None else f"{gate['accuracy_drop']:.2f}"
        verdict = "passed" if gate["passed"] else "FAILED"
        lines.append(f"{'quality gate':<20} {verdict}: drop {drop} points (allowed {gate['max_accuracy_drop']:.2f})")
    lines.append(f"{'written':<20} {out / 'student.onnx'}, {out / 'report.json'}, {out / 'report.html'}")
    return "\n".join(lines)


def _cmd_compress(args: argparse.Namespace) -> int:
    from service.cli.job_progress import JobProgressBar
    from service.options import JobCancelled, JobOptions
    from service.pipeline import run_compression
    from service.settings import Settings

    raw: dict[str, Any] = {"student": args.student, "pool": args.pool, "budget_ratio": args.budget, "seed": args.seed}
    raw.update(student_option_values(args))
    if args.time_budget is not None:
        raw["time_budget_min"] = args.time_budget
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    if args.input_shape is not None:
        raw["input_shape"] = args.input_shape
    if args.max_accuracy_drop is not None:
        raw["max_accuracy_drop"] = args.max_accuracy_drop
    options = JobOptions.from_dict(raw)
    settings = Settings.from_env()
    blobs = settings.open_blobs()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = None if args.quiet else JobProgressBar()
    stop = {"count": 0}

    def on_interrupt(signum: int, frame: object) -> None:  # first Ctrl-C: stop at a checkpoint; second: now
        stop["count"] += 1
        if stop["count"] > 1:
            raise KeyboardInterrupt

    def on_progress(event: dict[str, Any]) -> None:
        if bar is not None:
            bar(event)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        summary = run_compression(
            Path(args.teacher),
            None if args.positives is None else Path(args.positives),
            options,
            out,
            blob_store=blobs,
            on_progress=on_progress,
            should_stop=lambda: stop["count"] > 0,
            pool_cache_dir=settings.data_dir / "cache",
        )
    except JobCancelled:
        print(f"condense compress: stopped; run the same command again to resume from {out / 'work'}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    print(json.dumps(summary, indent=2) if args.json else _format(summary, out))
    gate = summary.get("gate")
    return EXIT_GATE_FAILED if gate is not None and not gate["passed"] else 0


def _input_shape(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 1,28,28), got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 1,28,28), got {text!r}")
    return values


def add_compress_command(commands: argparse._SubParsersAction) -> None:
    """Add ``compress`` to the ``condense`` parser."""
    compress = commands.add_parser(
        "compress", help="mine a pool, distil, export and report: one whole job on this machine"
    )
    compress.add_argument("--teacher", required=True, help="TorchScript (.pt), torch.export (.pt2) or ONNX file")
    compress.add_argument(
        "--positives",
        help="folder with a subfolder per class, a zip/tar of one, or .npz with x, y; "
        "leave out for the no-labels mode (DFND selection)",
    )
    compress.add_argument("--pool", default="demo", help="unlabelled pool to mine (see 'condense pool list')")
    compress.add_argument("--student", default="ghost", choices=STUDENT_FAMILIES)
    compress.add_argument("--budget", type=float, default=0.25, help="student MACs as a fraction of the teacher's")
    add_student_option_flags(compress)
    compress.add_argument("--time-budget", type=float, metavar="MINUTES", help="wall-clock budget of the job")
    compress.add_argument("--epochs", type=int, help="training epochs (default: the family's)")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--input-shape", type=_input_shape, metavar="C,H,W", help="the teacher's input, if not in it")
    compress.add_argument(
        "--max-accuracy-drop", type=float, metavar="POINTS", help="exit 3 if the student is further below the teacher"
    )
    compress.add_argument("--out", required=True, help="folder for student.onnx, report.json, report.html")
    compress.add_argument("--quiet", action="store_true", help="no progress bar")
    compress.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    compress.set_defaults(run=_cmd_compress)
