"""Which student a job distils, and how it was chosen: the family, its size, and a record of why for the report.

:func:`choose_student` turns a job's options into an untrained student and a ``sizing`` dict:

- a **MAC budget** (``budget_ratio`` of the teacher's MACs): the widest student of the family within it
  (:func:`compression.create_student`); this is the default for ``ghost``, ``binary``, ``adder`` and ``slim``;
- a **latency budget** (``latency_ratio`` of the teacher's ONNX Runtime latency, or ``latency_ms`` per batch),
  measured on this machine while the width (and for ``slim`` the depth and stem stride) is searched
  (:func:`compression.students.latency_sizing.size_by_latency`); ``auto`` fits both ``slim`` and ``ghost`` and keeps
  the one with the best expected accuracy (:func:`~compression.students.latency_sizing.auto_student`), with the
  default latency ratio when no budget is given; the library's sentence saying why is the report's ``reason``.
  ``auto`` is the default student: on the benchmark it is 2.5-2.9x faster than each teacher in ONNX Runtime and
  as accurate as the quarter-MAC Ghost student (docs/benchmarks.md, docs/results.md). When no student reaches the
  default budget (a teacher already tiny), the smallest slim student is taken and the reason says so; a budget the
  user gave is never relaxed;
- the **low-bit QNN families** ``qnn4`` / ``qnn2`` (LSQ quantization-aware training, widened under a bit-ops budget
  as in Widening and Squeezing, arXiv:2002.00555): the bit-ops of an int8 student of the MAC budget, i.e.
  ``budget_ratio / 16`` of the float teacher's bit-ops (float layers count 32 x 32 bits per MAC);
- the **binary channel search** (``search``; Shen et al., arXiv:1909.07378): per-stage widths of the binary ResNet
  chosen by an evolutionary search with a short distillation proxy on the job's transfer set, cached per teacher
  shape in ``cache_dir``.

:func:`distill_family` names the family whose distillation defaults apply (``auto`` resolved to what it chose).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from service.options import JobOptions
from storage.files import atomic_write_text

__all__ = ["QNN_BIT_OPS_DIVISOR", "choose_student", "distill_family", "latency_budget"]

QNN_BIT_OPS_DIVISOR = 16
"""A QNN student gets ``budget_ratio / 16`` of the teacher's bit-ops: an int8 (8 x 8-bit) student's cost at the
MAC budget, against the float teacher's 32 x 32 bits per MAC."""
_AUTO_FAMILIES = ("slim", "ghost")
_SEARCH_IMAGES = 3000  # the proxy's 2,000 training and 1,000 scoring images, a seeded mix of the transfer set
_CHOICE_FILE = "student_choice.json"


def latency_budget(options: JobOptions) -> Any | None:
    """The job's :class:`~compression.students.latency_sizing.LatencyBudget`, or None for a MAC-sized student.

    ``auto`` without a budget uses the library's default ratio (:data:`DEFAULT_LATENCY_RATIO`) at batches 1 and 32.
    """
    from compression.students.latency_sizing import DEFAULT_LATENCY_RATIO, LatencyBudget

    if options.latency_ratio is None and options.latency_ms is None:
        if options.student != "auto":
            return None
        return LatencyBudget(ratio=DEFAULT_LATENCY_RATIO)
    if options.latency_batch is not None:
        batches: tuple[int, ...] = (options.latency_batch,)
    else:
        batches = (1, 32) if options.latency_ratio is not None else (1,)
    return LatencyBudget(ratio=options.latency_ratio, ms=options.latency_ms, batch_sizes=batches)


def choose_student(
    teacher: Any,
    options: JobOptions,
    teacher_macs: int,
    transfer_images: torch.Tensor,
    work: Path,
    cache_dir: Path,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The untrained student for ``options`` and the ``sizing`` record (see the module docstring)."""
    from compression import Budget, create_student
    from compression.op_counts import float_bit_ops

    shape, classes = tuple(teacher.input_shape), teacher.num_classes
    saved = _saved_choice(work, options)
    if saved is not None:  # a resumed job keeps the student its checkpoints belong to
        return _rebuild(saved, classes, shape), saved
    latency = latency_budget(options)
    if latency is not None:
        student, record = _latency_sized(teacher, options, latency, work, cache_dir)
        return student, _save_choice(work, options, record)
    if options.student in ("qnn4", "qnn2"):
        teacher_bit_ops = float_bit_ops(teacher_macs)
        ratio = options.budget_ratio / QNN_BIT_OPS_DIVISOR
        student = create_student(
            options.student, num_classes=classes, input_shape=shape, budget=Budget(teacher_bit_ops, ratio, "bitops")
        )
        return student, {
            "family": options.student,
            "budget": "bitops",
            "reason": f"{options.student}: the widest student within {ratio:.4g} of the teacher's "
            f"{teacher_bit_ops:,} bit-ops (an int8 student's cost at budget_ratio {options.budget_ratio:g})",
        }
    mac_budget = Budget(teacher_macs, options.budget_ratio, "macs")
    if options.search:
        student, record = _searched_binary(teacher, options, mac_budget, transfer_images, cache_dir)
        return student, _save_choice(work, options, record)
    student = create_student(options.student, num_classes=classes, input_shape=shape, budget=mac_budget)
    return student, {
        "family": options.student,
        "budget": "macs",
        "reason": f"{options.student}: the widest student within {options.budget_ratio:g} of the teacher's "
        f"{teacher_macs:,} MACs",
    }


def distill_family(options: JobOptions, sizing: dict[str, Any]) -> str:
    """The family whose :func:`compression.distill.default_config` applies (the sized student's)."""
    return str(sizing.get("family") or options.student)


def _fingerprint(options: JobOptions) -> str:
    return json.dumps(options.to_dict(), sort_keys=True)


def _saved_choice(work: Path, options: JobOptions) -> dict[str, Any] | None:
    try:
        saved = json.loads((work / _CHOICE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("options") != _fingerprint(options):
        return None
    record = saved.get("record")
    return record if isinstance(record, dict) and isinstance(record.get("build"), dict) else None


def _save_choice(work: Path, options: JobOptions, record: dict[str, Any]) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"options": _fingerprint(options), "record": record}, default=str)
    atomic_write_text(work / _CHOICE_FILE, text)
    return json.loads(text)["record"]  # as a resumed job reads it back


def _rebuild(record: dict[str, Any], classes: int, shape: tuple[int, ...]) -> torch.nn.Module:
    from compression.students import resolve_student

    build = record["build"]
    kwargs = dict(build.get("kwargs") or {})
    if "stage_widths" in kwargs:
        kwargs["stage_widths"] = tuple(kwargs["stage_widths"])
    return resolve_student(str(build["name"])).constructor(num_classes=classes, input_shape=shape, **kwargs)


def _teacher_onnx(teacher: Any, work: Path) -> Any:
    """What the latency search times the student against: the teacher's ONNX file (exported once per job)."""
    from pu_mining.features import torch_to_onnx

    if teacher.module is None:
        return Path(teacher.path)
    path = work / "teacher.onnx"
    if not path.exists():
        path.write_bytes(torch_to_onnx(teacher.module, teacher.input_shape).SerializeToString())
    return path


def _latency_sized(
    teacher: Any, options: JobOptions, budget: Any, work: Path, cache_dir: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from compression.students.latency_sizing import auto_student, size_by_latency

    shape, classes = tuple(teacher.input_shape), teacher.num_classes
    teacher_file = _teacher_onnx(teacher, work)
    cache = cache_dir / "latency.json"
    if options.student == "auto":
        fit = auto_student(teacher_file, shape, classes, budget, families=_AUTO_FAMILIES, cache_path=cache)
    else:
        fit = size_by_latency(options.student, teacher_file, shape, classes, budget, cache_path=cache)
    if fit.candidate is None and options.student == "auto" and not _latency_given(options):
        # The default budget, not the user's: a teacher too small to be beaten by 2.5x still gets the fastest
        # student there is, and the report says it missed the default budget.
        from compression.students.latency_sizing import candidates_for

        fit.candidate = candidates_for("slim", classes, shape)[0]
        fit.reason = (
            f"no student reaches the default budget ({budget.describe()}) for this small teacher; the smallest slim "
            f"student was taken ({fit.candidate.label}); its measured latency is in the report. {fit.reason}"
        )
    if fit.candidate is None:
        raise ValueError(f"no student fits the latency budget ({budget.describe()}): {fit.reason}")
    from compression.students import resolve_student

    family = resolve_student(fit.candidate.name).family
    build = {"name": fit.candidate.name, "kwargs": dict(fit.candidate.kwargs)}
    fitted = fit.as_dict()
    record = {"family": family, "chosen_by": options.student, "build": build, **fitted}
    record.update(budget="latency", latency_budget=fitted["budget"])
    return fit.build(classes, shape), record


def _latency_given(options: JobOptions) -> bool:
    """Whether the user set a latency budget (rather than ``auto``'s default one)."""
    return options.latency_ratio is not None or options.latency_ms is not None


def _searched_binary(
    teacher: Any, options: JobOptions, mac_budget: Any, transfer_images: torch.Tensor, cache_dir: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from compression.search import create_searched_student, search_binary_widths

    if len(transfer_images) < 2:
        raise ValueError("the binary channel search needs transfer images (positives or mined items)")
    order = torch.randperm(len(transfer_images), generator=torch.Generator().manual_seed(options.seed))
    result = search_binary_widths(
        teacher,
        transfer_images[order[:_SEARCH_IMAGES]],
        teacher.num_classes,
        mac_budget,
        seed=options.seed,
        cache_dir=cache_dir / "binary_search",
    )
    student = create_searched_student(result, teacher.num_classes, tuple(teacher.input_shape))
    cost, default = result.cost, result.default_cost
    reason = (
        f"binary channel search: stage widths {list(result.stage_widths)} (default {list(result.default_widths)}), "
        f"proxy agreement {result.proxy_score:.3f} (default {result.default_score:.3f}); ops {cost.ops:,} "
        f"(default {default.ops:,}), weights {cost.bytes:,} bytes (default {default.bytes:,}); "
        f"{result.candidates_trained} candidates trained in {result.search_s:.0f} s"
        + (" (cached result)" if result.cached else "")
    )
    search = result.to_dict()
    search.pop("history", None)
    build = {"name": result.architecture, "kwargs": {"stage_widths": list(result.stage_widths)}}
    return student, {"family": "binary", "budget": "macs", "reason": reason, "search": search, "build": build}
