"""``condense submit --wait --junit-xml PATH``: the job and its quality gate as a JUnit XML report for CI dashboards.

One ``<testsuite name="condense">`` with two test cases: ``job`` (an error when the job did not succeed) and
``quality gate`` (a failure with the gate's reason when the student broke ``--max-accuracy-drop``, skipped when no
gate was asked for). The job's figures are ``<properties>`` of the suite, so a dashboard can show them.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from storage.files import atomic_write

__all__ = ["junit_xml", "write_junit_xml"]

_FIGURES = ("teacher_accuracy", "student_accuracy", "accuracy_drop_points", "student_parameters", "student_macs")


def junit_xml(job: dict[str, Any], gate_passed: bool | None, gate_reason: str, elapsed_s: float) -> bytes:
    """The JUnit XML document of a finished job (see the module docstring)."""
    succeeded = job.get("status") == "succeeded"
    suite = ET.Element(
        "testsuite",
        name="condense",
        tests="2",
        failures="1" if gate_passed is False else "0",
        errors="0" if succeeded else "1",
        skipped="1" if gate_passed is None or not succeeded else "0",
        time=f"{elapsed_s:.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="job_id", value=str(job.get("id", "")))
    for key in _FIGURES:
        value = (job.get("metrics") or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            ET.SubElement(properties, "property", name=key, value=f"{value:.6g}")
    case = ET.SubElement(suite, "testcase", classname="condense", name="job", time=f"{elapsed_s:.3f}")
    if not succeeded:
        error = ET.SubElement(case, "error", message=f"job {job.get('status')}: {job.get('error') or ''}".strip())
        error.text = str(job.get("error") or job.get("status"))
    gate = ET.SubElement(suite, "testcase", classname="condense", name="quality gate", time="0")
    if not succeeded:
        ET.SubElement(gate, "skipped", message="the job did not succeed")
    elif gate_passed is None:
        ET.SubElement(gate, "skipped", message="no quality gate (--max-accuracy-drop) was asked for")
    elif gate_passed is False:
        failure = ET.SubElement(gate, "failure", message=gate_reason)
        failure.text = gate_reason
    else:
        ET.SubElement(gate, "system-out").text = gate_reason
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit_xml(
    path: str | os.PathLike[str], job: dict[str, Any], gate_passed: bool | None, gate_reason: str, elapsed_s: float
) -> Path:
    """Write :func:`junit_xml` to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(junit_xml(job, gate_passed, gate_reason, elapsed_s))
    return path
