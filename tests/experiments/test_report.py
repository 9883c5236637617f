"""Attribution and statistics against hand-computed values, and the report of an A/B log."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sidecar.apps.experiment.report import build_report, markdown, write_outputs
from sidecar.experiments.design import ExperimentPlan
from sidecar.experiments.log import ExperimentLog, record_event
from sidecar.experiments.stats import decided_queries_needed, sign_test
from sidecar.experiments.store import SqliteStore


def test_sign_test_and_power_match_hand_computation() -> None:
    test = sign_test(9, 1)
    assert test.p_value == pytest.approx(2 * (1 + 10) / 2**10)  # P(X <= 1) + P(X >= 9) for Binomial(10, 1/2)
    assert test.win_rate == 0.9 and test.low < 0.9 < test.high
    z_a, z_b = 1.959963984540054, 0.8416212335729143
    assert decided_queries_needed(0.1) == math.ceil(((z_a * 0.5 + z_b * math.sqrt(0.6 * 0.4)) / 0.1) ** 2)
    with pytest.raises(ValueError, match="between 0 and 0.5"):
        decided_queries_needed(0.7)


def test_ab_report_counts_ctr_mrr_and_conversions(tmp_path: Path) -> None:
    plan = ExperimentPlan(name="ab", arms=("a", "b"), design="ab")
    store = SqliteStore(tmp_path / "log.db")
    # arm a: 2 queries, one clicked at position 2 with a purchase; arm b: 2 queries, clicks at 1 on both
    served = {"qa1": "a", "qa2": "a", "qb1": "b", "qb2": "b"}
    with ExperimentLog(store) as log:
        for qid, arm in served.items():
            log.log_query(plan.query_record(user_query="q", hit_ids_served=["d1", "d2", "d3"], user_id="u", arm=arm,
                                            query_id=qid))  # fmt: skip
        record_event(log, "click", "qa1", object_id="d2", position=2)
        record_event(log, "purchase", "qa1", object_id="d2", position=2)
        record_event(log, "impression", "qa2", object_id="d1", position=1)
        record_event(log, "click", "qb1", object_id="d1", position=1)
        record_event(log, "click", "qb2", object_id="d1", position=1).wait(10)
    report = build_report(SqliteStore(tmp_path / "log.db"), "ab")
    a, b = report["per_arm"]["a"], report["per_arm"]["b"]
    assert (a["queries"], a["ctr"], a["mrr"], a["conversions"]) == (2, 0.5, 0.25, 1)
    assert (b["queries"], b["ctr"], b["mrr"], b["conversions"]) == (2, 1.0, 1.0, 0)
    (comparison,) = report["comparisons"]
    assert comparison["ctr_difference"][0] == pytest.approx(-0.5)
    assert "| a | 2 | 0.500 | 0.250 |" in markdown(report)
    written = write_outputs(tmp_path / "out", report)
    assert all(p.stat().st_size > 0 for p in written)
