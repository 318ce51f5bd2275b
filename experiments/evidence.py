"""The SQL a decision or an alert carries as its evidence: queries over ``interaction_outcomes``. Pure text.

Each metric is written here once in ClickHouse terms (:data:`METRIC_SQL`), with the same definition as
:func:`experiments.stats.outcome_values` gives it in Python.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas import format_ms
from schemas.experiments import OutcomeMetric


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_time(epoch_ms: int) -> str:
    """A DateTime64(3, 'UTC') literal of epoch milliseconds."""
    text = format_ms(epoch_ms).removesuffix("Z").replace("T", " ")
    return f"toDateTime64('{text}', 3, 'UTC')"


#: How each metric is computed per row group in ClickHouse (the same definitions as ``outcome_values``).
METRIC_SQL: Mapping[OutcomeMetric, str] = {
    OutcomeMetric.REGENERATION_RATE: "avg(regenerated)",
    OutcomeMetric.CORRECTION_RATE: "avg(corrected)",
    OutcomeMetric.ABANDONMENT_RATE: "avg(abandoned)",
    OutcomeMetric.EDIT_DISTANCE: "avgIf(edit_distance_norm, edited)",
    OutcomeMetric.RESPONSE_TIME: "avg(response_time_ms)",
}


def experiment_evidence_sql(database: str, experiment_id: str) -> str:
    """SQL that shows each arm's users, interactions and metrics, from ``interaction_outcomes``."""
    metrics = ",\n       ".join(f"{expr} AS {metric.value}" for metric, expr in METRIC_SQL.items())
    return (
        f"SELECT variant, uniqExact(user_id) AS users, count() AS interactions,\n       {metrics}\n"
        f"FROM {database}.interaction_outcomes FINAL\n"
        f"WHERE experiment_id = {sql_string(experiment_id)}\n"
        "GROUP BY variant ORDER BY variant"
    )


def regression_evidence_sql(
    database: str, version: str, metric: OutcomeMetric, window_ms: int, from_ms: int, to_ms: int
) -> str:
    """SQL that shows the metric of ``version`` per window between ``from_ms`` and ``to_ms``."""
    extra = ", countIf(edited) AS edits" if metric is OutcomeMetric.EDIT_DISTANCE else ""
    return (
        f"SELECT toStartOfInterval(interaction_created_at, INTERVAL {window_ms // 1000} SECOND) "
        f"AS window_start,\n       count() AS interactions, uniqExact(user_id) AS users{extra},\n"
        f"       {METRIC_SQL[metric]} AS {metric.value}\n"
        f"FROM {database}.interaction_outcomes FINAL\n"
        f"WHERE prompt_version = {sql_string(version)}\n"
        f"  AND interaction_created_at >= {sql_time(from_ms)}\n"
        f"  AND interaction_created_at < {sql_time(to_ms)}\n"
        "GROUP BY window_start ORDER BY window_start"
    )


__all__ = ["METRIC_SQL", "experiment_evidence_sql", "regression_evidence_sql", "sql_string", "sql_time"]
