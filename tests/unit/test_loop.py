"""'Is the loop working?': the verdicts (pure), the `addresses` grammar (Python and SQL agree), and the
velocity views on chdb against the oracle (tests/support/oracle.py)."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from clickhouse_connect.driver.client import Client
from rich.console import Console

from reporting.html import render_html
from reporting.loop import ABANDON_WARNING, Good, Indicator, Point, Unit, assemble, combined_flags, judge
from reporting.model import build_report
from reporting.prompts import FixRef, PromptRegistry, PromptVersion, mirror, parse_addresses
from reporting.terminal import print_loop, sparkline
from schemas import (
    Experiment,
    ExperimentStatus,
    FeedbackEvent,
    FeedbackType,
    InteractionEvent,
    SupportTicket,
    topics,
)
from schemas.experiments import ExperimentAction
from sinks.clickhouse import migrate, migrations
from tests.support.oracle import (
    expected_concurrent,
    expected_time_to_fix,
    expected_velocity,
    month_of,
    week_of,
)
from tests.support.patterns import insert_records, load_through_logic

MONDAY = datetime(2026, 9, 7, tzinfo=UTC)
WEEK = timedelta(weeks=1)


def weekly(values: list[float | None], complete: int | None = None) -> tuple[Point, ...]:
    """Points a week apart; the first ``complete`` (default: all) are complete."""
    done = len(values) if complete is None else complete
    return tuple(Point(MONDAY + n * WEEK, v, n < done) for n, v in enumerate(values))


def indicator(key: str, good: Good, points: tuple[Point, ...], target: str = "", **kw: Any) -> Indicator:
    return Indicator(
        key, key.replace("_", " ").capitalize(), "lagging", Unit.NUMBER, good, target, points, **kw
    )


# ----------------------------------------------------------------------------------- verdicts


def test_the_last_complete_week_is_compared_with_the_mean_of_the_four_before() -> None:
    # 100, 100, 90, 110, 100 -> the baseline of 120 is the mean of 100, 90, 110, 100... with 130 last.
    rising = judge(indicator("x", Good.UP, weekly([50, 100, 90, 110, 100, 130])), 0.05)
    assert (rising.latest, rising.baseline) == (130, 100)
    assert rising.change == pytest.approx(0.3)
    assert (rising.direction, rising.flag) == ("up", None)
    falling = judge(indicator("x", Good.UP, weekly([100, 100, 100, 90])), 0.05)
    assert falling.direction == "down"
    assert falling.flag == "X is falling (-10% against the 3 weeks before)"
    within = judge(indicator("x", Good.DOWN, weekly([100, 100, 104])), 0.05)
    assert (within.direction, within.flag) == ("flat", None)


def test_the_week_in_progress_and_weeks_without_data_are_not_judged() -> None:
    # The last week is in progress (incomplete) with a collapse that must not count.
    judged = judge(indicator("x", Good.UP, weekly([None, 10, 10, 10, 2], complete=4)), 0.05)
    assert (judged.latest, judged.direction, judged.flag) == (10, "flat", None)
    too_few = judge(indicator("x", Good.UP, weekly([None, 10, 1])), 0.05)
    assert (too_few.direction, too_few.flag, too_few.verdict) == ("unknown", None, "too few weeks")


def test_a_rise_from_zero_counts_and_a_level_target_is_met_or_missed() -> None:
    from_zero = judge(indicator("x", Good.DOWN, weekly([0, 0, 0, 3])), 0.05)
    assert from_zero.direction == "up"
    assert from_zero.flag == "X is rising (from 0 over the 3 weeks before)"
    level = indicator(
        "regeneration_rate", Good.DOWN, weekly([0.3, 0.3, 0.18]), target_max=0.15, target="under 15%"
    )
    missed = judge(level, 0.05)
    assert (missed.on_target, missed.direction) == (False, "down")
    assert missed.flag == "Regeneration rate: the latest misses the target (under 15%)"
    assert missed.verdict == "falling, target missed"
    met = judge(replace(level, points=weekly([0.3, 0.2, 0.1])), 0.05)
    assert (met.on_target, met.flag, met.verdict) == (True, None, "on target, falling")


def test_time_to_fix_is_held_to_its_target_by_the_median() -> None:
    fixes = tuple(Point(MONDAY + n * WEEK, v, True, f"v{n}") for n, v in enumerate([30.0, 5.0, 4.0]))
    slow = indicator(
        "days", Good.DOWN, fixes, target_max=14, target="under 14 days", median=20.0, by_median=True
    )
    judged = judge(slow, 0.05)
    assert (judged.level, judged.on_target, judged.direction) == (20.0, False, "down")
    assert judged.flag == "Days: the median misses the target (under 14 days)"


def test_falling_regeneration_with_falling_engagement_is_the_posts_warning() -> None:
    regeneration = judge(indicator("regeneration_rate", Good.DOWN, weekly([0.4, 0.4, 0.4, 0.3])), 0.05)
    users_down = judge(indicator("weekly_active_users", Good.UP, weekly([100, 100, 100, 70])), 0.05)
    users_up = judge(indicator("weekly_active_users", Good.UP, weekly([100, 100, 100, 130])), 0.05)
    back_down = judge(indicator("next_week_return_rate", Good.UP, weekly([0.6, 0.6, 0.6, 0.4])), 0.05)
    [warning] = combined_flags([regeneration, users_down])
    assert ABANDON_WARNING in warning
    assert "weekly active users" in warning
    assert combined_flags([regeneration, users_up]) == []
    assert "(next week return rate)" in combined_flags([regeneration, users_up, back_down])[0]
    regeneration_up = judge(indicator("regeneration_rate", Good.DOWN, weekly([0.3, 0.3, 0.3, 0.4])), 0.05)
    assert combined_flags([regeneration_up, users_down]) == []


def _week_rows(values: list[tuple[float, float]]) -> list[dict[str, Any]]:
    return [
        {
            "week_start": MONDAY + n * WEEK,
            "prompt_version": "(all)",
            "regeneration_rate": r,
            "active_users": u,
            "interactions_per_active_user": 3.0,
            "next_week_return_rate": None,
            "avg_edit_distance": None,
            "avg_time_to_first_correction_ms": None,
            "interactions": 100,
        }
        for n, (r, u) in enumerate(values)
    ]


def test_assemble_judges_complete_weeks_and_raises_the_combined_flag() -> None:
    rows = _week_rows([(0.40, 100), (0.40, 100), (0.40, 100), (0.40, 100), (0.30, 70), (0.10, 5)])
    end = MONDAY + 6 * WEEK
    loop = assemble(
        start=MONDAY,
        end=end,
        as_of=MONDAY + 5 * WEEK + timedelta(days=2),  # the sixth week in progress
        weekly=rows,
        engagement=rows,
        cohorts=[],
        tickets=[],
        velocity=[],
        experiments=[],
        fixes=[],
        fix_summary={},
        regeneration_target=0.15,
        time_to_fix_target_days=14,
        tolerance=0.05,
    )
    regeneration = loop.indicator("regeneration_rate")
    assert regeneration.latest == 0.30  # not the 10 % of the week in progress
    assert [p.complete for p in regeneration.points] == [True] * 5 + [False]
    assert loop.indicator("weekly_active_users").direction == "down"
    assert any(ABANDON_WARNING in flag for flag in loop.flags)
    assert loop.weeks == [MONDAY + n * WEEK for n in range(6)]
    assert sparkline([1, None, 3, 2]) == "▁·█▅"
    for width in (80, 250):  # 80: what a pipe or CI gets; every verdict whole, none cropped at the edge
        out = Console(record=True, width=width)
        print_loop(loop, out)
        text = out.export_text()
        assert "Is the loop working?" in text
        assert ABANDON_WARNING in " ".join(text.split())
        shown = Counter(text.split())
        words = Counter(w for i in loop.indicators for w in f"{i.name} {i.target} {i.verdict}".split())
        assert words - shown == Counter(), f"cut at {width} columns"


# ----------------------------------------------------------------------------------- addresses


GRAMMAR = [
    ("edit: Dear Sir/Madam -> hi <name>", [FixRef("edit", "dear sir/madam", "hi <name>")]),
    ("EDIT:readable->clear ; report 2026-W48 #2", [FixRef("edit", "readable", "clear")]),
    ("delete: closing  paragraph", [FixRef("delete", "closing", "paragraph")]),
    ("insert: thanks; ticket: Too Long", [FixRef("insert", "thanks"), FixRef("ticket", "too long")]),
    ("see https://tracker/1: the greeting; common edit: a -> b", []),
    ("", []),
]
MALFORMED = ["edit: only one side", "edit: a -> ", "delete: closing", "delete: end paragraph", "ticket:  "]


@pytest.mark.parametrize(("text", "refs"), GRAMMAR)
def test_addresses_name_patterns_by_kind_and_leave_prose_alone(text: str, refs: list[FixRef]) -> None:
    assert parse_addresses(text) == refs


@pytest.mark.parametrize("text", MALFORMED)
def test_a_malformed_pattern_is_refused_when_a_version_is_registered(text: str) -> None:
    with pytest.raises(ValueError, match=text.split(":")[0]):
        parse_addresses(text)
    with pytest.raises(ValueError, match="addresses"):
        _version("v9", datetime(2026, 9, 1, tzinfo=UTC), addresses=text)


def test_the_sql_reads_addresses_exactly_as_the_python_grammar(
    chdb_client: Client, chdb_database: str
) -> None:
    migrate(chdb_client, chdb_database)
    texts = [text for text, _ in GRAMMAR] + MALFORMED
    chdb_client.insert(
        f"{chdb_database}.prompt_versions",
        [
            [f"v{n}", None, "t", "c", "", text, "a", datetime(2026, 9, 1, tzinfo=UTC)]
            for n, text in enumerate(texts)
        ],
        column_names=[
            "version",
            "parent",
            "text",
            "change",
            "reasoning",
            "addresses",
            "author",
            "created_at",
        ],
    )
    found = chdb_client.query(
        f"SELECT version, kind, subject, corrected FROM {chdb_database}.time_to_fix ORDER BY version, ref"
    ).result_rows
    got: dict[str, list[FixRef]] = {}
    for version, kind, subject, corrected in found:
        got.setdefault(version, []).append(FixRef(kind, subject, corrected))
    want = {f"v{n}": refs for n, (_, refs) in enumerate(GRAMMAR) if refs}
    assert {v: sorted(r, key=str) for v, r in got.items()} == {v: sorted(r, key=str) for v, r in want.items()}


# ----------------------------------------------------------------------------------- velocity on chdb


def _version(label: str, at: datetime, parent: str | None = None, addresses: str = "") -> PromptVersion:
    return PromptVersion(
        version=label,
        parent=parent,
        text=f"prompt {label}",
        change=f"change of {label}",
        addresses=addresses,
        author="alice",
        created_at=at,
    )


def _interaction_and_edit(user: str, at: datetime, response: str, corrected: str) -> list[Any]:
    x = InteractionEvent(
        event_id=uuid.uuid4(),
        interaction_id=uuid.uuid4(),
        user_id=user,
        session_id=f"{user}-{at:%j%H%M}",
        prompt="p",
        prompt_version="v1",
        model="m",
        response=response,
        response_time_ms=10,
        created_at=at,
    )
    edit = FeedbackEvent(
        event_id=uuid.uuid4(),
        interaction_id=x.interaction_id,
        user_id=user,
        session_id=x.session_id,
        created_at=at + timedelta(seconds=90),
        feedback_type=FeedbackType.EDIT,
        corrected_output=corrected,
    )
    return [x, edit]


def _experiment(
    name: str,
    control: str,
    treatment: str,
    created: datetime,
    ended: datetime | None,
    action: Literal["promote", "revert"] = "promote",
) -> Experiment:
    running = Experiment(
        experiment_id=name,
        revision=1,
        control=control,
        treatment=treatment,
        created_at=created,
        updated_at=created,
    )
    if ended is None:
        return running
    applied = ExperimentAction(
        action=action,
        applied_at=ended,
        applied_by="alice",
        decision=None,
        production_version=treatment if action == "promote" else control,
        retired_version=control if action == "promote" else treatment,
    )
    status = ExperimentStatus.PROMOTED if action == "promote" else ExperimentStatus.REVERTED
    return running.model_copy(
        update={"revision": 2, "status": status, "applied": applied, "updated_at": ended}
    )


def _approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value)


def test_velocity_and_time_to_fix_equal_the_oracle(
    chdb_client: Client, chdb_database: str, tmp_path: Path
) -> None:
    day = datetime(2026, 9, 1, 10, tzinfo=UTC)
    events = (
        _interaction_and_edit("u1", day, "It keeps code readable and safe.", "It keeps code clear and safe.")
        + _interaction_and_edit("u2", day + timedelta(days=9), "Readable code helps.", "Clear code helps.")
        + _interaction_and_edit(
            "u3", day + timedelta(days=3), "The answer.\n\nIn summary, bye.", "The answer."
        )
    )
    load_through_logic(chdb_client, chdb_database, events)
    first_edit = events[1].created_at  # readable -> clear, the earliest of the two
    first_delete = events[5].created_at
    ticket_at = day + timedelta(days=2)
    tickets = [
        SupportTicket(
            event_id=uuid.uuid4(),
            ticket_id=f"T{n}",
            user_id="u9",
            created_at=ticket_at + n * timedelta(days=1),
            category=category,
            ai_quality=ai,
        )
        for n, (category, ai) in enumerate([("billing", False), ("Too Long", True), ("too long", True)])
    ]
    insert_records(chdb_client, chdb_database, topics.SUPPORT_TICKETS, tickets)
    v2_at, v3_at = day + timedelta(days=14), day + timedelta(days=30)
    registry = PromptRegistry(
        tmp_path / "prompts.json",
        [
            _version("v1", day - timedelta(days=31)),
            _version("v2", v2_at, "v1", "edit: readable -> clear; ticket: too long; report 2026-W37 #1"),
            _version("v3", v3_at, "v2", "delete: closing paragraph; insert: never seen"),
        ],
    )
    mirror(registry, chdb_client, chdb_database)
    promoted_at = v2_at + timedelta(days=10)
    experiments = [
        _experiment("exp-a", "v1", "v2", v2_at + timedelta(days=1), promoted_at),
        _experiment("exp-b", "v2", "v3", v3_at + timedelta(days=1), None),
        _experiment("exp-c", "v2", "v3b", v3_at + timedelta(days=4), v3_at + timedelta(days=12), "revert"),
    ]
    insert_records(chdb_client, chdb_database, topics.EXPERIMENTS, experiments)

    def ms(value: datetime) -> int:
        return round(value.timestamp() * 1000)

    def rows(sql: str) -> list[dict[str, Any]]:
        result = chdb_client.query(sql.replace("{db}", chdb_database))
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]

    # Time to fix: each addressed pattern from its first appearance; 'insert: never seen' never appeared.
    fixes, median_register, median_promote = expected_time_to_fix(
        [
            ("v2", "edit: readable -> clear", ms(v2_at), ms(promoted_at), ms(first_edit)),
            ("v2", "ticket: too long", ms(v2_at), ms(promoted_at), ms(tickets[1].created_at)),
            ("v3", "delete: closing paragraph", ms(v3_at), None, ms(first_delete)),
            ("v3", "insert: never seen", ms(v3_at), None, None),
        ]
    )
    got = {
        (r["version"], r["ref"]): (r["days_to_register"], r["days_to_promote"])
        for r in rows("SELECT * FROM {db}.time_to_fix")
    }
    assert got == {(v, ref): (_approx(a), _approx(b)) for v, ref, a, b in fixes}
    everything = "start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00'"
    [summary] = rows(f"SELECT * FROM {{db}}.time_to_fix_summary_between({everything})")
    assert (summary["addressed_patterns"], summary["measured"], summary["promoted"]) == (4, 3, 2)
    assert summary["median_days_to_register"] == pytest.approx(median_register)
    assert summary["median_days_to_promote"] == pytest.approx(median_promote)

    # Versions registered and promoted per month.
    velocity = {
        ms(r["month_start"]): (
            r["versions_registered"],
            r["versions_promoted"],
            list(r["registered_versions"]),
            list(r["promoted_versions"]),
        )
        for r in rows("SELECT * FROM {db}.prompt_velocity")
    }
    registered = {v.version: ms(v.created_at) for v in registry}
    assert velocity == expected_velocity(registered, {"v2": ms(promoted_at)})
    assert month_of(ms(v2_at)) == ms(datetime(2026, 9, 1, tzinfo=UTC))

    # Experiments running per week, from the first data to now.
    runs = {
        "exp-a": (ms(experiments[0].created_at), ms(promoted_at)),
        "exp-b": (ms(experiments[1].created_at), None),
        "exp-c": (ms(experiments[2].created_at), ms(v3_at + timedelta(days=12))),
    }
    weeks = {
        ms(r["week_start"]): list(r["experiment_ids"])
        for r in rows("SELECT * FROM {db}.experiments_concurrent")
    }
    expected = expected_concurrent(runs, ms(day), ms(datetime.now(UTC)))
    assert weeks == expected
    assert max(len(ids) for ids in weeks.values()) == 2  # exp-b and exp-c overlap
    assert week_of(ms(day)) == ms(datetime(2026, 8, 31, tzinfo=UTC))

    # The report of the week v3 was registered in shows the section, its fixes and their medians.
    report = build_report(chdb_client, chdb_database, v3_at)
    loop = report.loop
    assert [f["version"] for f in loop.fixes] == ["v2", "v2", "v3", "v3"]
    assert loop.indicator("days_to_promote").level == pytest.approx(median_promote)
    page = render_html(report)
    assert "Is the loop working?" in page
    assert 'id="time-to-fix"' in page


def test_every_table_and_view_is_in_the_readmes_clickhouse_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    created, dropped = set(), set()
    for migration in migrations():
        created |= set(
            re.findall(
                r"CREATE (?:OR REPLACE )?(?:TABLE|VIEW) (?:IF NOT EXISTS )?\{db\}\.(\w+)", migration.sql
            )
        )
        dropped |= set(re.findall(r"DROP TABLE (?:IF EXISTS )?\{db\}\.(\w+)", migration.sql))
    documented: set[str] = set()
    for first_cell in re.findall(r"^\| ([^|]+) \|", readme, re.MULTILINE):
        for name, between in re.findall(r"`(\w+)(\(_between\))?`", first_cell):
            documented |= {name, f"{name}_between"} if between else {name}
    assert sorted(created - dropped - documented) == []
