"""JobOptions: defaults, normalisation, JSON round trip, and every problem listed at once."""

from __future__ import annotations

import pytest

from service.options import JobOptions, OptionsError


def test_defaults_and_round_trip() -> None:
    options = JobOptions.from_dict({})
    assert options == JobOptions() == JobOptions.from_dict(None)
    assert (options.student, options.budget_ratio, options.pool) == ("auto", 0.25, "demo")
    assert options.holdout_fraction == 0.2 and options.input_shape is None
    full = JobOptions.from_dict(
        {
            "student": "adder",
            "budget_ratio": 1,
            "time_budget_min": 5,
            "epochs": 3.0,
            "seed": 7,
            "pool": "animals",
            "input_shape": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "max_accuracy_drop": 2,
            "holdout_fraction": 0,
        }
    )
    assert full.input_shape == (3, 32, 32) and full.epochs == 3 and isinstance(full.epochs, int)
    assert JobOptions.from_dict(full.to_dict()) == full
    assert full.to_dict()["input_shape"] == [3, 32, 32]


def test_every_problem_is_listed_with_its_field() -> None:
    with pytest.raises(OptionsError) as caught:
        JobOptions.from_dict(
            {
                "student": "tiny",
                "budget_ratio": 0,
                "epochs": 0,
                "seed": -1,
                "input_shape": [2, 28, 28],
                "std": [1.0, 0.0, 1.0],
                "max_accuracy_drop": 101,
                "holdout_fraction": 1.0,
                "epoch": 3,
            }
        )
    fields = {problem["field"] for problem in caught.value.problems}
    assert fields == {
        "student", "budget_ratio", "epochs", "seed", "input_shape", "std", "max_accuracy_drop",
        "holdout_fraction", "epoch",
    }  # fmt: skip
    assert isinstance(caught.value, ValueError)
    assert "unknown option" in next(p["reason"] for p in caught.value.problems if p["field"] == "epoch")


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"epochs": True}, "epochs", "integer"),
        ({"budget_ratio": "0.5"}, "budget_ratio", "finite number"),
        ({"budget_ratio": float("nan")}, "budget_ratio", "finite number"),
        ({"mean": [0.5, 0.5, 0.5], "input_shape": [1, 28, 28]}, "mean", "1 channel"),
        ({"mean": [0.5], "std": [0.2, 0.2, 0.2]}, "std", "mean has 1"),
        ({"pool": ""}, "pool", "pool name"),
        ({"time_budget_min": -1}, "time_budget_min", "> 0"),
    ],
)
def test_single_problems(data: dict, field: str, reason: str) -> None:
    with pytest.raises(OptionsError) as caught:
        JobOptions.from_dict(data)
    [problem] = caught.value.problems
    assert problem["field"] == field and reason in problem["reason"]


@pytest.mark.parametrize("drop", [-1, 100.5, 150])
def test_max_accuracy_drop_is_points_from_0_to_100(drop: float) -> None:
    assert JobOptions.from_dict({"max_accuracy_drop": 100}).max_accuracy_drop == 100.0
    with pytest.raises(OptionsError) as caught:
        JobOptions.from_dict({"max_accuracy_drop": drop})
    [problem] = caught.value.problems
    assert problem["field"] == "max_accuracy_drop" and "points" in problem["reason"]


def test_version_1_specs_held_the_drop_as_a_fraction() -> None:
    old = JobOptions.from_spec({"version": 1, "options": {"max_accuracy_drop": 0.02}})
    assert old.max_accuracy_drop == 2.0
    assert JobOptions.from_spec({"version": 2, "options": {"max_accuracy_drop": 2}}).max_accuracy_drop == 2.0


def test_not_an_object_and_direct_construction() -> None:
    with pytest.raises(OptionsError, match="must be a JSON object"):
        JobOptions.from_dict([1, 2])
    with pytest.raises(OptionsError, match="student"):
        JobOptions(student="resnet")


def test_the_selection_help_states_the_miners_floor() -> None:
    from pu_mining.selection import MIN_SELECTION, MIN_SELECTION_POOL_SHARE

    help_text = JobOptions.model_fields["selection"].description or ""
    assert f"{MIN_SELECTION:,} items" in help_text  # a copy: the API does not load torch
    assert MIN_SELECTION_POOL_SHARE == 1 / 8 and "an eighth of the pool" in help_text
