"""Reading the insight views (sinks/clickhouse/migrations/0005_insights.sql) for a time range.

Every function returns plain rows (``dict`` per row, column name -> value) straight from the
views, so what the report shows is what ClickHouse says. The views hold the logic; this module
only binds the range and the thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from infra.settings import InsightSettings, check_database_name

Row = dict[str, Any]

#: Settings the SQL views read from ``insight_settings`` (name -> InsightSettings attribute).
SQL_SETTINGS = (
    "user_weight_cap",
    "min_pattern_edits",
    "min_pattern_users",
    "min_deletion_share",
    "spike_ratio",
    "spike_min_interactions",
    "spike_min_z",
)

#: Corrective feedback: what counts as a user's correction (as in the views).
CORRECTIONS = ("edit", "regenerate", "thumbs_down")


def rows(client: Client, sql: str, parameters: Mapping[str, Any] | None = None) -> list[Row]:
    """Run ``sql``; each row as a dict."""
    result = client.query(sql, parameters=dict(parameters) if parameters else None)
    names = list(result.column_names)
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def _ts(value: datetime) -> str:
    # Literal for a parameterized view's DateTime64(3) argument: UTC, no zone suffix.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def between(database: str, view: str, start: datetime, end: datetime, **extra: str) -> str:
    """``{database}.{view}(start = ..., end = ...)``: a parameterized view over ``[start, end)``."""
    args = [f"start = '{_ts(start)}'", f"end = '{_ts(end)}'"]
    args += [f"{name} = '{value}'" for name, value in extra.items()]
    return f"{database}.{view}({', '.join(args)})"


def sync_insight_settings(client: Client, database: str, settings: InsightSettings) -> None:
    """Write the SQL-side thresholds of ``settings`` to ``insight_settings`` (the views read them);
    ``database`` must be a plain identifier (``ValueError`` otherwise)."""
    check_database_name(database)
    now = datetime.now(UTC)
    client.insert(
        f"{database}.insight_settings",
        [[name, float(getattr(settings, name)), now] for name in SQL_SETTINGS],
        column_names=["name", "value", "updated_at"],
    )


def insight_thresholds(client: Client, database: str) -> dict[str, float]:
    """The thresholds the views use right now (``insight_settings``, newest row per name)."""
    found = rows(client, f"SELECT name, value FROM {database}.insight_settings FINAL")  # noqa: S608
    return {r["name"]: float(r["value"]) for r in found}


def latest_interaction(client: Client, database: str) -> datetime | None:
    """Event time of the newest interaction with an outcome, or None when there is none."""
    found = rows(
        client,
        f"SELECT count() AS n, max(interaction_created_at) AS latest "  # noqa: S608
        f"FROM {database}.interaction_outcomes",
    )
    if not found or not found[0]["n"]:
        return None
    latest: datetime = found[0]["latest"]
    return latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest


def data_span(
    client: Client, database: str, start: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    """First and last interaction time within ``[start, end)``, or None."""
    found = rows(
        client,
        f"SELECT count() AS n, min(interaction_created_at) AS first, max(interaction_created_at) AS last "  # noqa: S608
        f"FROM {database}.interaction_outcomes WHERE interaction_created_at >= %(start)s "
        "AND interaction_created_at < %(end)s",
        {"start": start, "end": end},
    )
    if not found or not found[0]["n"]:
        return None
    return found[0]["first"], found[0]["last"]


def version_rates(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per prompt version: counts, rates per interaction and capped, leading indicators."""
    return rows(client, f"SELECT * FROM {between(database, 'version_rates_between', start, end)}")  # noqa: S608


def category_rates(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per prompt version and input category: counts and rates, per interaction and capped."""
    return rows(client, f"SELECT * FROM {between(database, 'category_rates_between', start, end)}")  # noqa: S608


def category_spikes(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Every (version, category) with its ratio to the rest of the version and the spike flags."""
    return rows(client, f"SELECT * FROM {between(database, 'category_spikes_between', start, end)}")  # noqa: S608


def common_edits(
    client: Client, database: str, start: datetime, end: datetime, min_users: float
) -> list[Row]:
    """Replacements made by more than ``min_users`` distinct users within the range (as the view
    ``common_edits`` counts them), most users first; ``frequency`` is the number of edits."""
    view = between(database, "edit_patterns_between", start, end)
    return rows(
        client,
        f"SELECT * FROM {view} WHERE kind = 'replace' AND distinct_users > %(min)s "  # noqa: S608
        "ORDER BY distinct_users DESC, frequency DESC, prompt_version, original_fragment, corrected_fragment",
        {"min": min_users},
    )


def consistent_deletions(
    client: Client, database: str, start: datetime, end: datetime, min_edits: float, min_share: float
) -> list[Row]:
    """Deletions (by position and unit) in more than ``min_edits`` edits and ``min_share`` of them."""
    view = between(database, "deletions_between", start, end)
    return rows(
        client,
        f"SELECT * FROM {view} WHERE deleting_edits > %(min)s AND share >= %(share)s",  # noqa: S608
        {"min": min_edits, "share": min_share},
    )


def edit_size_mix(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per prompt version: small / medium / large edits and their shares."""
    return rows(client, f"SELECT * FROM {between(database, 'edit_size_mix_between', start, end)}")  # noqa: S608


def leading_indicators(
    client: Client, database: str, start: datetime, end: datetime, grain: str
) -> list[Row]:
    """Per period (``hour`` / ``day`` / ``week``) and version: the leading indicators."""
    if grain not in ("hour", "day", "week"):
        raise ValueError(f"grain must be hour, day or week, not {grain!r}")
    view = between(database, "leading_indicators_between", start, end, grain=grain)
    return rows(client, f"SELECT * FROM {view}")  # noqa: S608


def experiment_results(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per experiment and variant, as the outcomes show them."""
    return rows(client, f"SELECT * FROM {between(database, 'experiment_results_between', start, end)}")  # noqa: S608


#: The table the experiments stage's decisions (topic ``ai.experiments.decisions.v1``) land in.
DECISIONS_TABLE = "experiment_decisions"


def experiment_decisions(client: Client, database: str) -> list[Row] | None:
    """The newest decision per experiment, or None while no stage writes decisions to ClickHouse.

    This is the hook for the experiments stage: once a table ``experiment_decisions`` (one row per
    ``ExperimentDecision`` of ``ai.experiments.decisions.v1``) exists, the report shows the newest
    decision of each experiment (highest ``sequence``, else latest ``as_of``) next to the outcomes."""
    exists = rows(
        client,
        "SELECT count() AS n FROM system.tables WHERE database = %(db)s AND name = %(table)s",
        {"db": database, "table": DECISIONS_TABLE},
    )
    if not exists[0]["n"]:
        return None
    found = rows(client, f"SELECT * FROM {database}.{DECISIONS_TABLE}")  # noqa: S608
    newest: dict[str, Row] = {}
    for row in found:
        key = str(row.get("experiment_id"))
        order = (row.get("sequence") or 0, str(row.get("as_of") or ""))
        current = newest.get(key)
        if current is None or order > (current.get("sequence") or 0, str(current.get("as_of") or "")):
            newest[key] = row
    return [newest[k] for k in sorted(newest)]


def changelog(client: Client, database: str) -> list[Row]:
    """The registry's versions (mirrored) with their results and the change against the parent."""
    return rows(client, f"SELECT * FROM {database}.prompt_changelog")  # noqa: S608


def patterns_behind(
    client: Client,
    database: str,
    start: datetime,
    end: datetime,
    prompt_version: str,
    category: str | None = None,
    limit: int = 3,
    *,
    condition: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> list[Row]:
    """The most frequent non-trivial edit operations of a version (and category) in the range;
    ``condition`` (SQL over edit_operation_rows columns, with ``parameters``) narrows them to the
    edits an issue is about."""
    where = "" if category is None else " AND ifNull(input_category, '(none)') = %(category)s"
    if condition:
        where += f" AND ({condition})"
    return rows(
        client,
        "SELECT kind, position, unit, original_norm AS original_fragment, "  # noqa: S608
        "corrected_norm AS corrected_fragment, uniqExact(event_id) AS frequency, "
        "uniqExact(user_id) AS distinct_users, topK(1)(original)[1] AS example_original, "
        "topK(1)(corrected)[1] AS example_corrected "
        f"FROM {database}.edit_operation_rows WHERE prompt_version = %(version)s "
        "AND created_at >= %(start)s AND created_at < %(end)s AND original_norm != corrected_norm"
        f"{where} GROUP BY kind, position, unit, original_fragment, corrected_fragment "
        "ORDER BY frequency DESC, distinct_users DESC, original_fragment LIMIT %(limit)s",
        {
            "version": prompt_version,
            "start": start,
            "end": end,
            "category": category,
            "limit": limit,
            **(parameters or {}),
        },
    )


def outcome_condition(database: str, flag: str) -> str:
    """An edit_operation_rows condition: the edit is of an interaction whose outcome has ``flag``
    (a Bool column of interaction_outcomes, e.g. ``regenerated``), of the same prompt version."""
    if not flag.isidentifier():
        raise ValueError(f"not a column name: {flag!r}")
    return (
        f"interaction_id IN (SELECT interaction_id FROM {database}.interaction_outcomes FINAL "  # noqa: S608
        f"WHERE prompt_version = %(version)s AND {flag})"
    )


def segments_of_operation(
    client: Client,
    database: str,
    start: datetime,
    end: datetime,
    prompt_version: str,
    condition: str,
    parameters: Mapping[str, Any],
) -> list[Row]:
    """Edits per input category among the version's edits with an operation matching ``condition``
    (SQL over edit_operation_rows columns, with ``parameters``)."""
    return rows(
        client,
        "SELECT ifNull(input_category, '(none)') AS input_category, uniqExact(event_id) AS edits "  # noqa: S608
        f"FROM {database}.edit_operation_rows WHERE prompt_version = %(version)s "
        f"AND created_at >= %(start)s AND created_at < %(end)s AND ({condition}) "
        "GROUP BY input_category ORDER BY edits DESC, input_category",
        {"version": prompt_version, "start": start, "end": end, **parameters},
    )


# ----------------------------------------------------------------------------------- is the loop working?


def weekly_indicators(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per week (Monday in ``[start, end)``) and version, and overall ('(all)'): the leading indicators."""
    return rows(client, f"SELECT * FROM {between(database, 'weekly_indicators_between', start, end)}")  # noqa: S608


def engagement(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per week and version, and overall: active users, interactions per user, next-week return rate."""
    return rows(client, f"SELECT * FROM {between(database, 'engagement_between', start, end)}")  # noqa: S608


def cohort_retention(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per first-seen week in the range: the cohort's users and its retention in weeks 1, 2 and 4."""
    return rows(client, f"SELECT * FROM {between(database, 'cohort_retention_between', start, end)}")  # noqa: S608


def support_ticket_rates(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per week and version (linked tickets), and overall: tickets, AI-quality tickets, per 1,000."""
    return rows(client, f"SELECT * FROM {between(database, 'support_ticket_rates_between', start, end)}")  # noqa: S608


def prompt_velocity(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per month starting in the range: prompt versions registered and promoted."""
    return rows(client, f"SELECT * FROM {between(database, 'prompt_velocity_between', start, end)}")  # noqa: S608


def experiments_concurrent(client: Client, database: str, start: datetime, end: datetime) -> list[Row]:
    """Per week in the range (up to now): the experiments that ran at some moment of it."""
    return rows(client, f"SELECT * FROM {between(database, 'experiments_concurrent_between', start, end)}")  # noqa: S608


def time_to_fix(client: Client, database: str) -> list[Row]:
    """Every pattern a registered version addresses, with its first appearance and the days to the
    version's registration and promotion (see ``reporting.prompts.parse_addresses``)."""
    return rows(client, f"SELECT * FROM {database}.time_to_fix")  # noqa: S608


def time_to_fix_summary(client: Client, database: str, start: datetime, end: datetime) -> Row:
    """The median days to registration and to promotion over the versions registered in the range."""
    view = between(database, "time_to_fix_summary_between", start, end)
    return rows(client, f"SELECT * FROM {view}")[0]  # noqa: S608
