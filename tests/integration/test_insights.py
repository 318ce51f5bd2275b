"""The insight views on a workload with planted patterns, through the real broker, Faust and chdb.

One pipeline run (module scope, ~4,000 events) feeds every test here: the views must find exactly
the planted patterns, none under a threshold, count each event once, and the report, the SDK's
impact function and the Grafana dashboard's queries must agree with them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.kafka import delete_topics, ensure_topics, public_topic_names, wait_for_broker
from infra.settings import (
    ClickHouseSettings,
    InsightSettings,
    KafkaSettings,
    PipelineSettings,
    Settings,
)
from producers.client import EventPublisher
from producers.impact import fetch_impact
from reporting.model import build_report
from reporting.prompts import PromptRegistry, mirror
from schemas import FeedbackEvent, FeedbackType, InteractionEvent
from tests.support.patterns import PlantedWorkload, grafana_sql, planted_workload

ALL_TIME = "start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00'"
DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "leading-indicators.json"
CORRECTIONS = {FeedbackType.EDIT, FeedbackType.REGENERATE, FeedbackType.THUMBS_DOWN}


@pytest.fixture(scope="module")
def planted() -> PlantedWorkload:
    """The workload and its answers."""
    return planted_workload()


@pytest.fixture(scope="module")
def pipeline_db(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory, planted: PlantedWorkload
) -> Iterator[tuple[Client, str]]:
    """The planted workload run through a worker of its own; then a client on its chdb (worker stopped)."""
    tmp = tmp_path_factory.mktemp("insights")
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_namespace=f"t{uuid.uuid4().hex[:10]}")
    settings = Settings(
        kafka=kafka,
        clickhouse=ClickHouseSettings(
            url=f"chdb:///{tmp / 'chdb'}", database=f"fl_{uuid.uuid4().hex[:8]}", flush_interval_s=0.2
        ),
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0),
    )
    wait_for_broker(kafka)
    ensure_topics(kafka, public_topic_names(kafka))
    worker = WorkerProcess("all", tmp / "worker.log", settings_env(settings)).start()
    try:
        with EventPublisher(kafka) as publisher:
            for event in planted.events:
                publisher.publish(event)
        wait_until_drained(settings, planted.interactions, timeout_s=600, alive=worker.alive)
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{(tmp / 'worker.log').read_text()[-3000:]}")
    finally:
        code = worker.stop(timeout_s=120)
    assert code == 0, (tmp / "worker.log").read_text()[-3000:]
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    mirror(PromptRegistry(tmp / "prompts.json", planted.prompts), client, db)
    yield client, db
    client.close()
    with contextlib.suppress(Exception):
        delete_topics(kafka, public_topic_names(kafka))
    shutil.rmtree(tmp / "chdb", ignore_errors=True)


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_common_edits_are_exactly_the_planted_replacement(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    found = {
        (r["prompt_version"], r["original_fragment"], r["corrected_fragment"]): (
            r["frequency"],
            r["distinct_users"],
        )
        for r in _rows(client, f"SELECT * FROM {db}.common_edits")
    }
    assert found == planted.expected.common_edits
    # The patterns under the threshold exist, with their exact counts, and are not reported: five
    # users, and one user who made the same fix in more than five edits (people count, not edits).
    every = {
        (r["prompt_version"], r["original_fragment"], r["corrected_fragment"]): (
            r["frequency"],
            r["distinct_users"],
        )
        for r in _rows(client, f"SELECT * FROM {db}.edit_patterns_between({ALL_TIME}) WHERE kind = 'replace'")
    }
    for key, frequency in planted.expected.below_threshold_edits.items():
        assert every[key][0] == frequency
    for key, counts in planted.expected.single_user_edits.items():
        assert every[key] == counts
        assert counts[0] > InsightSettings().min_pattern_edits  # would have been listed by edit count
    assert max(users for k, (_, users) in every.items() if k not in found) <= 5


def test_consistent_deletions_are_exactly_the_planted_closing_paragraph(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    found = {
        (r["prompt_version"], r["position"], r["unit"]): (r["deleting_edits"], r["edits"])
        for r in _rows(client, f"SELECT * FROM {db}.consistent_deletions")
    }
    assert found == planted.expected.consistent_deletions
    [row] = _rows(client, f"SELECT share FROM {db}.consistent_deletions")
    assert row["share"] == pytest.approx(0.4)
    every = {
        (r["prompt_version"], r["position"], r["unit"]): (r["deleting_edits"], r["edits"])
        for r in _rows(client, f"SELECT * FROM {db}.deletions_between({ALL_TIME})")
    }
    for key, counts in planted.expected.below_threshold_deletions.items():
        assert every[key] == counts  # 25 % of v1.1's edits, but only 5 edits
    assert every[("v1.0", "middle", "sentence")] == (15, 200)  # 15 edits, but 7.5 %


def test_the_four_times_regenerated_category_is_the_only_spike(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    spikes = _rows(client, f"SELECT * FROM {db}.category_spikes")
    assert {
        (r["prompt_version"], r["input_category"]) for r in spikes if r["flagged"]
    } == planted.expected.spikes
    assert {(r["prompt_version"], r["input_category"]) for r in spikes if r["flagged_capped"]} == (
        planted.expected.spikes
    )
    [technical] = [r for r in spikes if r["flagged"]]
    assert (technical["interactions"], technical["regenerations"]) == (400, 192)
    assert (technical["rest_interactions"], technical["rest_regenerations"]) == (1200, 144)
    assert technical["ratio"] == pytest.approx(4.0)


def test_rates_per_interaction_and_capped_equal_the_events(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    cap = InsightSettings().user_weight_cap
    interactions = [e for e in planted.events if isinstance(e, InteractionEvent)]
    regenerated = {
        e.interaction_id
        for e in planted.events
        if isinstance(e, FeedbackEvent) and e.feedback_type is FeedbackType.REGENERATE
    }
    per_user: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for x in interactions:
        counts = per_user[x.prompt_version][x.user_id]
        counts[0] += 1
        counts[1] += x.interaction_id in regenerated
    rates = {r["prompt_version"]: r for r in _rows(client, f"SELECT * FROM {db}.version_rates")}
    for version, users in per_user.items():
        n = sum(c[0] for c in users.values())
        r = sum(c[1] for c in users.values())
        capped = sum(c[1] * min(1.0, cap / c[0]) for c in users.values()) / sum(
            min(c[0], cap) for c in users.values()
        )
        assert rates[version]["interactions"] == n
        assert rates[version]["regenerations"] == r
        assert rates[version]["regeneration_rate_capped"] == pytest.approx(capped, abs=1e-12)
    # The power user makes v1.1 look far worse per interaction than per (capped) user.
    v11 = rates["v1.1"]
    assert v11["regeneration_rate"] - v11["regeneration_rate_capped"] > 0.15


def test_every_edit_is_one_row_and_the_size_mix_counts_each_once(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    edits = [
        e for e in planted.events if isinstance(e, FeedbackEvent) and e.feedback_type is FeedbackType.EDIT
    ]
    [[rows, distinct]] = client.query(
        f"SELECT count(), uniqExact(event_id) FROM {db}.edit_operations FINAL"
    ).result_rows
    assert rows == distinct == len(edits)
    mix = {r["prompt_version"]: r for r in _rows(client, f"SELECT * FROM {db}.edit_size_mix")}
    assert {v: r["edits"] for v, r in mix.items()} == planted.edits_by_version
    assert mix["v1.0"]["large"] == 10
    assert all(r["small"] + r["medium"] + r["large"] == r["edits"] for r in mix.values())


def test_contributions_and_the_sdk_impact_of_a_user(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    v11 = next(p for p in planted.prompts if p.version == "v1.1")
    corrections = [
        e for e in planted.events if isinstance(e, FeedbackEvent) and e.feedback_type in CORRECTIONS
    ]
    version_of = {
        e.interaction_id: e.prompt_version for e in planted.events if isinstance(e, InteractionEvent)
    }
    informing = Counter(
        c.user_id
        for c in corrections
        if version_of[c.interaction_id] == "v1.0" and c.created_at < v11.created_at
    )
    served = {
        e.user_id for e in planted.events if isinstance(e, InteractionEvent) and e.prompt_version == "v1.1"
    }
    user, count = informing.most_common(1)[0]
    impact = fetch_impact(client, db, user)
    assert impact.informing_corrections == count
    assert impact.corrections == sum(c.user_id == user for c in corrections)
    assert impact.informed_versions == ("v1.1",)
    assert impact.users_served == len(served)
    assert f"You've provided {count:,} correction" in impact.messages()[0]
    power = fetch_impact(client, db, planted.expected.power_user)
    assert (power.regenerations, power.informing_corrections, power.users_served) == (200, 0, 0)
    nobody = fetch_impact(client, db, "nobody")
    assert (nobody.corrections, nobody.messages()) == (0, [])
    [changelog] = _rows(client, f"SELECT * FROM {db}.prompt_changelog WHERE version = 'v1.1'")
    assert changelog["informed_by_corrections"] == sum(informing.values())
    assert changelog["informed_by_users"] == len(informing)


def test_the_report_ranks_the_planted_problems_with_their_evidence(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    report = build_report(client, db, planted.end, settings=InsightSettings())
    assert report.interactions == planted.interactions
    assert 3 <= len(report.issues) <= 5
    assert [i.score for i in report.issues] == sorted((i.score for i in report.issues), reverse=True)
    by_kind = {i.kind: i for i in report.issues}
    spike = by_kind["segment"]
    assert (spike.prompt_version, spike.category, spike.frequency) == ("v1.0", "technical", 192)
    assert spike.segments[0]["input_category"] == "technical"
    deletion = by_kind["deletion"]
    assert (deletion.frequency, deletion.prompt_version) == (80, "v1.0")
    assert {s["input_category"] for s in deletion.segments} <= {"billing", "general", "technical", "writing"}
    assert sum(s["edits"] for s in deletion.segments) == 80
    v11 = next(i for i in report.issues if i.kind == "regenerations" and i.prompt_version == "v1.1")
    assert v11.caveat is not None  # the power user: per-interaction and capped rates disagree
    assert [(c["prompt_version"], c["original_fragment"]) for c in report.common_edits] == [
        ("v1.0", "dear sir/madam")
    ]
    assert [r["version"] for r in report.changelog] == ["v1.0", "v1.1"]


def test_the_grafana_dashboard_queries_run_on_chdb(
    pipeline_db: tuple[Client, str], planted: PlantedWorkload
) -> None:
    client, db = pipeline_db
    dashboard = json.loads(DASHBOARD.read_text())
    start = planted.start.replace(tzinfo=UTC)
    end = datetime.now(UTC)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            result = client.query(grafana_sql(target["rawSql"], db, start, end))
            assert result.result_rows, f"panel {panel['title']!r} returned no rows"
            if panel["type"] == "timeseries":
                assert result.column_names[:2] == ("time", "prompt_version")
    # One bucket of 10^9 s holds all the data: the panel's rates must equal version_rates'.
    regeneration = next(p for p in dashboard["panels"] if p["id"] == 1)
    sql = grafana_sql(regeneration["targets"][0]["rawSql"], db, start, end, interval_s=10**9)
    panel = {r["prompt_version"]: r["regeneration_rate"] for r in _rows(client, sql)}
    rates = {
        r["prompt_version"]: r["regeneration_rate"]
        for r in _rows(client, f"SELECT * FROM {db}.version_rates")
    }
    assert panel == pytest.approx(rates)
