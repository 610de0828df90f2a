"""Cancel during the load stage: the pipeline checks between loading the teacher (whose TorchScript code runs in the
worker), loading the positives and opening the pool, so a cancel stops the stage at its next step."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.options import JobCancelled, JobOptions
from service.pipeline.stages import load_inputs
from storage import LocalBlobStore


def test_cancel_during_the_load_stage_stops_before_the_positives(tmp_path: Path, service_inputs, monkeypatch) -> None:
    import pu_mining.positives as positives_module

    steps: list[str] = []
    original = positives_module.load_positives

    def watched(*args, **kwargs):
        steps.append("positives")
        return original(*args, **kwargs)

    monkeypatch.setattr(positives_module, "load_positives", watched)
    calls = 0

    def cancel_after_the_teacher() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the user cancelled while the teacher was loading
            raise JobCancelled("stopped during load")

    options = JobOptions.from_dict({"input_shape": [1, 28, 28]})
    with pytest.raises(JobCancelled):
        load_inputs(
            service_inputs["teacher"],
            service_inputs["positives"],
            options,
            LocalBlobStore(tmp_path / "blobs"),
            tmp_path / "cache",
            check=cancel_after_the_teacher,
        )
    assert calls == 2 and steps == []  # the teacher was loaded, the positives never
