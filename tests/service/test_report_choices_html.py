"""The report's "How the student was chosen" section renders every part it finds, escapes what users named, and
stays out of reports without those parts."""

from __future__ import annotations

from service.pipeline.report_html import render_report_html

REPORT = {
    "job": {"student": "auto", "options": {"selection": "pu-half"}},
    "mining": {
        "selection": "pu-half",
        "labels_used": True,
        "selected": 30,
        "evaluation": 6,
        "class_histogram": {"<b>cat</b>": 20, "dog": 10},
        "evaluation_classes": {"<b>cat</b>": 4, "dog": 2},
    },
    "student": {
        "sizing": {
            "family": "slim",
            "budget": "latency",
            "chosen_by": "auto",
            "reason": "auto chose slim (most effective MACs): slim: slim_resnet(width=1.0); ghost: none fits",
            "measured": [
                {"label": "slim_resnet(width=1.0)", "macs": 1000, "b1": {"ms": 0.2, "ratio": 0.4}, "fits": True}
            ],
        },
        "int8": {"kept": "float", "file": None, "error": "unsupported <op>", "summary": "failed"},
        "latency_side_by_side": {
            "machine": "x86_64, 2 cores (Test CPU)",
            "threads": 1,
            "rows": {
                "teacher": {"1": {"min_ms": 1.0, "median_ms": 1.1, "speedup": 1.0}},
                "student": {"1": {"min_ms": 0.4, "median_ms": 0.5, "speedup": 2.5}},
            },
        },
    },
}


def test_choices_section_shows_selection_sizing_latency_and_int8() -> None:
    html = render_report_html(REPORT)
    assert 'id="choices"' in html and "How the student was chosen" in html
    assert "pu-half" in html and "&lt;b&gt;cat&lt;/b&gt;" in html and "<b>cat</b>" not in html
    assert "auto chose slim" in html and "slim_resnet(width=1.0)" in html and "0.40x teacher" in html
    assert "x86_64, 2 cores (Test CPU)" in html and "2.50x" in html
    assert "float file kept" in html and "unsupported &lt;op&gt;" in html


def test_reports_without_those_parts_have_no_choices_section() -> None:
    assert 'id="choices"' not in render_report_html({"job": {"student": "ghost"}, "student": {"macs": 5}})
