"""The miner's held-out recall in words (``service.pipeline.figures.held_out_recall_text``), as the HTML report and
the job page (``service.web.job_charts.mining_summary``) show it."""

from __future__ import annotations

from service.pipeline.figures import held_out_recall_text
from service.web.job_charts import mining_summary
from tests.service.report_factory import make_report


def test_the_held_out_recall_carries_its_interval_and_count_on_the_job_page() -> None:
    report = make_report().to_dict()
    facts = dict(mining_summary(report))
    assert facts["Held-out recall"] == "83.00 % (95 % interval 55.20-95.30 %, 12 held-out positives)"
    assert facts["Mined"] == "1,200" and facts["Class prior"] == "0.400 (estimated)"


def test_missing_or_malformed_parts_are_left_out_not_shown() -> None:
    mining = {"holdout_recall": 0.5, "holdout": 60, "holdout_recall_interval": [0.37, 0.63]}
    assert held_out_recall_text(mining) == "50.00 % (95 % interval 37.00-63.00 %, 60 held-out positives)"
    for broken_interval in (["low", None], [0.1], "0.1-0.2"):
        broken = {**mining, "holdout_recall_interval": broken_interval}
        assert held_out_recall_text(broken) == "50.00 % (60 held-out positives)"
    assert held_out_recall_text({"holdout_recall": 0.5, "holdout": True}) == "50.00 %"
    for broken in (None, float("nan"), "0.5", True):
        assert held_out_recall_text({**mining, "holdout_recall": broken}) is None
    assert mining_summary(None) == [] and mining_summary({"mining": "junk"}) == []
