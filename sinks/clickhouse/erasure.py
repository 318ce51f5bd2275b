"""Erasure in ClickHouse: every row of a user, in every table that has one, deleted.

Which tables: every table of the database with a ``user_id`` column (found in ``system.columns``,
so a table added by a later migration is covered without a change here), and the dead letters
whose payload names the user (``value_text`` is the original JSON message). The views only read
these tables. Aggregates that name no user (``prompt_version_metrics``, experiment decisions,
regression alerts) stay.

Rows go with a lightweight ``DELETE``: invisible to every query at once, their bytes removed from
disk when ClickHouse next merges their parts (``OPTIMIZE TABLE ... FINAL`` forces it).
"""

from __future__ import annotations

from collections.abc import Collection

from clickhouse_connect.driver.client import Client

from infra.settings import check_database_name

#: Where a dead letter's user is: the original message, when it was JSON with a user_id.
_DEAD_LETTER_USER = "JSONExtractString(ifNull(value_text, ''), 'user_id')"


def user_tables(client: Client, database: str) -> list[str]:
    """The tables (not views) of ``database`` that have a ``user_id`` column."""
    check_database_name(database)
    found = client.query(
        "SELECT c.table FROM system.columns AS c INNER JOIN system.tables AS t "
        "ON c.database = t.database AND c.table = t.name "
        "WHERE c.database = %(db)s AND c.name = 'user_id' AND t.engine LIKE '%%MergeTree' ORDER BY c.table",
        parameters={"db": database},
    ).result_rows
    return [str(row[0]) for row in found]


def _conditions(client: Client, database: str) -> dict[str, str]:
    """Per table holding user rows, the condition that selects the rows of ``%(users)s``."""
    where = dict.fromkeys(user_tables(client, database), "user_id IN %(users)s")
    dead_letters = client.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'dead_letters'",
        parameters={"db": database},
    ).result_rows[0][0]
    if dead_letters:
        where["dead_letters"] = f"{_DEAD_LETTER_USER} IN %(users)s"
    return where


def remaining_rows(client: Client, database: str, users: Collection[str]) -> dict[str, int]:
    """Rows of ``users`` in ``database``, per table that has any (empty: none left)."""
    check_database_name(database)
    wanted = sorted(set(users))
    if not wanted:
        return {}
    found: dict[str, int] = {}
    for table, condition in _conditions(client, database).items():
        sql = f"SELECT count() FROM {database}.{table} WHERE {condition}"  # noqa: S608
        count = int(client.query(sql, parameters={"users": wanted}).result_rows[0][0])
        if count:
            found[table] = count
    return found


def erase_users(client: Client, database: str, users: Collection[str]) -> dict[str, int]:
    """Delete every row of ``users`` from ``database``; return the rows deleted per table. Tables
    without any are not touched (a DELETE is a mutation even when nothing matches), so erasing users
    again is cheap. ``database`` must be a plain identifier; the users are bound as parameters."""
    found = remaining_rows(client, database, users)
    conditions = _conditions(client, database) if found else {}
    for table in found:
        client.command(
            # the database is checked, the table comes from system.tables, the users are parameters
            f"DELETE FROM {database}.{table} WHERE {conditions[table]}",  # noqa: S608
            parameters={"users": sorted(set(users))},
        )
    return found


__all__ = ["erase_users", "remaining_rows", "user_tables"]
