"""The HTML report (service/pipeline/report_html.py): self-contained, well formed, escaped, robust to missing data."""

from __future__ import annotations

import base64
import copy
import re
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from service.pipeline.report_html import render_report_html
from tests.service.report_factory import make_evaluation, make_report

# Elements HTML never closes; every other element the renderer writes must be closed explicitly.
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

# A tiny valid PNG (1x1, grey).
_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg==")


def _full_report() -> dict[str, Any]:
    return make_report().to_dict()


class _Structure(HTMLParser):
    """Collects tags, attributes and text; records every closing tag that does not match the open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(document: str) -> _Structure:
    parser = _Structure()
    parser.feed(document)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], f"left open: {parser.stack}"
    names = [tag for tag, _ in parser.tags]
    for tag in ("html", "head", "body", "main"):
        assert names.count(tag) == 1, tag
    return parser


def _svgs(document: str) -> list[ET.Element]:
    return [ET.fromstring(fragment) for fragment in re.findall(r"<svg\b.*?</svg>", document, flags=re.DOTALL)]


def _assert_self_contained(document: str, parser: _Structure) -> None:
    assert "<script" not in document.lower()
    assert "@import" not in document and "url(" not in document
    for tag, attrs in parser.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), f"<{tag} {name}={value[:60]!r}>"
                assert "http:" not in value and "https:" not in value
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", document, flags=re.IGNORECASE)


def test_full_report_renders_every_section_with_formatted_numbers() -> None:
    document = render_report_html(_full_report())
    assert document.startswith("<!DOCTYPE html>")
    parser = _parse(document)
    _assert_self_contained(document, parser)
    for ident in ("evaluation", "before-after", "per-class", "training", "mining", "stages", "manifest"):
        assert f'<section id="{ident}"' in document and f'href="#{ident}"' in document
    for text in (
        "95.00 %", "93.00 %", "96.00 %",  # accuracies (test set) and agreement (held-back pool)
        "2,000 images", "1,200 pool images", "rough: fewer than 200 images",  # counts; the 60 held-out positives
        "95.00 % (95 % interval 93.96-95.87 %, 2,000 images)",  # Wilson, 1900 of 2000
        "1,072,741", "258,401", "123,057,280",  # parameters, MACs
        "4.2x smaller", "4.4x fewer", "2.2x faster", "1.9x faster",  # ratios
        "4.10 MiB", "2.10 ms", "0.95 ms", "-2.00 points",
        "Quality gate passed", "test set, 2,000 images, 95 % paired interval: accuracy drop 2.00 points",
        "83.00 % (95 % interval 55.20-95.30 %, 12 held-out positives)", "0.400 (estimated)", "demo (version 1)",
        "1,200 ids", "torch 2.14.1", "abab", "5 min 0 s", "140 to reach 625",  # filled up to the selection floor
    ):  # fmt: skip
        assert text in document, text
    assert "Binary operations" not in document  # zero for a Ghost student: not shown
    assert "ONNX file" in document
    assert "1,199" not in document  # the mined ids are counted, not listed
    # Tables have headers; charts are figures with captions.
    assert document.count("<th scope=") >= 20
    assert document.count("<figure>") == document.count("<figcaption>") == 5


def test_svg_charts_are_well_formed_accessible_and_have_axes() -> None:
    document = render_report_html(_full_report())
    svgs = _svgs(document)
    assert len(svgs) == 5  # accuracy/agreement, loss, score histogram, class histogram, stages
    for svg in svgs:
        assert svg.get("role") == "img"
        assert svg[0].tag == "title" and svg[0].text
        assert svg.get("aria-labelledby", "").split()[0] == svg[0].get("id")
        assert svg.get("viewBox")
    ids = re.findall(r'\bid="([^"]+)"', document)
    assert len(ids) == len(set(ids))
    curves, loss, scores, classes, stages = svgs
    assert len(curves.findall("polyline")) == 2 and len(loss.findall("polyline")) == 1
    curve_text = [t.text for t in curves.iter("text")]
    assert "100 %" in curve_text and "Epoch" in curve_text and "best" in curve_text
    assert "threshold 0" in [t.text for t in scores.iter("text")]
    assert len(scores.findall("rect")) > 10
    assert {"T-shirt/top", "Trouser"} <= {t.text for t in classes.iter("text")}
    assert "distill" in [t.text for t in stages.iter("text")]


def test_user_strings_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    report = _full_report()
    report["job"]["student"] = '<img src="https://evil.example/x.png">'
    report["job"]["options"]["name"] = evil
    report["evaluation"]["class_names"] = [evil, "A&B"]
    report["evaluation"]["test"]["per_class"][0]["name"] = evil
    report["mining"]["class_histogram"] = {evil: 300, "A&B": 10, '"quoted"': 5}
    report["mining"]["pool"] = "pool</section><b>"
    report["stages_s"][evil] = 3.0
    report["manifest"]["packages"][evil] = evil
    report["manifest"]["pool"] = {"name": "x\"' onload='y", "version": evil}
    document = render_report_html(report)
    assert "<script" not in document.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "A&amp;B" in document and "&lt;/section&gt;&lt;b&gt;" in document
    assert "&lt;img src=&quot;https://evil.example/x.png&quot;&gt;" in document
    parser = _parse(document)
    _assert_self_contained(document, parser)
    assert evil in "".join(parser.text)  # shown as text
    for svg in _svgs(document):
        assert svg.tag == "svg"
    assert not any("onload" in attrs for _, attrs in parser.tags)


@pytest.mark.parametrize(
    "report",
    [
        {"format": 1},
        {},
        {key: None for key in _full_report()},
        {key: {} for key in _full_report()},
        {key: "garbage" for key in _full_report()},
    ],
    ids=["format-only", "empty", "all-none", "all-empty", "all-strings"],
)
def test_minimal_reports_render_without_sections(report: dict[str, Any]) -> None:
    document = render_report_html(report)
    parser = _parse(document)
    _assert_self_contained(document, parser)
    assert "Compression report" in document and "n/a" in document
    assert "<svg" not in document and '<section id="before-after"' not in document


def test_partial_and_malformed_values_show_na_instead_of_failing() -> None:
    report = _full_report()
    report["teacher"] = {"accuracy": None, "parameters": "many", "latency": {"1": None}}
    report["student"]["accuracy"] = float("nan")
    report["student"]["macs"] = True
    report["gate"] = {"passed": None}
    report["distillation"]["history"] = ["bad", {"epoch": 1}, {"epoch": 2, "val_accuracy": float("inf")}]
    report["mining"]["score_histogram"] = {"edges": [0, 1], "counts": [1, 2, 3]}  # lengths disagree
    report["mining"]["class_histogram"] = {"a": "x", "b": None}
    report["mining"]["holdout_recall"] = None
    report["mining"]["holdout_recall_interval"] = ["x", None]
    report["manifest"]["mined_ids"] = None
    report["stages_s"] = {"load": -1.0, "distill": "slow"}
    report["evaluation"]["test"]["per_class"] = [None, {"class": None}]  # unreadable: the section is left out
    document = render_report_html(report)
    parser = _parse(document)
    _assert_self_contained(document, parser)
    assert "Quality gate: n/a" in document
    assert document.count("n/a") >= 10
    assert "threshold 0" not in document and 'id="stages"' not in document
    assert "<svg" not in document  # no drawable series left
    with pytest.raises(TypeError):
        render_report_html(["not", "a", "dict"])  # type: ignore[arg-type]


def test_failed_gate_and_a_student_slower_and_larger_than_the_teacher() -> None:
    report = make_report(make_evaluation(test=(2000, 1900, 1835)), max_accuracy_drop=1.0).to_dict()
    report["student"]["latency"] = {1: {"median_ms": 4.2}, 32: {"median_ms": 40.0}}  # int keys work too
    report["student"]["weight_bytes"] = 8600000
    report["student"]["multiplications"] = 0  # an adder student
    document = render_report_html(report)
    assert 'class="gate failed"' in document and "accuracy drop 3.25 points" in document
    assert "over the allowed 1" in document
    assert "2.0x slower" in document and "2.0x larger" in document and "none left" in document
    assert "1.0x faster" in document  # batch 32: equal


def test_undecided_gate_on_a_tiny_evaluation_says_so() -> None:
    # no test set, 20 held-out positives, 50 held-back pool images: a 3-point limit cannot be decided
    evaluation = make_evaluation(test=None, held_out=(20, 19, 19), pool=(50, 49))
    document = render_report_html(make_report(evaluation, max_accuracy_drop=3.0))
    assert 'class="gate undecided"' in document and "too few images to decide" in document
    assert "held-out positives" in document and "rough: fewer than 200 images" in document
    assert "20 images" in document and "50 pool images" in document


def test_thumbnails_are_embedded_as_a_data_uri() -> None:
    document = render_report_html(_full_report(), thumbnails_png=_PNG)
    uri = "data:image/png;base64," + base64.b64encode(_PNG).decode("ascii")
    parser = _parse(document)
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 1 and images[0]["src"] == uri and images[0]["alt"]
    assert "of the 1,200 selected" in document
    assert "<img" not in render_report_html(_full_report())
    # Thumbnails alone (no mining figures) still get the mining section.
    alone = render_report_html({"format": 1}, thumbnails_png=_PNG)
    assert uri in alone and 'id="mining"' in alone
    _parse(alone)


def test_large_reports_render_quickly() -> None:
    report = _full_report()
    report["distillation"]["history"] = [
        {"epoch": e, "train_loss": 1.0 / (e + 1), "val_accuracy": e / 400, "val_agreement": e / 410} for e in range(400)
    ]
    report["mining"]["class_histogram"] = {f"class {i}": 1000 - i for i in range(1000)}
    report["manifest"]["mined_ids"] = list(range(200_000))
    per_class = report["evaluation"]["test"]["per_class"]
    report["evaluation"]["test"]["per_class"] = [{**per_class[0], "name": f"class {i}"} for i in range(1000)]
    original = copy.deepcopy(report)
    start = time.perf_counter()
    document = render_report_html(report)
    assert time.perf_counter() - start < 2.0
    assert report == original  # the input is not modified
    assert "971 other classes" in document  # the class chart keeps the 29 largest classes and sums the rest
    _parse(document)
    for svg in _svgs(document):
        assert svg.get("role") == "img"
