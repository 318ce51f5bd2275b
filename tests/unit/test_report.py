"""The weekly report's pure parts: the week, disagreements, issue candidates and their ranking;
and the Grafana provisioning files (valid, consistent)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import InsightSettings
from reporting.model import Issue, candidate_issues, find_disagreements, rank_issues, week_range

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana"
RULES = InsightSettings()


@pytest.mark.parametrize(
    "week",
    [
        "2026-W48",
        "2026w48",
        "2026-11-23",
        "2026-11-29",
        date(2026, 11, 26),
        datetime(2026, 11, 29, 23, 59, tzinfo=UTC),
    ],
)
def test_a_week_is_monday_to_monday_utc(week: object) -> None:
    start, end = week_range(week, None)  # type: ignore[arg-type]
    assert (start, end) == (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))


def test_without_a_week_the_newest_data_decides() -> None:
    start, _ = week_range(None, datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert start == datetime(2025, 12, 29, tzinfo=UTC)  # ISO week 1 of 2026 starts in 2025
    with pytest.raises(ValueError, match="2026-W48"):
        week_range("last week", None)


def rates(version: str, **kw: Any) -> dict[str, Any]:
    row = {
        "prompt_version": version, "interactions": 1000, "regenerations": 100, "regeneration_rate": 0.1,
        "regeneration_rate_capped": 0.1, "edit_rate": 0.2, "edit_rate_capped": 0.2, "correction_rate": 0.3,
        "correction_rate_capped": 0.3, "completion_without_edit_rate": 0.4,
        "completion_without_edit_rate_capped": 0.4, "thumbs_down": 3, "thumbs_down_rate": 0.003,
    }  # fmt: skip
    row.update(kw)
    return row


def test_disagreements_are_rates_further_apart_than_the_setting() -> None:
    version_rates = [rates("v1", regeneration_rate=0.30, regeneration_rate_capped=0.12), rates("v2")]
    category_rates = [{**rates("v1", edit_rate_capped=0.26), "input_category": "tech"}]
    found = find_disagreements(version_rates, category_rates, 0.05)
    assert [(d.prompt_version, d.category, d.metric) for d in found] == [
        ("v1", None, "regeneration_rate"),
        ("v1", "tech", "edit_rate"),
    ]


def spike(version: str, category: str, regenerations: int, flagged: bool) -> dict[str, Any]:
    return {
        "prompt_version": version, "input_category": category, "regenerations": regenerations,
        "regeneration_rate": 0.6, "ratio": 4.0, "rest_regeneration_rate": 0.15, "interactions": 300,
        "flagged": flagged,
    }  # fmt: skip


def test_a_spiking_category_is_its_own_issue_and_not_counted_twice() -> None:
    issues = candidate_issues(
        [rates("v1", regenerations=300, regeneration_rate=0.3)],
        [spike("v1", "tech", 180, True), spike("v1", "general", 20, False)],
        [], [], [], RULES, 5,
    )  # fmt: skip
    by_kind = {i.kind: i for i in issues}
    assert by_kind["segment"].frequency == 180
    assert by_kind["segment"].category == "tech"
    assert by_kind["regenerations"].frequency == 120
    assert "(other inputs)" in by_kind["regenerations"].title


def test_versions_under_the_target_have_no_regeneration_issue() -> None:
    assert candidate_issues([rates("v1", regeneration_rate=0.14)], [], [], [], [], RULES, 5) == []


def test_edit_issues_weigh_by_the_size_of_their_edits() -> None:
    common = [{
        "prompt_version": "v1", "example_original": "Dear Sir", "example_corrected": "Hi Anna",
        "frequency": 20, "distinct_users": 20,
        "in_small_edits": 10, "in_medium_edits": 0, "in_large_edits": 10,
        "original_fragment": "dear sir", "corrected_fragment": "hi <name>",
    }]  # fmt: skip
    deletions = [{
        "prompt_version": "v1", "position": "closing", "unit": "paragraph", "share": 0.4,
        "deleting_edits": 80,
        "edits": 200, "in_small_edits": 0, "in_medium_edits": 80, "in_large_edits": 0,
    }]  # fmt: skip
    mix = [{"prompt_version": "v1", "large": 12, "large_share": 0.06}, {"prompt_version": "v2", "large": 5}]
    issues = {i.kind: i for i in candidate_issues([], [], common, deletions, mix, RULES, 5)}
    assert issues["edit_pattern"].severity == pytest.approx((10 * 1.0 + 10 * 3.0) / 20)
    assert issues["deletion"].severity == pytest.approx(1.5)
    assert issues["deletion"].title == "v1: users delete the closing paragraph in 40% of edits (80 of 200)"
    assert issues["large_edits"].frequency == 12  # v2's 5 large edits are not more than 5


def test_ranking_is_by_frequency_times_severity() -> None:
    issues = [
        Issue("a", "many small", "v1", 100, 1.0),
        Issue("b", "fewer but severe", "v1", 40, 3.0),
        Issue("c", "tie on score, more frequent", "v1", 240, 0.5),
        Issue("d", "small", "v1", 5, 1.0),
    ]
    assert [i.kind for i in rank_issues(issues, 3)] == ["c", "b", "a"]


# ------------------------------------------------------------------ Grafana provisioning


def test_the_grafana_dashboard_and_datasource_are_consistent() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    [source] = datasource["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "feedbackloop.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = json.loads((GRAFANA / "dashboards" / "leading-indicators.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"] for p in panels)
    for indicator in (
        "Regeneration rate",
        "edit distance",
        "Time to first correction",
        "Completion without edit",
    ):
        assert indicator in titles
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            assert "${database}." in target["rawSql"]
            assert (
                "FINAL" in target["rawSql"]
                or "_between(" in target["rawSql"]
                or "FROM ${database}.c" in target["rawSql"]
                or "prompt_changelog" in target["rawSql"]
            )
    regeneration = next(p for p in panels if p["id"] == 1)
    assert (
        regeneration["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]
        == RULES.regeneration_target
    )
