"""Retention of raw text: TTLs from the settings, applied after the numbered migrations.

The migrations are fixed SQL; how long raw text is kept is a setting (``retention.raw_text_days``),
so this step runs after them, from ``feedbackloop migrate`` and whenever the sink opens its backend,
and brings the tables to the setting:

* **Column TTLs** on the raw text of the event tables (:data:`RAW_TEXT`): once a row's event time is
  older than the setting, its text is replaced by the column's default -- ``''``, ``NULL``, an empty
  map, or (for an edit's operation texts, see migration 0015) as many empty strings as it has
  operations. The rows stay with their ids, flags and numbers, so every rate, count and aggregate is
  what it was; only views that show the text itself show less.
* **Table TTLs** on tables that are nothing but raw text (:data:`RAW_ROWS`: the dead letters, whose
  payload is the whole point of a row): their rows expire whole.

The step reads each table's definition and changes only what differs from the setting, because a
changed TTL makes ClickHouse rewrite the column in every part (``materialize_ttl_after_modify``).
``None`` leaves the TTLs as they are (a command run without the setting never drops a retention
another process applied); ``0`` removes them (text kept until erased). ClickHouse applies TTLs in
merges: expired text is gone within ``merge_with_ttl_timeout`` (4 h by default) of its due time,
or at once with ``OPTIMIZE TABLE ... FINAL``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from infra.settings import check_database_name

#: Raw-text columns, per table: (the event-time column their age counts from, the columns).
RAW_TEXT: dict[str, tuple[str, tuple[str, ...]]] = {
    "ai_interactions": ("created_at", ("prompt", "response", "metadata")),
    "ai_feedback": ("created_at", ("corrected_output", "comment", "original_output")),
    "interaction_outcomes": ("interaction_created_at", ("prompt",)),
    "edit_operations": (
        "created_at",
        ("op_original", "op_corrected", "op_original_norm", "op_corrected_norm"),
    ),
}

#: Tables whose rows are raw text and expire whole: table -> the time column their age counts from.
RAW_ROWS: dict[str, str] = {"dead_letters": "dead_lettered_at"}

_TTL = r"TTL (\w+) \+ toIntervalDay\((\d+)\)"


@dataclass(frozen=True)
class RetentionChange:
    """One TTL set or removed: ``column`` None for a table TTL; ``days`` None for a removal."""

    table: str
    column: str | None
    days: int | None

    def __str__(self) -> str:
        what = f"{self.table}.{self.column}" if self.column else f"{self.table} (rows)"
        return f"{what}: {'kept until erased' if self.days is None else f'{self.days} days'}"


def _definition(client: Client, database: str, table: str) -> str | None:
    rows = client.query(
        "SELECT create_table_query FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        parameters={"db": database, "t": table},
    ).result_rows
    return str(rows[0][0]) if rows else None


def column_ttl_days(definition: str, column: str) -> int | None:
    """The days of ``column``'s TTL in a ``CREATE TABLE`` statement as ClickHouse shows it (None:
    no TTL of the form this module sets)."""
    # The column's definition runs to the next backquoted name or to the end of the column list.
    found = re.search(rf"`{re.escape(column)}` (?:(?!\) ENGINE)[^`])*?\b{_TTL}", definition)
    return int(found.group(2)) if found else None


def table_ttl_days(definition: str) -> int | None:
    """The days of the table TTL in a ``CREATE TABLE`` statement (None: no TTL of this module's form)."""
    found = re.search(rf"\) ENGINE = .*?\b{_TTL}", definition)
    return int(found.group(2)) if found else None


def retention_state(client: Client, database: str) -> dict[tuple[str, str | None], int | None]:
    """The TTL days each raw-text column (``(table, column)``) and raw-row table (``(table, None)``)
    of ``database`` has now; tables that do not exist are left out."""
    check_database_name(database)
    state: dict[tuple[str, str | None], int | None] = {}
    for table, (_time, columns) in RAW_TEXT.items():
        definition = _definition(client, database, table)
        if definition is not None:
            state.update({(table, column): column_ttl_days(definition, column) for column in columns})
    for table in RAW_ROWS:
        definition = _definition(client, database, table)
        if definition is not None:
            state[(table, None)] = table_ttl_days(definition)
    return state


def apply_retention(client: Client, database: str, days: int | None) -> list[RetentionChange]:
    """Bring the raw-text TTLs of ``database`` (migrated) to ``days``; return what changed.

    ``None``: leave them as they are; ``0``: remove them; ``N``: text older than N days (event time)
    is blanked, dead letters older than N days deleted. ``database`` must be a plain identifier."""
    check_database_name(database)
    if days is None:
        return []
    wanted = days or None
    changes: list[RetentionChange] = []
    for (table, column), have in retention_state(client, database).items():
        if have == wanted:
            continue
        target = f"{database}.{table}"
        if column is None:
            time_column = RAW_ROWS[table]
            action = "REMOVE TTL" if wanted is None else f"MODIFY TTL {time_column} + INTERVAL {wanted} DAY"
            client.command(f"ALTER TABLE {target} {action}")
        else:
            time_column = RAW_TEXT[table][0]
            ttl = "REMOVE TTL" if wanted is None else f"TTL {time_column} + INTERVAL {wanted} DAY"
            client.command(f"ALTER TABLE {target} MODIFY COLUMN {column} {ttl}")
        changes.append(RetentionChange(table, column, wanted))
    return changes


__all__ = [
    "RAW_ROWS",
    "RAW_TEXT",
    "RetentionChange",
    "apply_retention",
    "column_ttl_days",
    "retention_state",
    "table_ttl_days",
]
