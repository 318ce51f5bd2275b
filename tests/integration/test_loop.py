"""Is the loop working? Weeks of traffic, support tickets and experiment records through the real broker,
the worker and chdb: the lagging and velocity views equal the oracle computed from the generator's record,
bad tickets end in ai.deadletter.v1 with their reason, and the report and the Grafana panels read them.

One pipeline run (module scope): five weeks of returning and new users (about 1,000 interactions), their
tickets (one published twice with a corrected category, one naming another user's interaction, one from
the SDK, three invalid), and three experiment records.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from experiments.store import publish_experiment
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.kafka import delete_topics, ensure_topics, public_topic_names, wait_for_broker
from infra.settings import ClickHouseSettings, InsightSettings, KafkaSettings, PipelineSettings, Settings
from producers import FeedbackClient
from producers.client import EventPublisher
from producers.synthetic import (
    History,
    HistorySpec,
    HistoryWeek,
    TicketSpec,
    VersionProfile,
    generate_history,
    generate_tickets,
)
from reporting.html import write_html
from reporting.model import build_report
from reporting.prompts import PromptRegistry, PromptVersion, mirror
from schemas import Experiment, ExperimentStatus, FeedbackType, SupportTicket, topics
from schemas.experiments import ExperimentAction
from tests.support.checks import loop_mismatches
from tests.support.oracle import (
    expected_concurrent,
    expected_outcomes,
    expected_time_to_fix,
    expected_velocity,
    latest_tickets,
    week_of,
)
from tests.support.patterns import grafana_sql

DAY = timedelta(days=1)
DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "loop-health.json"
PROFILES = {
    "v0.1": VersionProfile(regenerate=0.45, edit=0.3, thumbs_down=0.15, rephrase=0.1),
    "v0.2": VersionProfile(regenerate=0.3, edit=0.2, thumbs_down=0.1, rephrase=0.05),
}
WEEKS = (
    HistoryWeek({"v0.1": 1}, new_users=40, returning=0.0),
    HistoryWeek({"v0.1": 1}, new_users=12, returning=0.6, reactivation=0.2),
    HistoryWeek({"v0.1": 80, "v0.2": 20}, new_users=12, returning=0.6, reactivation=0.2),
    HistoryWeek({"v0.2": 1}, new_users=10, returning=0.7, reactivation=0.2),
    HistoryWeek({"v0.2": 1}, new_users=10, returning=0.7, reactivation=0.2),
)


@dataclass
class Run:
    """What was published, and a client on the chdb the worker wrote (the worker stopped)."""

    client: Client
    db: str
    history: History
    outcomes: dict[str, dict[str, Any]]
    tickets: list[SupportTicket]
    prompts: list[PromptVersion]
    experiments: list[Experiment]
    promoted_at: datetime
    now: datetime


def _decided(
    name: str, control: str, treatment: str, created: datetime, ended: datetime, promote: bool
) -> Experiment:
    return Experiment(
        experiment_id=name,
        revision=2,
        control=control,
        treatment=treatment,
        status=ExperimentStatus.PROMOTED if promote else ExperimentStatus.REVERTED,
        created_at=created,
        updated_at=ended,
        applied=ExperimentAction(
            action="promote" if promote else "revert",
            applied_at=ended,
            applied_by="test",
            production_version=treatment if promote else control,
            retired_version=control if promote else treatment,
            decision=None,
        ),
    )


@pytest.fixture(scope="module")
def run(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("loop")
    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    end = today - timedelta(days=today.weekday())  # this Monday: five complete weeks before it
    history = generate_history(HistorySpec(WEEKS, end, PROFILES, seed=3, sessions=(1, 2), budget=(1, 4)))
    week = history.week_starts
    planned = list(history.interactions.values())
    tickets = generate_tickets(planned, TicketSpec(ai_rate=0.15, mislinked_share=0.2, seed=4), now)
    # A help desk corrects a ticket's category: published again, the last copy counts.
    first = tickets[0]
    corrected = first.model_copy(update={"event_id": uuid.uuid4(), "category": "wrong answer"})
    published = [*tickets, corrected]
    promoted_at = week[3] + timedelta(hours=10)
    experiments = [
        _decided("exp-v0.2", "v0.1", "v0.2", week[2] + timedelta(hours=9), promoted_at, True),
        _decided("exp-v0.2b", "v0.2", "v0.2b", week[3] + 2 * DAY, week[4] + DAY, False),
        Experiment(
            experiment_id="exp-v0.3",
            revision=1,
            control="v0.2",
            treatment="v0.3",
            created_at=week[4] + timedelta(days=3),
            updated_at=week[4] + timedelta(days=3),
        ),
    ]
    prompts = [
        _prompt("v0.1", None, week[0] - timedelta(days=20), ""),
        _prompt(
            "v0.2", "v0.1", week[2] - timedelta(days=1), "edit: readable -> clear; ticket: too long; #12"
        ),
        _prompt("v0.2b", "v0.2", week[3] + timedelta(days=1), "ticket: Wrong Answer; insert: never seen"),
    ]

    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_namespace=f"t{uuid.uuid4().hex[:10]}")
    settings = Settings(
        kafka=kafka,
        clickhouse=ClickHouseSettings(
            url=f"chdb:///{tmp / 'chdb'}", database=f"fl_{uuid.uuid4().hex[:8]}", flush_interval_s=0.2
        ),
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0, late_horizon_s=60 * 86400.0),
    )
    wait_for_broker(kafka)
    ensure_topics(kafka, public_topic_names(kafka))
    for record in experiments:
        publish_experiment(kafka, record)
    env = {**settings_env(settings), "FEEDBACKLOOP_PIPELINE__LATE_HORIZON_S": str(60 * 86400.0)}
    worker = WorkerProcess("all", tmp / "worker.log", env).start()
    ticket_topic = topics.topic_name(topics.SUPPORT_TICKETS, kafka.topic_namespace)
    some = planned[0].event
    try:
        with EventPublisher(kafka) as publisher:
            for message in history.messages:
                if not isinstance(message, bytes):
                    publisher.publish(message)
            for ticket in published:
                publisher.publish_raw(
                    ticket_topic, ticket.user_id.encode(), ticket.model_dump_json().encode()
                )
            bad = {**json.loads(first.model_dump_json()), "ticket_id": "BAD-1", "ai_quality": "yes"}
            publisher.publish_raw(ticket_topic, b"u", json.dumps(bad).encode())
            bad = {**json.loads(first.model_dump_json()), "ticket_id": "BAD-2", "created_at": 1_764_000_000}
            publisher.publish_raw(ticket_topic, b"u", json.dumps(bad).encode())
            ahead = first.model_copy(update={"ticket_id": "BAD-3", "created_at": now + timedelta(days=2)})
            publisher.publish_raw(ticket_topic, b"u", ahead.model_dump_json().encode())
        # And one the way an app records it: the SDK, through its sender process.
        with FeedbackClient(kafka, settings.producer.model_copy(update={"spool_dir": tmp / "spool"})) as sdk:
            from_app = sdk.record_support_ticket(
                user_id=some.user_id,
                category="too long",
                ai_quality=True,
                ticket_id="APP-1",
                interaction_id=some.interaction_id,
                created_at=some.created_at + timedelta(minutes=3),
            )
            assert sdk.flush(30.0)
        wait_until_drained(settings, len(planned), timeout_s=600, alive=worker.alive)
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{(tmp / 'worker.log').read_text()[-3000:]}")
    finally:
        code = worker.stop(timeout_s=120)
    assert code == 0, (tmp / "worker.log").read_text()[-3000:]
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    mirror(PromptRegistry(tmp / "prompts.json", prompts), client, db)
    outcomes: dict[str, dict[str, Any]] = {}
    for workload in history.weeks:
        outcomes.update(expected_outcomes(workload))
    yield Run(client, db, history, outcomes, [*published, from_app], prompts, experiments, promoted_at, now)
    client.close()
    with contextlib.suppress(Exception):
        delete_topics(kafka, public_topic_names(kafka))
    shutil.rmtree(tmp / "chdb", ignore_errors=True)


def _prompt(version: str, parent: str | None, at: datetime, addresses: str) -> PromptVersion:
    return PromptVersion(
        version=version,
        parent=parent,
        text=f"prompt {version}",
        change=f"change of {version}",
        addresses=addresses,
        author="test",
        created_at=at,
    )


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _ms(value: datetime) -> int:
    return round(value.replace(tzinfo=UTC).timestamp() * 1000)


def test_engagement_retention_and_tickets_equal_the_oracle(run: Run) -> None:
    assert loop_mismatches(run.client, run.db, run.outcomes, run.tickets) == []
    # The scenario has what the views must handle: returning users, a mislinked ticket, a correction.
    [ticket] = _rows(run.client, f"SELECT * FROM {run.db}.support_tickets FINAL WHERE ticket_id = 'T-000001'")
    assert ticket["category"] == "wrong answer"
    linked = _rows(run.client, f"SELECT linked, interaction_id FROM {run.db}.support_tickets_linked")
    assert any(r["interaction_id"] is not None and not r["linked"] for r in linked)  # another user's
    [app] = _rows(run.client, f"SELECT * FROM {run.db}.support_tickets_linked WHERE ticket_id = 'APP-1'")
    assert app["linked"]
    assert app["prompt_version"] == "v0.1"
    cohorts = _rows(run.client, f"SELECT * FROM {run.db}.cohort_retention ORDER BY cohort_week")
    assert cohorts[0]["users"] == 40
    assert cohorts[0]["retention_week_4"] is not None


def test_bad_tickets_are_dead_lettered_with_their_reason(run: Run) -> None:
    letters = _rows(
        run.client,
        f"SELECT reason, error_type, value_text FROM {run.db}.dead_letters FINAL "
        f"WHERE source_topic LIKE '%{topics.SUPPORT_TICKETS}' ORDER BY offset",
    )
    by_ticket = {json.loads(r["value_text"])["ticket_id"]: r for r in letters}
    assert set(by_ticket) == {"BAD-1", "BAD-2", "BAD-3"}
    assert by_ticket["BAD-1"]["error_type"] == "validation_error"
    assert "support_tickets" in by_ticket["BAD-1"]["reason"]
    assert "ai_quality" in by_ticket["BAD-1"]["reason"]
    assert "not a number" in by_ticket["BAD-2"]["reason"]
    assert by_ticket["BAD-3"]["error_type"] == "future_event"
    assert "ahead of the wall clock" in by_ticket["BAD-3"]["reason"]
    stored = {
        r["ticket_id"] for r in _rows(run.client, f"SELECT ticket_id FROM {run.db}.support_tickets FINAL")
    }
    assert stored == set(latest_tickets(run.tickets))  # every good ticket once, none of the bad ones


def _first_replacement(run: Run) -> datetime:
    """The first edit the generator made by replacing 'readable' with 'clear' (its own record)."""
    return min(
        a.at
        for p in run.history.interactions.values()
        for a in p.actions
        if a.feedback_type is FeedbackType.EDIT
        and "readable" in p.event.response
        and a.corrected_output == p.event.response.replace("readable", "clear", 1)
    )


def test_velocity_and_time_to_fix_equal_the_oracle(run: Run) -> None:
    client, db = run.client, run.db
    tickets = latest_tickets(run.tickets).values()

    def first_ticket(category: str) -> int | None:
        times = [_ms(t.created_at) for t in tickets if t.ai_quality and t.category.lower() == category]
        return min(times) if times else None

    v02, v02b = _ms(run.prompts[1].created_at), _ms(run.prompts[2].created_at)
    promoted = _ms(run.promoted_at)
    fixes, median_register, median_promote = expected_time_to_fix(
        [
            ("v0.2", "edit: readable -> clear", v02, promoted, _ms(_first_replacement(run))),
            ("v0.2", "ticket: too long", v02, promoted, first_ticket("too long")),
            ("v0.2b", "ticket: Wrong Answer", v02b, None, first_ticket("wrong answer")),
            ("v0.2b", "insert: never seen", v02b, None, None),
        ]
    )
    got = {(r["version"], r["ref"]): r for r in _rows(client, f"SELECT * FROM {db}.time_to_fix")}
    assert set(got) == {(v, ref) for v, ref, _, _ in fixes}
    for version, ref, to_register, to_promote in fixes:
        row = got[(version, ref)]
        assert row["days_to_register"] == (None if to_register is None else pytest.approx(to_register)), ref
        assert row["days_to_promote"] == (None if to_promote is None else pytest.approx(to_promote)), ref
    everything = "start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00'"
    [summary] = _rows(client, f"SELECT * FROM {db}.time_to_fix_summary_between({everything})")
    assert summary["median_days_to_register"] == pytest.approx(median_register)
    assert summary["median_days_to_promote"] == pytest.approx(median_promote)

    months = {
        _ms(r["month_start"]): (
            r["versions_registered"],
            r["versions_promoted"],
            list(r["registered_versions"]),
            list(r["promoted_versions"]),
        )
        for r in _rows(client, f"SELECT * FROM {db}.prompt_velocity")
    }
    registered = {p.version: _ms(p.created_at) for p in run.prompts}
    assert months == expected_velocity(registered, {"v0.2": _ms(run.promoted_at)})

    runs = {
        e.experiment_id: (_ms(e.created_at), _ms(e.applied.applied_at) if e.applied else None)
        for e in run.experiments
    }
    first_data = min(_ms(p.event.created_at) for p in run.history.interactions.values())
    concurrent = _rows(client, f"SELECT * FROM {db}.experiments_concurrent")
    weeks = {_ms(r["week_start"]): list(r["experiment_ids"]) for r in concurrent}
    assert weeks == expected_concurrent(runs, first_data, _ms(datetime.now(UTC)))


def test_the_report_section_and_the_grafana_panels_read_them(run: Run, tmp_path: Path) -> None:
    client, db = run.client, run.db
    report = build_report(client, db, run.now, settings=InsightSettings())
    loop = report.loop
    # This week has no traffic yet: the last history week is the latest complete one, and is judged.
    users = loop.indicator("weekly_active_users")
    last = run.history.week_starts[-1]
    [point] = [p for p in users.points if p.start == last]
    assert point.complete
    week_users = {p.event.user_id for p in run.history.weeks[-1].interactions.values()}
    assert users.latest == len(week_users)
    assert loop.indicator("regeneration_rate").direction in ("up", "down", "flat")
    assert [f["version"] for f in loop.fixes] == ["v0.2", "v0.2", "v0.2b", "v0.2b"]
    page = write_html(report, tmp_path / "report.html").read_text()
    assert "Is the loop working?" in page

    dashboard = json.loads(DASHBOARD.read_text())
    start = run.history.week_starts[0] - timedelta(days=30)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            result = client.query(grafana_sql(target["rawSql"], db, start, datetime.now(UTC)))
            assert result.result_rows, f"panel {panel['title']!r} returned no rows"
    # The weekly panel is the view: the overall regeneration rate per week of the oracle.
    regeneration = next(p for p in dashboard["panels"] if p["title"].startswith("Regeneration rate"))
    sql = grafana_sql(regeneration["targets"][0]["rawSql"], db, start, datetime.now(UTC))
    panel = {(_ms(r["time"]), r["prompt_version"]): r["regeneration_rate"] for r in _rows(client, sql)}
    by_week: dict[tuple[int, str], list[bool]] = {}
    for o in run.outcomes.values():
        for version in (o["prompt_version"], "(all)"):
            by_week.setdefault((week_of(o["interaction_created_at_ms"]), version), []).append(
                o["regenerated"]
            )
    assert panel == pytest.approx({k: sum(v) / len(v) for k, v in by_week.items()})
