"""The ``condense`` CLI: one-line errors with a non-zero exit, and a working profile command."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from service.cli import main


def test_students_lists_the_registry(capsys) -> None:
    assert main(["students", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert {"ghost_resnet56", "binary_resnet20", "adder_resnet20", "vgg16", "ghostnet"} <= names
    assert main(["students", "--family", "adder"]) == 0
    assert all(line.startswith("adder_") for line in capsys.readouterr().out.splitlines())


def test_profile_writes_a_verified_onnx_file(tmp_path, capsys) -> None:
    target = tmp_path / "student.onnx"
    argv = ["profile", "adder", "--num-classes", "5", "--input-shape", "1,28,28", "--width", "0.25"]
    assert main([*argv, "--onnx", str(target), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout holds only the JSON (exporter chatter is kept out)
    assert summary["multiplications"] < summary["additions"]  # adder layers multiply nothing
    assert summary["verification"]["passed"] and summary["verification"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "resnet99"], "unknown student 'resnet99'"),
        (["profile", "ghost", "--width", "-2"], "width must be a positive number"),
        (["profile", "ghost", "--width", "1", "--budget-ratio", "0.5"], "either width or budget"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
