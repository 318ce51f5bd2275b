"""The sink's pure parts (row mapping, offsets, classification) and its ClickHouse backend on the real
embedded ClickHouse (chdb, in-process); the consumer loop itself runs in tests/integration."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from infra.clickhouse import ClickHouseBusyError, chdb_path
from infra.settings import ClickHouseSettings, Settings, SinkSettings
from schemas import topics
from sinks import BACKENDS, Fault, create_backend
from sinks.batch import TableBuffer
from sinks.clickhouse import ClickHouseBackend, ClickHouseTableWriter, classify, migrate, migrations
from sinks.clickhouse.errors import ROW_CODES, TRANSIENT_CODES
from sinks.faults import OutageDrill, start_outage
from sinks.offsets import OffsetLedger
from sinks.registry import UnknownBackendError
from sinks.rows import TABLES
from sinks.stats import SinkState, SinkStats

SPEC = {spec.table: spec for spec in TABLES}


@pytest.fixture
def client(chdb_client: Client) -> Client:
    """The session's chdb, with a fresh ``unit`` database."""
    chdb_client.command("DROP DATABASE IF EXISTS unit")
    return chdb_client


@pytest.fixture
def strict(client: Client) -> str:
    """A table that refuses ids of 1000 and more (a constraint): the server's own refusal of a row."""
    client.command("CREATE DATABASE IF NOT EXISTS unit")
    client.command(
        "CREATE TABLE unit.strict (id UInt32, name String, CONSTRAINT small CHECK id < 1000) "
        "ENGINE = MergeTree ORDER BY id"
    )
    return "unit.strict"


def _count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


# ----------------------------------------------------------------------------------- rows and schema


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


# ----------------------------------------------------------------------------------- writing


def _buffer(
    client: Client, table: str, columns: tuple[str, ...], drill: OutageDrill | None = None
) -> TableBuffer:
    return TableBuffer(table, ClickHouseTableWriter(client, table, columns, drill), classify)


def test_the_writer_inserts_batches_and_replays_fold_into_one_row(client: Client) -> None:
    migrate(client, "unit")
    spec = SPEC["ai_interactions"]
    buffer = _buffer(client, "unit.ai_interactions", spec.columns)
    message = _interaction_json()
    for _ in range(3):  # the same event delivered three times
        buffer.add(spec.to_row(message), source=None)
    result = buffer.flush()
    assert (len(result.written), result.refused, result.unavailable, len(buffer)) == (3, [], None, 0)
    event_id = spec.to_row(message)[1]
    count = client.query(
        "SELECT count() FROM unit.ai_interactions FINAL WHERE event_id = {e:UUID}", parameters={"e": event_id}
    ).result_rows[0][0]
    assert count == 1


def test_rows_clickhouse_refuses_are_isolated_and_returned_the_rest_inserted(
    client: Client, strict: str
) -> None:
    buffer = _buffer(client, strict, ("id", "name"))
    for i in range(10):  # the client cannot serialise "seven"; the server refuses 5000 (constraint)
        buffer.add([{7: "seven", 3: 5000}.get(i, i), f"n{i}"], source=i)
    result = buffer.flush()
    assert sorted(p.source for p, _ in result.refused) == [3, 7]
    assert sorted(p.source for p in result.written) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert (result.unavailable, len(buffer)) == (None, 0)
    assert _count(client, strict) == 8
    reasons = {p.source: reason for p, reason in result.refused}
    assert "VIOLATED_CONSTRAINT" in reasons[3]
    assert "seven" in reasons[7]


def test_an_unavailable_backend_keeps_every_row_buffered_and_nothing_is_refused(
    client: Client, strict: str, tmp_path: Path
) -> None:
    drill_file = tmp_path / "outage"
    buffer = _buffer(client, strict, ("id", "name"), OutageDrill(drill_file))
    for i in range(1000):  # the reproduction of issue 11: 1,000 rows, and the backend is down
        buffer.add([i, "n"], source=i)
    start_outage(drill_file, 60)
    for _ in range(3):
        result = buffer.flush()
        assert isinstance(result.unavailable, OperationalError)
        assert (result.written, result.refused, len(buffer)) == ([], [], 1000)
    assert _count(client, strict) == 0
    drill_file.unlink()
    result = buffer.flush()
    assert (len(result.written), result.refused, result.unavailable, len(buffer)) == (1000, [], None, 0)
    assert _count(client, strict) == 1000


def test_an_outage_while_isolating_leaves_the_unresolved_rows_buffered_in_order(
    client: Client, strict: str, tmp_path: Path
) -> None:
    drill_file = tmp_path / "outage"
    drill_file.write_text("100")  # an outage until t=100; the clock below walks into it and out again
    times = iter([200.0, 200.0, 200.0, 50.0])  # batch (refused: a bad row), 1st half, its bad quarter...
    buffer = _buffer(
        client, strict, ("id", "name"), OutageDrill(drill_file, clock=lambda: next(times, 200.0))
    )
    for i in range(8):
        buffer.add([5000 if i == 1 else i, "n"], source=i)
    result = buffer.flush()
    # [0..7] refused -> [0..3] refused -> [0, 1] refused -> [0] hits the outage: nothing resolved yet.
    assert isinstance(result.unavailable, OperationalError)
    assert (result.written, result.refused) == ([], [])
    assert [p.source for p in buffer.pending()] == [0, 1, 2, 3, 4, 5, 6, 7]
    result = buffer.flush()  # the outage is over
    assert [p.source for p, _ in result.refused] == [1]
    assert sorted(p.source for p in result.written) == [0, 2, 3, 4, 5, 6, 7]
    assert _count(client, strict) == 7


def test_rows_of_a_revoked_partition_can_be_discarded(client: Client, strict: str) -> None:
    buffer = _buffer(client, strict, ("id", "name"))
    for i in range(6):
        buffer.add([i, "n"], source=("t", i % 2))
    assert buffer.discard(lambda source: source == ("t", 1)) == 3
    assert [p.source for p in buffer.pending()] == [("t", 0)] * 3


# ----------------------------------------------------------------------------------- whose fault


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("Error HTTPConnectionPool ... [Errno 111] Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        ClickHouseBusyError("the chdb directory is in use by process 42"),
        DatabaseError("HTTP driver received HTTP status 503", code=None),
        ProgrammingError("The client has been closed"),
        RuntimeError("anything not known to be the row's fault"),
        *(DatabaseError(f"Code: {c}.", code=c) for c in (202, 252, 209, 210, 241, 242, 243, 3, 425, 60, 516)),
    ],
)
def test_outages_overload_and_deployment_faults_are_transient(error: BaseException) -> None:
    assert classify(error) is Fault.TRANSIENT


@pytest.mark.parametrize(
    "error",
    [
        DataError("Invalid None value in non-Nullable column, column name: `name`"),
        ValueError("invalid literal for int() with base 10: 'seven'"),
        TypeError("object of type 'int' has no len()"),
        OverflowError("int too big to convert"),
        struct.error("argument out of range"),
        *(DatabaseError(f"Code: {c}.", code=c) for c in (6, 27, 53, 70, 117, 131, 321, 349, 376, 469)),
    ],
)
def test_only_a_value_the_column_cannot_hold_is_the_rows_fault(error: BaseException) -> None:
    assert classify(error) is Fault.ROW


def test_the_code_lists_do_not_overlap() -> None:
    assert not ROW_CODES & TRANSIENT_CODES


def test_real_server_errors_from_chdb_are_classified_by_their_code(client: Client, strict: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        client.insert(strict, [[5000, "n"]], column_names=["id", "name"])
    assert (refused.value.code, classify(refused.value)) == (469, Fault.ROW)
    with pytest.raises(DatabaseError) as missing:
        client.insert("unit.no_such_table", [[1, "n"]], column_names=["id", "name"])
    assert (missing.value.code, classify(missing.value)) == (60, Fault.TRANSIENT)


# ----------------------------------------------------------------------------------- offsets


def test_commits_stop_at_the_first_row_not_written_per_partition() -> None:
    ledger = OffsetLedger()
    for offset in range(10):
        ledger.read(("a", 0), offset)
    for offset in range(5):
        ledger.read(("a", 1), offset)
    buffered = [(("a", 0), 4), (("a", 0), 7)]
    assert ledger.committable(buffered) == {("a", 0): 4, ("a", 1): 5}
    ledger.committed({("a", 0): 4, ("a", 1): 5})
    assert ledger.committable(buffered) == {}  # nothing new
    assert ledger.committable([]) == {("a", 0): 10}
    assert ledger.committable([], only=[("a", 1), ("b", 3)]) == {}


def test_a_partition_forgotten_on_revoke_is_not_committed_until_read_again() -> None:
    ledger = OffsetLedger()
    ledger.read(("a", 0), 41)
    ledger.forget([("a", 0)])
    assert ledger.committable([]) == {}
    ledger.read(("a", 0), 3)  # its next owner's committed offset may be lower than what we had read
    assert ledger.committable([]) == {("a", 0): 4}


# ----------------------------------------------------------------------------------- drill, registry, status


def test_the_drill_is_on_until_the_time_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "drill"
    now = [1000.0]
    drill = OutageDrill(path, clock=lambda: now[0])
    assert not drill.active()  # no file
    assert start_outage(path, 60, clock=lambda: now[0]) == 1060.0
    assert drill.active()
    now[0] = 1060.0
    assert not drill.active()
    path.write_text("not a time")
    assert (drill.active(), drill.until()) == (False, None)
    assert OutageDrill(None).until() is None


def test_the_registry_builds_the_configured_backend_and_names_the_known_ones(tmp_path: Path) -> None:
    settings = Settings(clickhouse=ClickHouseSettings(url=f"chdb://{tmp_path}", insert_batch_rows=7))
    backend = create_backend(settings)
    assert isinstance(backend, ClickHouseBackend)
    assert (backend.name, backend.batch_rows, backend.flush_interval_s) == ("clickhouse", 7, 1.0)
    assert set(BACKENDS) == {"clickhouse"}
    with pytest.raises(UnknownBackendError, match=r"'parquet' is not one of \['clickhouse'\]"):
        create_backend(Settings(sink=SinkSettings(backend="parquet")))


def test_sink_settings_refuse_a_cap_below_the_first_wait() -> None:
    with pytest.raises(ValidationError, match="retry_max_s"):
        SinkSettings(retry_initial_s=10, retry_max_s=1)


def test_the_status_says_paused_since_when_and_why_and_the_metrics_say_it_too() -> None:
    stats = SinkStats(backend="clickhouse", state=SinkState.PAUSED)
    assert stats.failed_attempt(OperationalError("connection refused"), now=1_800_000_000.0)
    assert not stats.failed_attempt(OperationalError("connection refused"), now=1_800_000_005.0)
    summary = stats.summary()
    assert summary["state"] == "paused"
    assert summary["paused_since"] == "2027-01-15T08:00:00+00:00"
    assert summary["last_error"] == "OperationalError: connection refused"
    assert (summary["transient_failures"], summary["outages"]) == (2, 1)
    registry = CollectorRegistry()
    registry.register(stats.collector())
    text = generate_latest(registry).decode()
    assert 'feedbackloop_sink_state{state="paused"} 1.0' in text
    assert "feedbackloop_sink_transient_failures_total 2.0" in text
    assert stats.recovered(now=1_800_000_062.5) == 62.5
    assert stats.summary()["paused_since"] is None
