# ruff: noqa: F811  (the live server fixture is imported from test_client.py)
"""The CI recipes of ``examples/ci/`` run as written (the install step left out: the package is already here) against
a live ``condense serve``: submit, wait, the quality gate as the exit status and a JUnit XML file, the artefacts in
the folder the recipes keep, the summary on the run's summary page; plus the JUnit and Markdown writers alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from service.cli.ci_summary import summary_markdown
from service.cli.junit import junit_xml
from tests.service.test_client import REPO, server  # noqa: F401

RECIPES = REPO / "examples" / "ci"


def _condense_on_path(tmp_path: Path) -> str:
    """A ``condense`` command running this tree's CLI (what ``pip install condense`` puts on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "condense"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m service.cli "$@"\n')
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def _env(server: dict, service_inputs: dict, tmp_path: Path, variables: dict, max_drop: str) -> dict[str, str]:
    env = {**os.environ, **{k: str(v) for k, v in variables.items() if "${{" not in str(v)}}
    env.update(
        CONDENSE_SERVER=server["url"],
        CONDENSE_TOKEN=server["token"],
        TEACHER=str(service_inputs["teacher"]),
        POSITIVES=str(service_inputs["positives"]),
        INPUT_SHAPE="1,28,28",
        MAX_ACCURACY_DROP=max_drop,
        PATH=_condense_on_path(tmp_path),
        PYTHONPATH=str(REPO),
    )
    return env


def _gate_case(path: Path) -> ET.Element:
    suite = ET.parse(path).getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "condense"
    return next(case for case in suite.iter("testcase") if case.get("name") == "quality gate")


@pytest.mark.servers  # condense serve
def test_github_actions_recipe(server, service_inputs, tmp_path) -> None:
    recipe = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    job = recipe["jobs"]["compress"]
    steps = [step for step in job["steps"] if "run" in step and "pip install" not in step["run"]]
    assert [step["name"] for step in steps] == ["Compress and apply the quality gate"]
    kept = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact"))
    assert kept["if"] == "always()" and kept["with"]["path"] == "condense-out/"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = _env(server, service_inputs, tmp_path, job["env"], max_drop="5")
    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "step-summary.md")
    result = subprocess.run(
        ["bash", "-e", "-c", steps[0]["run"]], cwd=workspace, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    out = workspace / "condense-out"
    assert {"student.onnx", "report.json", "report.html", "quality-gate.xml", "result.json"} <= {
        path.name for path in out.iterdir()
    }
    case = _gate_case(out / "quality-gate.xml")
    assert case.find("failure") is None and case.find("skipped") is None
    summary = (tmp_path / "step-summary.md").read_text()
    assert re.search(r"### Condense job `[0-9a-f]{32}`: succeeded", summary) and "✅ passed" in summary


@pytest.mark.servers  # condense serve
def test_gitlab_recipe_fails_on_the_quality_gate(server, service_inputs, tmp_path) -> None:
    recipe = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())
    job = recipe["condense"]
    assert all("pip install" in line for line in job["before_script"])
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["paths"] == ["condense-out/"]
    assert job["artifacts"]["reports"]["junit"] == "condense-out/quality-gate.xml"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = _env(server, service_inputs, tmp_path, job["variables"], max_drop="1")  # teacher 92 %, student 90 %
    script = "\n".join(job["script"])
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=workspace, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 3, result.stderr  # the gate failed: the pipeline fails
    out = workspace / "condense-out"
    assert (out / "student.onnx").is_file() and (out / "report.html").is_file()  # kept for the artefacts anyway
    failure = _gate_case(out / "quality-gate.xml").find("failure")
    assert failure is not None and "allowed 1.00" in failure.get("message", "")
    assert "❌ FAILED" in result.stdout  # the summary, printed into the job's log


def test_junit_and_summary_writers() -> None:
    job = {"id": "j1", "status": "failed", "error": "the teacher could not be loaded", "metrics": {}}
    suite = ET.fromstring(junit_xml(job, None, "no quality gate", 12.5))
    assert suite.get("errors") == "1" and suite.find("testcase/error") is not None
    report = {
        "teacher": {"accuracy": 0.9, "parameters": 1000, "latency": {"1": {"median_ms": 1.0}}},
        "student": {"accuracy": 0.89, "parameters": 250, "latency": {"1": {"median_ms": 1.2}}},
    }
    text = summary_markdown({"id": "j2", "status": "succeeded"}, report, (True, "drop 1.00 points"))
    assert "| parameters | 1,000 | 250 | 4.0x smaller |" in text
    assert "⚠️ **1.2x slower**" in text and "-1.00 points" in text
