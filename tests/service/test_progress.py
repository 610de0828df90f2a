"""The distillation progress bar (service/cli/progress.py): one redrawn line on a terminal, log lines elsewhere."""

from __future__ import annotations

import io

from compression.distill import DistillProgress
from service.cli.progress import ProgressBar, format_duration


def _event(stage: str = "train", step: int = 5, **changes) -> DistillProgress:
    fields = {
        "stage": stage, "epoch": 2, "epochs": 4, "step": step, "steps_per_epoch": 10, "loss": 0.1234,
        "samples_per_s": 812.0, "eta_s": 75.0, "val_accuracy": 0.9125, "val_agreement": 0.95, "elapsed_s": 3725.0,
    }  # fmt: skip
    return DistillProgress(**{**fields, **changes})


def test_render_shows_every_field() -> None:
    line = ProgressBar(io.StringIO(), width=10).render(_event())
    for part in ("train", "epoch 2/4", "[#####-----] 5/10", "loss 0.1234", "812 img/s", "val acc 91.25%"):
        assert part in line
    assert "elapsed 1:02:05" in line and "left 1:15" in line


def test_agreement_when_there_is_no_accuracy_and_done_fills_the_bar() -> None:
    line = ProgressBar(io.StringIO(), width=4).render(_event("done", step=0, val_accuracy=None))
    assert "val agree 95.00%" in line and "[####] 10/10" in line and "left" not in line


def test_terminal_redraws_one_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, tty=True)
    bar(_event(step=1))
    bar(_event(step=2))
    bar(_event("done"))
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")


def test_logs_print_on_stage_changes_and_at_an_interval() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, tty=False, log_interval_s=3600)
    for step in range(5):
        bar(_event(step=step))
    bar(_event("validate", step=0))
    bar(_event("done"))
    lines = stream.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["train", "validate", "done"]


def test_format_duration() -> None:
    assert format_duration(None) == "?" and format_duration(float("nan")) == "?"
    assert (format_duration(0), format_duration(59.6), format_duration(3600)) == ("0:00", "1:00", "1:00:00")
