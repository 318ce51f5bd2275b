"""The sink's pure row mapping and its writer, against the real embedded ClickHouse (chdb, in-process)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from infra.clickhouse import chdb_path
from schemas import topics
from sinks.clickhouse import migrate, migrations
from sinks.clickhouse.writer import Pending, TableWriter
from sinks.rows import TABLES

SPEC = {spec.table: spec for spec in TABLES}


@pytest.fixture
def client(chdb_client: Client) -> Client:
    """The session's chdb, with a fresh ``unit`` database."""
    chdb_client.command("DROP DATABASE IF EXISTS unit")
    return chdb_client


def test_chdb_urls_take_absolute_and_relative_directories() -> None:
    assert chdb_path("chdb:///var/lib/x") == Path("/var/lib/x")
    assert chdb_path("chdb://.feedbackloop/chdb") == Path(".feedbackloop/chdb")
    assert chdb_path("http://localhost:8123") is None


def test_migrations_are_numbered_and_apply_once(client: Client) -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
    assert [m.version for m in migrate(client, "unit")] == versions
    assert migrate(client, "unit") == []


def test_every_topic_routes_to_a_table_with_its_columns(client: Client) -> None:
    migrate(client, "unit")
    assert {s.topic for s in TABLES} >= {topics.INTERACTIONS, topics.FEEDBACK_JOINED, topics.OUTCOMES}
    for spec in TABLES:
        columns = {row[0] for row in client.query(f"DESCRIBE TABLE unit.{spec.table}").result_rows}
        assert set(spec.columns) <= columns, spec.table


def _interaction_json(**overrides: Any) -> bytes:
    import orjson

    event = {
        "event_id": str(uuid.uuid4()),
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u",
        "session_id": "s",
        "prompt": "p",
        "prompt_version": "v1.0",
        "model": "m",
        "response": "r",
        "response_time_ms": 5,
        "created_at": "2026-11-26T10:00:00Z",
        "metadata": {"app": "docs"},
    }
    event.update(overrides)
    return orjson.dumps(event)


def test_rows_validate_the_contract_before_they_reach_clickhouse() -> None:
    spec = SPEC["ai_interactions"]
    row = dict(zip(spec.columns, spec.to_row(_interaction_json()), strict=True))
    assert row["metadata"] == {"app": "docs"}
    assert row["schema_version"] == 1
    with pytest.raises(ValidationError):
        spec.to_row(_interaction_json(response_time_ms="slow"))


def test_the_writer_inserts_batches_and_replays_fold_into_one_row(client: Client) -> None:
    migrate(client, "unit")
    spec = SPEC["ai_interactions"]
    writer = TableWriter(client, "unit.ai_interactions", spec.columns, lambda _p, _e: None)
    message = _interaction_json()
    for _ in range(3):  # the same event delivered three times
        writer.add(spec.to_row(message), source=None)
    assert writer.flush() == 3
    event_id = spec.to_row(message)[1]
    count = client.query(
        "SELECT count() FROM unit.ai_interactions FINAL WHERE event_id = {e:UUID}", parameters={"e": event_id}
    ).result_rows[0][0]
    assert count == 1


def test_rows_clickhouse_refuses_are_isolated_and_dead_lettered_the_rest_inserted(client: Client) -> None:
    migrate(client, "unit")
    client.command(
        "CREATE TABLE IF NOT EXISTS unit.strict (id UInt32, name String) ENGINE = MergeTree ORDER BY id"
    )
    refused: list[tuple[Any, str]] = []
    writer = TableWriter(
        client, "unit.strict", ("id", "name"), lambda p, e: refused.append((p.source, e)),
        max_retries=1, backoff_s=0.0,
    )  # fmt: skip
    for i in range(10):
        writer.add([i if i != 7 else "seven", f"n{i}"], source=i)
    assert writer.flush() == 9
    assert [source for source, _ in refused] == [7]
    assert client.query("SELECT count() FROM unit.strict").result_rows[0][0] == 9
    assert writer.refused == 1
    assert isinstance(refused[0][1], str)


def test_pending_rows_remember_their_source() -> None:
    assert Pending([1], "m").source == "m"
