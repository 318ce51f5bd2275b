"""Erasure in ClickHouse (chdb): every row of a user goes from every table that has one -- found by
its user_id column, dead letters by their payload -- the views no longer see them, and nobody else's
rows move. And the sink's pieces: whose a row is, and dropping buffered rows."""

from __future__ import annotations

import uuid

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from schemas import DeadLetter, topics
from sinks.batch import TableBuffer
from sinks.clickhouse import ClickHouseTableWriter, classify, migrate
from sinks.clickhouse.erasure import erase_users, remaining_rows, user_tables
from sinks.rows import TABLES
from sinks.runner import _user_reader
from tests.unit.test_retention import _insert_events


@pytest.fixture
def database(chdb_client: Client) -> str:
    """A freshly migrated database with two users' rows in every table, and a dead letter each."""
    name = f"era_{uuid.uuid4().hex[:8]}"
    migrate(chdb_client, name)
    for user in ("gone", "kept"):
        _insert_events(chdb_client, name, 1, user)
        chdb_client.command(
            f"INSERT INTO {name}.support_tickets (event_id, ticket_id, user_id, created_at, category, "
            "ai_quality) VALUES (generateUUIDv4(), %(ticket)s, %(user)s, now64(3), 'wrong_answer', true)",
            parameters={"ticket": f"t-{user}", "user": f"u-{user}"},
        )
        payload = orjson.dumps({"user_id": f"u-{user}", "event_id": str(uuid.uuid4())}).decode()
        chdb_client.command(
            f"INSERT INTO {name}.dead_letters (source_topic, partition, offset, stage, error_type, reason, "
            "value_text, dead_lettered_at) VALUES ('ai.feedback.v1', 1, %(offset)s, 'processor', 'too_late', "
            "'late', %(payload)s, now64(3))",
            parameters={"offset": 100 + len(user), "payload": payload},
        )
    return name


def _count(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def test_the_tables_with_user_rows_are_found_not_listed(chdb_client: Client, database: str) -> None:
    assert user_tables(chdb_client, database) == [
        "ai_feedback",
        "ai_interactions",
        "edit_operations",
        "interaction_outcomes",
        "support_tickets",
    ]


def test_every_row_of_the_user_goes_and_no_other(chdb_client: Client, database: str) -> None:
    db = database
    before_kept = remaining_rows(chdb_client, db, ["u-kept"])
    assert remaining_rows(chdb_client, db, ["u-gone"]) == before_kept
    assert _count(chdb_client, f"SELECT count() FROM {db}.user_contributions WHERE user_id = 'u-gone'") == 1

    deleted = erase_users(chdb_client, db, ["u-gone"])

    assert deleted == {
        "ai_feedback": 1,
        "ai_interactions": 1,
        "edit_operations": 1,
        "interaction_outcomes": 1,
        "support_tickets": 1,
        "dead_letters": 1,
    }
    assert remaining_rows(chdb_client, db, ["u-gone"]) == {}
    assert remaining_rows(chdb_client, db, ["u-kept"]) == before_kept
    assert _count(chdb_client, f"SELECT count() FROM {db}.user_contributions WHERE user_id = 'u-gone'") == 0
    assert _count(chdb_client, f"SELECT count() FROM {db}.edit_operation_rows WHERE user_id = 'u-gone'") == 0
    assert _count(chdb_client, f"SELECT sum(total_interactions) FROM {db}.regeneration_rates") == 1
    # The rows stay gone through merges (a lightweight delete is a mask until the parts merge).
    for table in deleted:
        chdb_client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    assert remaining_rows(chdb_client, db, ["u-gone"]) == {}
    assert erase_users(chdb_client, db, ["u-gone"]) == {}  # again: nothing to do, nothing touched


def test_ids_are_data_not_sql(chdb_client: Client, database: str) -> None:
    assert erase_users(chdb_client, database, ["u-kept' OR '1'='1", "u-kept') --"]) == {}
    assert remaining_rows(chdb_client, database, ["u-kept"])["ai_interactions"] == 1


def test_the_sink_knows_whose_a_row_is() -> None:
    by_table = {spec.table: spec for spec in TABLES}
    outcome_row: list[object] = [None] * len(by_table["interaction_outcomes"].columns)
    outcome_row[by_table["interaction_outcomes"].columns.index("user_id")] = "u1"
    assert _user_reader(by_table["interaction_outcomes"])(outcome_row) == "u1"
    letters = by_table["dead_letters"]
    for value, user in (
        (b'{"user_id": "u2", "x": 1}', "u2"),
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"user_id": 7}', None),
        (b"\xff\xfe", None),
    ):
        letter = DeadLetter.of(
            topic=topics.FEEDBACK, partition=0, offset=1, key=b"s", value=value, reason="r",
            error_type="validation_error", stage="processor",
        )  # fmt: skip
        assert _user_reader(letters)(letters.to_row(letter.model_dump_json().encode())) == user
    assert _user_reader(by_table["prompt_version_metrics"])([1, 2, 3]) is None


def test_buffered_rows_of_erased_users_are_dropped(chdb_client: Client, database: str) -> None:
    chdb_client.command(
        f"CREATE TABLE {database}.buffered (user_id String, n UInt8) ENGINE = MergeTree ORDER BY n"
    )
    writer = ClickHouseTableWriter(chdb_client, f"{database}.buffered", ("user_id", "n"))
    buffer = TableBuffer("buffered", writer, classify)
    for n, user in enumerate(("a", "b", "a", "c")):
        buffer.add([user, n], source=None)
    assert buffer.drop_rows(lambda row: row[0] in {"a"}) == 2
    assert not buffer.flush().refused
    written = chdb_client.query(f"SELECT user_id, n FROM {database}.buffered ORDER BY n").result_rows
    assert written == [("b", 1), ("c", 3)]
