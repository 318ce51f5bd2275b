"""One interaction, one owner, in ClickHouse: an id reused in another session adds a row, replaces none."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from schemas import InteractionOutcome
from sinks.clickhouse import migrate, migrations
from sinks.rows import TABLES
from tests.support.outcomes import neutral_signals

OWNED = 13  # the migration that puts the session into the keys


def _spec(table: str) -> tuple[str, ...]:
    return next(s.columns for s in TABLES if s.table == table)


def _outcome_row(iid: uuid.UUID, session: str, version: int) -> list[object]:
    at = datetime(2026, 12, 4, tzinfo=UTC)
    outcome = InteractionOutcome.model_validate(
        {
            **neutral_signals(),
            "interaction_id": iid,
            "version": version,
            "session_id": session,
            "user_id": f"user-of-{session}",
            "prompt": "p",
            "prompt_version": "v1",
            "model": "m",
            "input_category": None,
            "experiment_id": None,
            "variant": None,
            "response_chars": 1,
            "response_time_ms": 1,
            "interaction_created_at": at,
            "settled_at": at,
            "amended": False,
            "feedback_events": 0,
            "next_interaction_id": None,
        }
    )
    return [getattr(outcome, c) for c in _spec("interaction_outcomes")]


def test_an_interaction_id_reused_in_another_session_never_replaces_the_owners_outcome(
    chdb_client: Client, chdb_database: str
) -> None:
    migrate(chdb_client, chdb_database)
    iid = uuid.uuid4()
    rows = [_outcome_row(iid, "victim", 2), _outcome_row(iid, "mallory", 9)]
    columns = list(_spec("interaction_outcomes"))
    chdb_client.insert(f"{chdb_database}.interaction_outcomes", rows, column_names=columns)
    found = chdb_client.query(
        f"SELECT session_id, version FROM {chdb_database}.interaction_outcomes FINAL ORDER BY session_id"
    ).result_rows
    assert found == [("mallory", 9), ("victim", 2)]


def test_the_ownership_migration_keeps_every_row_it_rebuilds(chdb_client: Client, chdb_database: str) -> None:
    chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {chdb_database}")
    before = [m for m in migrations() if m.version < OWNED]
    for migration in before:
        for statement in migration.statements(chdb_database):
            chdb_client.command(statement)
    columns = _spec("ai_interactions")
    row = {
        "schema_version": 1,
        "event_id": uuid.uuid4(),
        "interaction_id": uuid.uuid4(),
        "user_id": "u",
        "session_id": "s",
        "prompt": "p",
        "prompt_version": "v1",
        "model": "m",
        "response": "r",
        "response_time_ms": 5,
        "created_at": datetime(2026, 12, 4, tzinfo=UTC),
        "regenerated_from": None,
        "input_category": None,
        "experiment_id": None,
        "variant": None,
        "metadata": {"k": "v"},
    }
    chdb_client.insert(
        f"{chdb_database}.ai_interactions", [[row[c] for c in columns]], column_names=list(columns)
    )
    (owned,) = [m for m in migrations() if m.version == OWNED]
    for statement in owned.statements(chdb_database):
        chdb_client.command(statement)
    assert chdb_client.query(
        f"SELECT event_id, metadata FROM {chdb_database}.ai_interactions"
    ).result_rows == [(row["event_id"], {"k": "v"})]
    found = chdb_client.query(
        f"SELECT name, sorting_key FROM system.tables WHERE database = '{chdb_database}' "
        "AND name IN ('ai_interactions', 'interaction_outcomes')"
    )
    keys = {str(name): str(key) for name, key in found.result_rows}
    assert keys == {
        "ai_interactions": "prompt_version, created_at, event_id, session_id",
        "interaction_outcomes": "prompt_version, interaction_id, session_id",
    }
