"""``condense compress``: one whole compression job on this machine (what a service worker runs for each job).

    condense compress --teacher FILE [--positives PATH] --pool NAME
                      [--student ghost|binary|adder|slim|qnn4|qnn2|auto] [--budget RATIO]
                      [--latency-ratio R | --latency-ms MS [--latency-batch N]] [--search]
                      [--selection default|pu|pu-half|random|dfnd] [--quantize int8 [--quantize-max-loss POINTS]]
                      [--time-budget MINUTES] [--epochs N] [--seed N] [--max-accuracy-drop POINTS] [--test PATH]
                      --out DIR

Without ``--positives`` the job runs in the no-labels mode: mining selects the teacher's most confident pool items
(DFND) and the student is distilled with DFND's noise adaptation; ``--class-names`` names the teacher's outputs.

Writes ``student.onnx``, ``report.json`` and ``report.html`` into DIR (see :mod:`service.pipeline`). Run again with
the same arguments after a kill or Ctrl-C, it resumes from what DIR/work holds. ``--test`` is an optional labelled
test set (the positives' format and classes); its figures are then the headline. Exit status (a CI pipeline can
gate on it; see the README, "The quality gate"): 0 done (and the gate passed, if asked for), 1 failed, 2 bad input,
3 the gate failed (the student's drop is over ``--max-accuracy-drop`` points), 4 the gate is undecided (too few
images to decide), 130 stopped.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.cli.option_flags import add_student_option_flags, student_option_values
from service.options import STUDENT_FAMILIES

if TYPE_CHECKING:
    from service.pipeline.report import Summary

__all__ = ["EXIT_GATE_FAILED", "EXIT_GATE_UNDECIDED", "add_compress_command", "gate_exit_status"]

EXIT_GATE_FAILED = 3
EXIT_GATE_UNDECIDED = 4


def gate_exit_status(outcome: str | None) -> int:
    """The exit status for a gate outcome: 0 passed or no gate, 3 failed, 4 undecided."""
    return {"failed": EXIT_GATE_FAILED, "undecided": EXIT_GATE_UNDECIDED}.get(outcome or "", 0)


def _format(summary: Summary, out: Path) -> str:
    from service.pipeline.figures import summary_lines

    lines = summary_lines(summary)
    lines += [
        f"{'student size':<20} {summary.student_parameters:,} parameters, {summary.student_macs:,} MACs "
        f"(teacher {summary.teacher_macs:,})",
        f"{'mined images':<20} {summary.mined:,} trained on, {summary.held_back:,} held back for evaluation",
        f"{'written':<20} {out / 'student.onnx'}, {out / 'report.json'}, {out / 'report.html'}",
    ]
    return "\n".join(lines)


def _cmd_compress(args: argparse.Namespace) -> int:
    from service.cli.job_progress import JobProgressBar
    from service.options import JobCancelled, JobOptions
    from service.pipeline import run_compression
    from service.pipeline.report import Summary
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
    test = None if args.test is None else Path(args.test)
    if test is not None and not test.exists():
        raise FileNotFoundError(f"no test set file or folder {test}")
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
            test_path=test,
        )
    except JobCancelled:
        print(f"condense compress: stopped; run the same command again to resume from {out / 'work'}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    typed = Summary.from_dict(summary)
    print(json.dumps(summary, indent=2) if args.json else _format(typed, out))
    return gate_exit_status(None if typed.gate is None else typed.gate.outcome)


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
    compress.add_argument(
        "--student",
        default="auto",
        choices=STUDENT_FAMILIES,
        help="student family (default auto: sized by measured latency)",
    )
    compress.add_argument("--budget", type=float, default=0.25, help="student MACs as a fraction of the teacher's")
    add_student_option_flags(compress)
    compress.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="wall-clock budget of the job",
    )
    compress.add_argument("--epochs", type=int, help="training epochs (default: the family's)")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--input-shape", type=_input_shape, metavar="C,H,W", help="the teacher's input, if not in it")
    compress.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="quality gate, 0-100 points: exit 3 if the student is further below the teacher, 4 if too few images "
        "to decide (the upper end of the drop's 95 %% interval must be within POINTS to pass)",
    )
    compress.add_argument(
        "--test",
        metavar="PATH",
        help="optional labelled test set (same format and classes as --positives), never trained on: the headline",
    )
    compress.add_argument("--out", required=True, help="folder for student.onnx, report.json, report.html")
    compress.add_argument("--quiet", action="store_true", help="no progress bar")
    compress.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    compress.set_defaults(run=_cmd_compress)
