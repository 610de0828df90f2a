"""The markdown of the PU compression table (:mod:`bench.bench_table`): the table per family and row, the seed
summary with the default selection's comparisons, the goals, and the block of docs/results.md it replaces."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.bench_distill import (
    FAMILIES,
    RESULTS_MD,
)
from bench.bench_table import ALL_ROWS, GHOST_GAP_GOAL, PAPER_CIFAR10, PU_ROWS, ROW_DATA, ROW_LABELS


def _points(a: float, b: float) -> float:
    return (a - b) * 100


def goal_lines(results: dict[str, Any]) -> list[str]:
    """The table's goal, checked: PU-s1 within 1.0 point of KD full data (ghost), and above random pool (the same
    number of pool items) and positives only for every family; PU-s2 against the half random row."""
    runs = results["runs"]
    lines = []
    ghost = runs.get("ghost/pu_s1"), runs.get("ghost/full")
    if all(ghost):
        gap = _points(ghost[1]["test_accuracy"], ghost[0]["test_accuracy"])
        verdict = "met" if gap <= GHOST_GAP_GOAL else "missed"
        where = f"{gap:.2f} points below" if gap >= 0 else f"{-gap:.2f} points above"
        lines.append(
            f"- Ghost PU-s1 {ghost[0]['test_accuracy']:.2%} against KD full data {ghost[1]['test_accuracy']:.2%}: "
            f"{where} (goal: at most {GHOST_GAP_GOAL:g} below; **{verdict}**)."
        )
    for family in FAMILIES:
        s1, rnd, pos = (runs.get(f"{family}/{row}") for row in ("pu_s1", "random_full", "positives"))
        if not (s1 and rnd and pos):
            continue
        above_random = _points(s1["test_accuracy"], rnd["test_accuracy"])
        above_positives = _points(s1["test_accuracy"], pos["test_accuracy"])
        s2, half = runs.get(f"{family}/pu_s2"), runs.get(f"{family}/random")
        same_size = (
            f"; PU-s2 against the half random row: {_points(s2['test_accuracy'], half['test_accuracy']):+.2f}"
            if s2 and half
            else ""
        )
        lines.append(
            f"- {family}: PU-s1 {above_random:+.2f} points against random pool (same size), {above_positives:+.2f} "
            f"against positives only{same_size}."
        )
    return lines


def _holdout_sentence(mining: dict[str, Any]) -> str:
    """The miner's held-out recall beside what it estimates: the recall of the whole selection, the part held back
    for evaluation included (the table's recall counts the training part only)."""
    text = f"held-out recall {mining['holdout_recall']:.1%}"
    members = mining.get("strategies", {}).get("pu", {})
    interval = members.get("holdout_recall_interval")
    if interval:
        text += f" (95 % interval {interval[0]:.0%}-{interval[1]:.0%})"
    if members.get("selection_recall") is not None:
        text += (
            f" against a true {members['selection_recall']:.1%} for the selection with the part held back for "
            "evaluation"
        )
    return text


def seed_summary(results: dict[str, Any]) -> list[str]:
    """Per family and row: the test accuracy of every seed, their mean and standard deviation, and the
    comparisons (default selection against same-size random and DFND) with their sign per seed."""
    runs = results["runs"]
    lines = [
        f"Seeds (DistillConfig seed 0..{results.get('seeds', 1) - 1}; regime {results.get('regime', 'on-topic')}):",
        "",
        "| student | row | images | test acc. per seed | mean | sd |",
        "|---|---|---:|---|---:|---:|",
    ]
    means: dict[str, list[float]] = {}
    for family in FAMILIES:
        for row in ALL_ROWS:
            accuracies = [
                run["test_accuracy"]
                for key, run in sorted(runs.items())
                if key == f"{family}/{row}" or key.startswith(f"{family}/{row}@seed")
            ]
            if not accuracies:
                continue
            means[f"{family}/{row}"] = accuracies
            spread = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else float("nan")
            images = runs[f"{family}/{row}"]["transfer_size"] if f"{family}/{row}" in runs else 0
            lines.append(
                f"| {family} | {ROW_LABELS[row]} | {images:,} | {', '.join(f'{a:.2%}' for a in accuracies)} | "
                f"{np.mean(accuracies):.2%} | {spread * 100:.2f} |"
            )
    lines.append("")
    for family in FAMILIES:
        default = means.get(f"{family}/default")
        for other in ("random_default", "dfnd", "pu_s1"):
            against = means.get(f"{family}/{other}")
            if default is None or against is None or len(default) != len(against):
                continue
            gaps = [100 * (a - b) for a, b in zip(default, against, strict=True)]
            shown = "shown" if all(g > 0 for g in gaps) or all(g < 0 for g in gaps) else "not shown (sign flips)"
            lines.append(
                f"- {family}: default selection against {ROW_LABELS[other]}: {np.mean(gaps):+.2f} points "
                f"(per seed {', '.join(f'{g:+.2f}' for g in gaps)}; {shown})"
            )
    lines.append("")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    teacher = results["teacher"]
    machine = results["machine"]
    runs = results["runs"]
    mining = results["mining"]
    figures = mining["figures"]
    reused = sorted({run["reused_from"] for run in runs.values() if "reused_from" in run})
    resumed = sum(1 for run in runs.values() if run.get("resumed"))
    wall = f"{results['wall_s'] / 60:.1f} min wall"
    if resumed:
        wall += f" (resumed with `--resume`: {resumed} of the runs were made by an earlier invocation)"
    lines = [
        f"Command: `{results['command']}` -- {wall} on {machine['cores']} threads of a "
        f"{machine['cpu']} ({machine['device']}), torch {machine['torch']}, {machine['date']}; the runs made here "
        f"took {results['run_seconds_sum'] / 60:.1f} min of training ({results['run_total_sum'] / 60:.1f} min with "
        f"student evaluation). Raw figures: `{results['raw_path']}`.",
        "",
        f"Mining (once, shared by all families; default `MiningConfig`, estimated prior "
        f"{mining['prior_used']:.3f} against a true {figures['true_prior_candidates']:.3f} among the candidates, "
        f"{mining['key']['mining_config']['num_threads']} threads, {mining['wall_s']:.0f} s"
        f"{', cached from an earlier run' if mining.get('cached') else ''}): {figures['candidates']:,} candidates "
        f"(recall {figures['candidate_recall']:.1%}), {figures['selected']:,} selected, precision "
        f"{figures['precision']:.1%}, recall {figures['recall']:.1%} of the {figures['true_positives_in_pool']:,} "
        f"task images in the pool; {figures['lookalike_selected']:,} look-alike Fashion-MNIST images selected; "
        f"{_holdout_sentence(mining)}.",
        "",
        "| student | row | transfer data | images | epochs | test acc. | vs KD full | params | MACs | mults | "
        "precision | recall |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| teacher ({teacher.get('label', 'ResNet-20 x2')}) | teacher | all 30,000 labelled | 30,000 | 4 | "
        f"{teacher['test_accuracy']:.2%} | | "
        f"{teacher['parameters']:,} | {teacher['macs'] / 1e6:.1f}M | {teacher['multiplications'] / 1e6:.1f}M | | |",
    ]
    for family in FAMILIES:
        full = runs.get(f"{family}/full")
        for row in ("full", "positives", *PU_ROWS):
            run = runs.get(f"{family}/{row}")
            if run is None:
                continue
            data = ROW_DATA[row].format(pool=run.get("pool_items", 0))
            if "reused_from" in run:
                data += " (reused\\*)"
            versus = ""
            if full is not None and row != "full":
                versus = f"{_points(run['test_accuracy'], full['test_accuracy']):+.2f}"
            selection = run.get("selection")
            precision = "" if selection is None else f"{selection['precision']:.1%}"
            recall = "" if selection is None else f"{selection['recall']:.1%}"
            lines.append(
                f"| {family} | {ROW_LABELS[row]} | {data} | {run['transfer_size']:,} | {run['epochs']} | "
                f"{run['test_accuracy']:.2%} | {versus} | {run['parameters']:,} | {run['macs'] / 1e6:.1f}M | "
                f"{run['multiplications'] / 1e6:.2f}M | {precision} | {recall} |"
            )
    lines.append("")
    lines += seed_summary(results)
    if reused:
        lines.append(
            f"\\* Reused from {', '.join(f'`{path}`' for path in reused)} (`python -m bench.bench_distill --mode "
            f"{results['mode']}`: same teacher, same epochs, same configs), not re-run here."
        )
        lines.append("")
    lines += [
        "Precision / recall: share of the set's pool items that are task images, and share of the pool's "
        f"{figures['true_positives_in_pool']:,} task images in the set (for the random rows: the pool's base rate).",
        "",
        "The paper's CIFAR-10 figures (ResNet-34 teacher, ResNet-18 students, 2 % labelled data, ImageNet pool), "
        "for the shape: " + ", ".join(f"{ROW_LABELS[row]} {value:.2f}%" for row, value in PAPER_CIFAR10.items()) + ".",
    ]
    goals = goal_lines(results)
    if goals:
        lines += ["", "Goal:", "", *goals]
    return "\n".join(lines)


SECTION_INTRO = """## PU compression table

The PU compression paper's CIFAR-10 table on the benchmark task, one student per family
(`python -m bench.bench_table`; see its docstring for every choice). Rows: teacher; KD on the 30,000 labelled
training images; the 300 positives alone; *random pool*: the positives plus `S` pool items drawn at random, as
many as PU selects; *PU-s1*: the positives plus all `S` items PU mining selects; *PU-s2*: the positives plus the
`S/2` best-scoring PU selections, and *random pool, half*: the positives plus the first `S/2` random items, the
same size as PU-s2. (A PU-s2 "capped at the random row's count" would change nothing with the random
row at `S`; halving both makes PU-s2 a real second point.) Every PU-style run uses its family's default
`DistillConfig` and the same epochs as the family's KD-full-data run; the best epoch is chosen by agreement with the
teacher on 2,048 images of the run's own transfer set; accuracy is on the 5,000 test images. Mining runs once and is
shared by all families; an item counts as a task image iff its pool name starts with `fmnist_task:`.

### Quick mode
"""


def write_markdown_section(mode: str, body: str) -> None:
    """``mode`` may carry a regime suffix (``quick_wild``): each regime has its own block."""
    begin, end = f"<!-- table:{mode}:begin -->", f"<!-- table:{mode}:end -->"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Results on the benchmark task\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        heading = "" if "## PU compression table" in text else "\n\n" + SECTION_INTRO
        if mode != "quick":
            heading += f"\n### {mode.capitalize()} mode\n"
        text = text.rstrip("\n") + f"{heading}\n{block}\n"
    RESULTS_MD.write_text(text)
