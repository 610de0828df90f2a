"""The typed report (service/pipeline/report.py): JSON round trip, the quality gate's rule, the held-back pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compression.metrics.intervals import disagreement_drop_bound, wilson_interval
from service.pipeline.evaluation import HELD_BACK_MIN, held_back_count, hold_back_pool_items
from service.pipeline.figures import summary_lines
from service.pipeline.report import REPORT_FORMAT, Report, Summary, quality_gate, read_report, write_report
from service.pipeline.stages import Mined
from tests.service.report_factory import make_evaluation, make_report


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    report = make_report()
    write_report(tmp_path, report, "<html></html>")
    again = read_report(tmp_path / "report.json")
    assert again == report  # every figure, interval and count, the gate and the summary
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["format"] == REPORT_FORMAT and data["evaluation"]["headline"] == "test"
    student = data["evaluation"]["test"]["student"]
    assert student["n"] == 2000 and student["successes"] == 1860 and student["rough"] is False
    assert data["evaluation"]["held_out"]["student"]["rough"] is True  # 60 images
    assert Summary.from_dict(data["summary"]) == report.summary
    assert data["gate"]["outcome"] == "passed" and data["gate"]["passed"] is True


def test_report_refuses_other_formats_and_incomplete_files() -> None:
    data = make_report().to_dict()
    with pytest.raises(ValueError, match="format"):
        Report.from_dict({**data, "format": 1})
    del data["evaluation"]
    with pytest.raises(ValueError, match="not a complete report"):
        Report.from_dict(data)


def test_gate_uses_the_test_set_when_given() -> None:
    evaluation = make_evaluation(test=(2000, 1900, 1860))  # drop 2 points, paired interval up to about 2.9
    gate = quality_gate(5.0, evaluation)
    assert gate is not None and gate.outcome == "passed" and gate.basis.startswith("test set, 2,000 images")
    assert gate.accuracy_drop == pytest.approx(2.0) and 2.0 < gate.accuracy_drop_high < 3.0
    assert quality_gate(1.0, evaluation).outcome == "failed"  # the estimate and the interval's lower end are over
    assert quality_gate(2.5, evaluation).outcome == "undecided"  # within, but the interval reaches past it
    assert quality_gate(None, evaluation) is None


def test_gate_without_a_test_set_needs_every_bound_within_the_limit() -> None:
    # 5,000 held-back pool images with 99 % agreement would pass a 2-point limit alone, but 60 held-out positives
    # cannot support it: the larger bound decides, so a pool bound biased low cannot pass the student by itself
    evaluation = make_evaluation(test=None, held_out=(60, 57, 56), pool=(5000, 4950))
    gate = quality_gate(2.0, evaluation)
    assert gate is not None and gate.outcome == "undecided" and "held-out positives, 60 images" in gate.basis
    assert gate.accuracy_drop == pytest.approx(100 / 60)  # the estimate: the held-out positives' drop
    assert "the larger 95 % upper bound" in gate.basis
    # with many held-out positives agreeing, both bounds are tight and the pool's (the larger here) decides
    tight = make_evaluation(test=None, held_out=(3000, 2900, 2900), pool=(5000, 4950))
    bound = wilson_interval(50, 5000, 0.95)[1] * 100
    passed = quality_gate(2.0, tight)
    assert passed is not None and passed.outcome == "passed"
    assert passed.accuracy_drop_high == pytest.approx(bound) and "5,000 held-back pool images" in passed.basis
    assert disagreement_drop_bound(4950, 5000, 0.95) == pytest.approx(bound / 100)
    # the pool alone (no labelled images held out) decides with its own bound
    alone = quality_gate(2.0, make_evaluation(test=None, held_out=None, pool=(5000, 4950)))
    assert alone is not None and alone.outcome == "passed" and alone.basis.endswith("95 % upper bound")


def test_a_tiny_evaluation_is_undecided_and_says_so() -> None:
    evaluation = make_evaluation(test=None, held_out=(10, 9, 9), pool=(40, 39))
    gate = quality_gate(5.0, evaluation)
    assert gate is not None and gate.outcome == "undecided" and not gate.passed
    assert gate.reason.startswith("too few images to decide")
    lines = "\n".join(summary_lines(make_report(evaluation, 5.0).summary))
    assert "UNDECIDED (too few images to decide)" in lines and "rough: fewer than 200 images" in lines
    assert "10 images" in lines and "40 images" in lines


def test_training_positives_never_decide_the_gate() -> None:
    evaluation = make_evaluation(test=None, pool=None)
    trained_on = type(evaluation)(evaluation.class_names, None, None, None)
    assert quality_gate(5.0, trained_on).outcome == "undecided"  # type: ignore[union-attr]
    from tests.service.report_factory import labelled

    flattering = type(evaluation)(evaluation.class_names, None, labelled("training_positives", 5000, 5000, 5000), None)
    assert quality_gate(5.0, flattering).outcome == "undecided"  # type: ignore[union-attr]


def _mined(count: int, classes: int = 4) -> Mined:
    ids = np.arange(10_000, 10_000 + count)
    teacher_classes = np.arange(count) % classes
    return Mined(ids, {"ids": ids, "teacher_classes": teacher_classes}, {}, 0)


def test_held_back_pool_items_are_a_stratified_share_never_trained_on() -> None:
    assert held_back_count(20_000) == 2_000 and held_back_count(5_000) == HELD_BACK_MIN
    assert held_back_count(300) == 100 and held_back_count(2) == 0
    mined = _mined(6000)
    kept, held = hold_back_pool_items(mined, seed=0)
    assert len(held) == 1000 and len(kept.ids) == 5000
    assert not set(held.tolist()) & set(kept.ids.tolist())  # disjoint
    assert sorted([*held.tolist(), *kept.ids.tolist()]) == mined.ids.tolist()
    per_class = np.bincount(mined.arrays["teacher_classes"][held - 10_000], minlength=4)
    assert per_class.tolist() == [250, 250, 250, 250]  # stratified by teacher class
    again_kept, again_held = hold_back_pool_items(mined, seed=0)
    assert np.array_equal(again_held, held) and np.array_equal(again_kept.ids, kept.ids)
    assert not np.array_equal(hold_back_pool_items(mined, seed=1)[1], held)


def test_the_miners_own_held_back_set_is_taken_as_it_is() -> None:
    mined = _mined(3000)
    evaluation_ids = np.arange(50_000, 51_200)  # the miner's: outside the transfer set already
    mined = Mined(mined.ids, {**mined.arrays, "evaluation_ids": evaluation_ids}, {}, 0, evaluation_ids)
    kept, held = hold_back_pool_items(mined, seed=0)
    assert np.array_equal(held, evaluation_ids) and np.array_equal(kept.ids, mined.ids)


def test_without_labelled_images_the_summary_says_accuracy_was_not_measured() -> None:
    evaluation = make_evaluation(test=None, pool=(3000, 2940))
    no_labels = type(evaluation)(evaluation.class_names, None, None, evaluation.pool)
    report = make_report(no_labels, 5.0)
    assert report.summary.evaluated_on is None and report.gate is not None
    lines = "\n".join(summary_lines(report.summary))
    assert "not measured: no labelled images" in lines and "n/a" not in lines
    assert "98.00 %" in lines and "3,000 images" in lines  # the agreement still carries its count and interval
    assert report.gate.outcome == "passed" and "held-back pool" in report.gate.basis
