"""Compare what ClickHouse holds with the ground truth of a generated workload, exactly."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from producers.synthetic import Workload
from schemas import FeedbackEvent, InteractionEvent
from tests.support.oracle import (
    expected_cohorts,
    expected_engagement,
    expected_outcomes,
    expected_regeneration_rates,
    expected_ticket_links,
    expected_ticket_rates,
    expected_weekly_indicators,
    expected_windows,
)


def _ms(value: datetime) -> int:
    return round(value.replace(tzinfo=UTC).timestamp() * 1000)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def ground_truth_mismatches(client: Client, db: str, workload: Workload, limit: int = 20) -> list[str]:
    """Every difference between ClickHouse and the ground truth (empty when they are equal)."""
    problems: list[str] = []
    expected = expected_outcomes(workload)

    # interaction_outcomes: one row per interaction, every field.
    got = {
        str(r["interaction_id"]): r for r in _rows(client, f"SELECT * FROM {db}.interaction_outcomes FINAL")
    }
    if set(got) != set(expected):
        problems.append(f"outcomes: {len(got)} rows, expected {len(expected)}")
    for iid, want in expected.items():
        row = got.get(iid)
        if row is None:
            continue
        for name, value in want.items():
            actual = _ms(row["interaction_created_at"]) if name == "interaction_created_at_ms" else row[name]
            if not _same(actual, value):
                problems.append(f"outcome {iid} {name}: {actual!r} != {value!r}")

    # prompt_version_metrics: one row per window and key, every aggregate.
    windows = expected_windows(expected)
    rows = _rows(client, f"SELECT * FROM {db}.prompt_version_metrics FINAL")
    got_windows = {
        (_ms(r["window_start"]), r["prompt_version"], r["model"], r["input_category"]): r for r in rows
    }
    if set(got_windows) != set(windows):
        problems.append(f"metrics: {len(got_windows)} windows, expected {len(windows)}")
    for key, want in windows.items():
        row = got_windows.get(key)
        for name, value in want.items():
            if row is not None and not _same(row[name], value):
                problems.append(f"window {key} {name}: {row[name]!r} != {value!r}")

    # regeneration_rates
    rates = {r["prompt_version"]: r for r in _rows(client, f"SELECT * FROM {db}.regeneration_rates")}
    for version, (total, regenerated, rate) in expected_regeneration_rates(expected).items():
        r = rates.get(version)
        if r is None or (r["total_interactions"], r["regenerations"]) != (total, regenerated):
            problems.append(f"regeneration_rates {version}: {r} != {(total, regenerated, rate)}")
        elif not _same(r["regeneration_rate"], rate):
            problems.append(f"regeneration_rate {version}: {r['regeneration_rate']} != {rate}")

    # Raw tables: each event once, however often it was delivered.
    events = list(workload.events)
    interactions = {e.event_id for e in events if isinstance(e, InteractionEvent)}
    feedback = {e.event_id for e in events if isinstance(e, FeedbackEvent)}
    n_interactions = client.query(f"SELECT count() FROM {db}.ai_interactions FINAL").result_rows[0][0]
    n_feedback = client.query(f"SELECT count() FROM {db}.ai_feedback FINAL").result_rows[0][0]
    if n_interactions != len(interactions):
        problems.append(f"ai_interactions: {n_interactions} rows, expected {len(interactions)}")
    if n_feedback != len(feedback):
        problems.append(f"ai_feedback: {n_feedback} rows, expected {len(feedback)}")
    letters = client.query(
        f"SELECT count() FROM {db}.dead_letters FINAL WHERE error_type != 'orphan_feedback'"
    ).result_rows[0][0]
    if letters != workload.malformed:
        problems.append(f"dead_letters: {letters}, expected {workload.malformed} malformed messages")
    return problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])


def view_mismatches(client: Client, db: str, workload: Workload) -> list[str]:
    """The analyst views against the ground truth (counts computed here from the oracle)."""
    expected = expected_outcomes(workload)
    problems: list[str] = []
    by_version: dict[str, list[dict[str, Any]]] = {}
    for o in expected.values():
        by_version.setdefault(o["prompt_version"], []).append(o)
    summary = {r["prompt_version"]: r for r in _rows(client, f"SELECT * FROM {db}.prompt_version_summary")}
    for version, rows in by_version.items():
        n = len(rows)
        want = {
            "interactions": n,
            "users": len({r["user_id"] for r in rows}),
            "regeneration_rate": sum(r["regenerated"] for r in rows) / n,
            "edit_rate": sum(r["edited"] for r in rows) / n,
            "correction_rate": sum(r["corrected"] for r in rows) / n,
            "abandonment_rate": sum(r["abandoned"] for r in rows) / n,
            "rephrase_rate": sum(r["rephrased"] for r in rows) / n,
            "completion_without_edit_rate": sum(r["completed_without_edit"] for r in rows) / n,
        }
        got = summary.get(version, {})
        for name, value in want.items():
            if not _same(got.get(name), value):
                problems.append(f"prompt_version_summary {version} {name}: {got.get(name)!r} != {value!r}")

    prompts: dict[str, list[dict[str, Any]]] = {}
    for o in expected.values():
        prompts.setdefault(o["prompt"], []).append(o)
    prone = {r["prompt"]: r for r in _rows(client, f"SELECT * FROM {db}.correction_prone_prompts")}
    ranked = sorted(
        (
            (sum(r["corrected"] for r in rows) / len(rows), len(rows), p)
            for p, rows in prompts.items()
            if len(rows) > 10
        ),
        key=lambda t: (-t[0], -t[1], t[2]),
    )[:50]
    if set(prone) != {p for _, _, p in ranked}:
        problems.append(
            f"correction_prone_prompts: {sorted(prone)[:3]}... != {[p for *_, p in ranked][:3]}..."
        )
    for rate, attempts, prompt in ranked:
        row = prone.get(prompt)
        if row is not None and (row["total_attempts"] != attempts or not _same(row["correction_rate"], rate)):
            problems.append(f"correction_prone_prompts {prompt!r}: {row} != {(attempts, rate)}")

    weekly = _rows(client, f"SELECT sum(interactions) AS n FROM {db}.weekly_dashboard")
    if weekly[0]["n"] != len(expected):
        problems.append(f"weekly_dashboard counts {weekly[0]['n']} interactions, expected {len(expected)}")
    rollup = _rows(
        client, f"SELECT grain, sum(interactions) AS n FROM {db}.prompt_version_metrics_rollup GROUP BY grain"
    )
    for row in rollup:
        if row["n"] != len(expected):
            problems.append(f"rollup {row['grain']} counts {row['n']} interactions, expected {len(expected)}")
    return problems


def loop_mismatches(client: Client, db: str, outcomes: dict[str, dict[str, Any]], tickets: Any) -> list[str]:
    """The lagging-indicator views (engagement, cohort retention, support tickets) against the ground
    truth of ``outcomes`` (:func:`expected_outcomes` of every workload) and the tickets published."""
    problems: list[str] = []

    def compare(view: str, got: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]]) -> None:
        if set(got) != set(want):
            missing, extra = sorted(set(want) - set(got))[:3], sorted(set(got) - set(want))[:3]
            problems.append(
                f"{view}: {len(got)} rows, expected {len(want)} (missing {missing}, extra {extra})"
            )
        for key, row in want.items():
            for name, value in row.items():
                if key in got and not _same(got[key][name], value):
                    problems.append(f"{view} {key} {name}: {got[key][name]!r} != {value!r}")

    engagement = {
        (_ms(r["week_start"]), r["prompt_version"]): r
        for r in _rows(client, f"SELECT * FROM {db}.engagement")
    }
    compare("engagement", engagement, expected_engagement(outcomes))
    weekly = {
        (_ms(r["week_start"]), r["prompt_version"]): r
        for r in _rows(client, f"SELECT * FROM {db}.weekly_indicators")
    }
    compare("weekly_indicators", weekly, expected_weekly_indicators(outcomes))
    cohorts = {_ms(r["cohort_week"]): r for r in _rows(client, f"SELECT * FROM {db}.cohort_retention")}
    compare("cohort_retention", cohorts, expected_cohorts(outcomes))
    rates = {
        (_ms(r["week_start"]), r["prompt_version"]): r
        for r in _rows(client, f"SELECT * FROM {db}.support_ticket_rates")
    }
    compare("support_ticket_rates", rates, expected_ticket_rates(outcomes, tickets))
    linked = {
        r["ticket_id"]: r["prompt_version"] if r["linked"] else None
        for r in _rows(client, f"SELECT ticket_id, linked, prompt_version FROM {db}.support_tickets_linked")
    }
    want_links = expected_ticket_links(outcomes, tickets)
    if linked != want_links:
        wrong = sorted(
            k for k in set(linked) | set(want_links) if linked.get(k, "?") != want_links.get(k, "?")
        )
        problems.append(f"support_tickets_linked differs for {len(wrong)} tickets, e.g. {wrong[:3]}")
    return problems
