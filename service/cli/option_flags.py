"""The job-option flags ``condense compress`` and ``condense submit`` share: mining selection, the no-labels class
names, latency budgets, int8 quantization and the binary channel search (each named like its
:class:`~service.options.JobOptions` field; :meth:`JobOptions.from_dict` checks the values)."""

from __future__ import annotations

import argparse
from typing import Any

from service.options import QUANTIZE_MODES, SELECTIONS

__all__ = ["add_student_option_flags", "student_option_values"]


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated class names (e.g. cat,dog), got {text!r}")
    return names


def add_student_option_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--selection``, ``--class-names``, ``--latency-ratio``, ``--latency-ms``, ``--latency-batch``,
    ``--quantize``, ``--quantize-max-loss`` and ``--search`` to ``parser``."""
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        help="which mined pool items train the student (default: PU score within per-class quotas; "
        "dfnd: the teacher's most confident items, no labels used)",
    )
    parser.add_argument(
        "--class-names", type=_names, metavar="A,B,...", help="the teacher's output names, without --positives"
    )
    latency = parser.add_mutually_exclusive_group()
    latency.add_argument(
        "--latency-ratio",
        type=float,
        metavar="R",
        help="student at most R x the teacher's ONNX Runtime latency, measured here (ghost, slim or auto)",
    )
    latency.add_argument("--latency-ms", type=float, metavar="MS", help="student at most MS milliseconds per batch")
    parser.add_argument(
        "--latency-batch", type=int, metavar="N", help="batch size of the latency budget (default: 1 and 32; 1 for ms)"
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZE_MODES, help="also write student.int8.onnx (static QDQ), verified and timed"
    )
    parser.add_argument(
        "--quantize-max-loss",
        type=float,
        metavar="POINTS",
        help="keep the float file when int8 loses more than POINTS percentage points (default 0.5)",
    )
    parser.add_argument(
        "--search", action="store_true", default=None, help="binary students: search the per-stage widths first"
    )


def student_option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The options the flags of :func:`add_student_option_flags` set (flags not given are left out)."""
    values = {
        "selection": args.selection,
        "class_names": args.class_names,
        "latency_ratio": args.latency_ratio,
        "latency_ms": args.latency_ms,
        "latency_batch": args.latency_batch,
        "quantize": args.quantize,
        "quantize_max_loss": args.quantize_max_loss,
        "search": args.search,
    }
    return {name: value for name, value in values.items() if value is not None}
