"""Retention on chdb: the raw-text TTLs follow the setting, and expired text really goes while the
rows, their numbers and every view built on them stay."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from feedbackloop.cli import app
from feedbackloop.doctor import Status, retention_check
from infra.settings import ClickHouseSettings, RetentionSettings, Settings
from sinks.clickhouse import ClickHouseBackend, apply_retention, migrate
from sinks.clickhouse.retention import RAW_ROWS, RAW_TEXT, column_ttl_days, retention_state, table_ttl_days
from sinks.rows import TABLES

#: Text columns of the sink's tables that are not personal free text: ids, labels, categories, a
#: dead letter's reason (dead letters expire whole), edit operation kinds. A new free-text column
#: must join RAW_TEXT (or this list, with a reason) -- this keeps retention from missing it.
NOT_RAW_TEXT = {
    "user_id", "session_id", "prompt_version", "model", "input_category", "experiment_id", "variant",
    "feedback_type", "edit_size", "op_kind", "op_position", "op_unit", "source_topic", "stage",
    "error_type", "reason", "key_b64", "value_b64", "value_text",
    # experiment decisions and regression alerts: aggregates and the SQL behind them, no user text
    "action", "rule", "control_variant", "treatment_variant", "primary_metric", "guardrails",
    "evidence_sql", "kind", "metric", "severity", "baseline_seeded_from", "evidence_link",
    # support tickets: an id and a category, no text; experiments: operators' revisions
    "ticket_id", "category", "control", "treatment", "status", "applied_action",
    "applied_by", "production_version", "retired_version",
}  # fmt: skip


@pytest.fixture
def database(chdb_client: Client) -> str:
    """A freshly migrated database of this test's own."""
    name = f"ret_{uuid.uuid4().hex[:8]}"
    migrate(chdb_client, name)
    return name


def test_every_text_column_is_raw_text_or_known_not_to_be(chdb_client: Client, database: str) -> None:
    tables = sorted({spec.table for spec in TABLES})
    columns = chdb_client.query(
        "SELECT table, name FROM system.columns WHERE database = %(db)s AND table IN %(t)s "
        "AND match(type, 'String')",
        parameters={"db": database, "t": tables},
    ).result_rows
    raw = {(table, column) for table, (_, names) in RAW_TEXT.items() for column in names}
    unknown = sorted(
        f"{table}.{column}"
        for table, column in columns
        if (table, column) not in raw and column not in NOT_RAW_TEXT and table not in RAW_ROWS
    )
    assert unknown == []
    assert set(RAW_TEXT) | set(RAW_ROWS) <= set(tables)


def test_the_ttls_are_read_back_from_the_definition() -> None:
    definition = (
        "CREATE TABLE d.e (`k` UInt32, `created_at` DateTime64(3, 'UTC'), `m` Map(String, String) TTL "
        "created_at + toIntervalDay(7), `op_original` Array(String) DEFAULT arrayResize(CAST([], "
        "'Array(String)'), length(op_kind)) TTL created_at + toIntervalDay(90), `last` String) "
        "ENGINE = ReplacingMergeTree ORDER BY k TTL created_at + toIntervalDay(30) SETTINGS x = 1"
    )
    assert column_ttl_days(definition, "m") == 7
    assert column_ttl_days(definition, "op_original") == 90
    assert column_ttl_days(definition, "k") is None
    assert column_ttl_days(definition, "last") is None  # not the table's TTL after the column list
    assert table_ttl_days(definition) == 30
    assert table_ttl_days(definition.replace(" TTL created_at + toIntervalDay(30)", "")) is None


def test_the_setting_is_applied_changed_and_removed(chdb_client: Client, database: str) -> None:
    assert set(retention_state(chdb_client, database).values()) == {None}
    assert apply_retention(chdb_client, database, None) == []  # unset: left alone

    first = apply_retention(chdb_client, database, 90)
    expected = sum(len(columns) for _, columns in RAW_TEXT.values()) + len(RAW_ROWS)
    assert len(first) == expected
    assert set(retention_state(chdb_client, database).values()) == {90}
    assert apply_retention(chdb_client, database, 90) == []  # the same again: nothing rewritten
    assert apply_retention(chdb_client, database, None) == []  # a command without the setting

    assert len(apply_retention(chdb_client, database, 30)) == expected
    assert set(retention_state(chdb_client, database).values()) == {30}

    removed = apply_retention(chdb_client, database, 0)
    assert len(removed) == expected
    assert {str(change).split(": ")[1] for change in removed} == {"kept until erased"}
    assert set(retention_state(chdb_client, database).values()) == {None}


def _insert_events(client: Client, db: str, age_days: int, tag: str) -> None:
    at = f"now64(3) - INTERVAL {age_days} DAY"
    iid, eid, fid = (str(uuid.uuid4()) for _ in range(3))
    client.command(
        f"INSERT INTO {db}.ai_interactions (schema_version, event_id, interaction_id, user_id, session_id, "
        "prompt, prompt_version, model, response, response_time_ms, created_at, metadata) "
        f"SELECT 1, '{eid}', '{iid}', 'u-{tag}', 's-{tag}', 'prompt {tag}', 'v1', 'm', 'response {tag}', 10, "
        f"{at}, map('k', 'meta {tag}')"
    )
    client.command(
        f"INSERT INTO {db}.ai_feedback (schema_version, event_id, interaction_id, user_id, session_id, "
        "created_at, feedback_type, corrected_output, comment, prompt_version, original_output, "
        f"edit_distance, time_to_feedback_ms) SELECT 1, '{fid}', '{iid}', 'u-{tag}', 's-{tag}', {at}, "
        f"'edit', 'fixed {tag}', 'comment {tag}', 'v1', 'response {tag}', 3, 5"
    )
    client.command(
        f"INSERT INTO {db}.interaction_outcomes (interaction_id, version, session_id, user_id, prompt, "
        "prompt_version, model, response_chars, response_time_ms, interaction_created_at, settled_at, "
        f"edited, corrected, regenerated) SELECT '{iid}', 1, 's-{tag}', 'u-{tag}', 'prompt {tag}', 'v1', "
        f"'m', 12, 10, {at}, {at}, true, true, true"
    )
    client.command(
        f"INSERT INTO {db}.edit_operations (event_id, interaction_id, user_id, session_id, created_at, "
        "prompt_version, model, response_words, corrected_words, edit_distance, edit_distance_norm, "
        "edit_size, truncated, op_kind, op_position, op_unit, op_start, op_original_words, "
        "op_corrected_words, op_original, op_corrected, op_original_norm, op_corrected_norm) "
        f"SELECT '{fid}', '{iid}', 'u-{tag}', 's-{tag}', {at}, 'v1', 'm', 2, 2, 1, 0.5, 'small', false, "
        "['replace', 'delete'], ['start', 'end'], ['word', 'word'], [0, 1], [1, 1], [1, 0], "
        f"['old {tag}', 'x'], ['new {tag}', ''], ['old', 'x'], ['new', '']"
    )
    client.command(
        f"INSERT INTO {db}.dead_letters (source_topic, partition, offset, stage, error_type, reason, "
        f"value_text, dead_lettered_at) SELECT 'ai.feedback.v1', 0, {age_days}, 'processor', "
        f"'validation_error', 'bad', 'payload {tag}', {at}"
    )


def _optimize(client: Client, db: str) -> None:
    for table in (*RAW_TEXT, *RAW_ROWS):
        client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")


def _one(client: Client, sql: str) -> list[object]:
    return list(client.query(sql).result_rows[0])


def test_expired_text_goes_and_the_rows_and_views_stay(chdb_client: Client, database: str) -> None:
    db = database
    _insert_events(chdb_client, db, 40, "old")
    _insert_events(chdb_client, db, 1, "new")
    rates_before = chdb_client.query(f"SELECT * FROM {db}.regeneration_rates").result_rows
    apply_retention(chdb_client, db, 30)
    _optimize(chdb_client, db)

    old = "user_id = 'u-old'"
    assert _one(chdb_client, f"SELECT prompt, response, metadata FROM {db}.ai_interactions WHERE {old}") == [
        "",
        "",
        {},
    ]
    assert _one(
        chdb_client,
        f"SELECT corrected_output, comment, original_output, edit_distance FROM {db}.ai_feedback WHERE {old}",
    ) == [None, None, "", 3]
    assert _one(
        chdb_client, f"SELECT prompt, response_chars, corrected FROM {db}.interaction_outcomes WHERE {old}"
    ) == [
        "",
        12,
        True,
    ]
    assert _one(
        chdb_client,
        f"SELECT op_kind, op_original, op_corrected, op_original_norm FROM {db}.edit_operations WHERE {old}",
    ) == [["replace", "delete"], ["", ""], ["", ""], ["", ""]]
    # The views that unroll operations still line the arrays up, and count the same.
    assert chdb_client.query(f"SELECT count() FROM {db}.edit_operation_rows").result_rows == [(4,)]
    assert chdb_client.query(f"SELECT * FROM {db}.regeneration_rates").result_rows == rates_before
    # Dead letters are their payload: the old one is gone whole.
    assert chdb_client.query(f"SELECT value_text FROM {db}.dead_letters").result_rows == [("payload new",)]

    new = "user_id = 'u-new'"
    assert _one(chdb_client, f"SELECT prompt, response FROM {db}.ai_interactions WHERE {new}") == [
        "prompt new",
        "response new",
    ]
    assert _one(chdb_client, f"SELECT corrected_output, comment FROM {db}.ai_feedback WHERE {new}") == [
        "fixed new",
        "comment new",
    ]
    assert _one(chdb_client, f"SELECT op_original FROM {db}.edit_operations WHERE {new}") == [
        ["old new", "x"]
    ]


def test_text_inserted_after_the_ttl_is_set_expires_too(chdb_client: Client, database: str) -> None:
    apply_retention(chdb_client, database, 30)
    _insert_events(chdb_client, database, 31, "late")
    _optimize(chdb_client, database)
    assert _one(chdb_client, f"SELECT prompt FROM {database}.interaction_outcomes") == [""]


def test_the_sink_applies_the_setting_when_it_opens(
    chdb_url: str, database: str, chdb_client: Client
) -> None:
    settings = Settings(
        clickhouse=ClickHouseSettings(url=chdb_url, database=database),
        retention=RetentionSettings(raw_text_days=45),
    )
    backend = ClickHouseBackend(settings)
    backend.open()
    backend.close()
    assert set(retention_state(chdb_client, database).values()) == {45}


def test_migrate_applies_it_and_doctor_checks_it(
    chdb_url: str, chdb_client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = f"ret_{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__URL", chdb_url)
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__DATABASE", database)
    unset = CliRunner().invoke(app, ["migrate"])
    assert unset.exit_code == 0, unset.output
    assert "left as they were" in unset.output
    settings = Settings(clickhouse=ClickHouseSettings(url=chdb_url, database=database))
    assert retention_check(chdb_client, settings).status is Status.ok

    monkeypatch.setenv("FEEDBACKLOOP_RETENTION__RAW_TEXT_DAYS", "90")
    wanted = settings.model_copy(update={"retention": RetentionSettings(raw_text_days=90)})
    stale = retention_check(chdb_client, wanted)
    assert stale.status is Status.fail
    assert "run feedbackloop migrate" in stale.fix
    first = CliRunner().invoke(app, ["migrate"])
    assert first.exit_code == 0, first.output
    assert re.search(r"raw text kept 90 days \(\d+ TTLs changed\)", first.output)
    again = CliRunner().invoke(app, ["migrate"])
    assert "raw text kept 90 days (already so)" in again.output
    check = retention_check(chdb_client, wanted)
    assert (check.status, check.detail) == (Status.ok, "raw text kept 90 days, dead letters as long")
