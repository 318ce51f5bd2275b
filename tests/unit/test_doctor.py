"""``feedbackloop doctor`` without a broker: its SQL probes on chdb, its checks of settings, and what it
says when nothing answers. (Against the real broker: tests/integration/test_doctor.py.)"""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from pydantic import SecretStr

from feedbackloop.doctor import (
    FEATURES,
    MIN_CLICKHOUSE_VERSION,
    Feature,
    Scope,
    Status,
    clickhouse_checks,
    parse_version,
    probe_features,
    redact,
    run_checks,
    security_check,
)
from infra.settings import ClickHouseSettings, KafkaSettings, ProducerSettings, Settings
from sinks.clickhouse import migrate, migrations
from tests.support.patterns import grafana_sql

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {
    "BY",
    "IN",
    "JOIN",
    "FROM",
    "AS",
    "ON",
    "USING",
    "VALUES",
    "AND",
    "OR",
    "NOT",
    "WHERE",
    "INTERVAL",
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sql_corpus() -> str:
    """Every statement of the migrations and every query of the Grafana dashboards."""
    texts = []
    for migration in migrations():
        texts.append(
            "\n".join(line for line in migration.sql.splitlines() if not line.strip().startswith("--"))
        )
    for path in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                # Expanded as the datasource plugin does before the server sees it.
                texts.append(
                    grafana_sql(target["rawSql"], "db", datetime(2026, 1, 1, tzinfo=UTC), datetime.now(UTC))
                )
    return "\n".join(texts)


def test_every_function_the_migrations_and_dashboards_call_has_a_probe() -> None:
    corpus = _sql_corpus()
    own = set(re.findall(r"CREATE (?:OR REPLACE )?(?:TABLE|VIEW) (?:IF NOT EXISTS )?\{db\}\.(\w+)", corpus))
    called = set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", corpus))
    covered = {name for feature in FEATURES for name in feature.covers}
    unprobed = sorted(called - covered - own - KEYWORDS)
    assert unprobed == [], (
        f"the SQL calls {unprobed} and feedbackloop doctor has no probe for them: add a Feature to "
        "feedbackloop/doctor.py FEATURES (a tiny query and what it must return)"
    )


def test_every_probe_stands_for_something_the_sql_uses() -> None:
    corpus = _sql_corpus()
    stale = [f.name for f in FEATURES for pattern in f.uses if not re.search(pattern, corpus)]
    assert stale == []


def test_every_probe_passes_on_chdb(chdb_client: Client, chdb_database: str) -> None:
    checks = probe_features(chdb_client, chdb_database)
    assert [(c.name, c.status) for c in checks] == [("SQL features", Status.ok)]
    assert f"{len(FEATURES)} of {len(FEATURES)}" in checks[0].detail
    left = chdb_client.query("SELECT name FROM system.databases WHERE name LIKE %(p)s", {"p": "%_doctor_%"})
    assert left.result_rows == [], "the scratch database must be dropped"


def test_a_probe_that_does_not_return_what_the_views_expect_fails_by_name(
    chdb_client: Client, chdb_database: str
) -> None:
    wrong = Feature("LEFT JOIN with nulls", (), ("SELECT toString(NULL)",), "0")
    checks = probe_features(chdb_client, chdb_database, [wrong])
    assert checks[0].status is Status.fail
    assert checks[1].name == "SQL: LEFT JOIN with nulls"
    assert "expected '0'" in checks[1].detail
    assert "26.9" in checks[1].fix


def test_a_migrated_database_passes_and_an_unmigrated_one_says_run_migrate(
    chdb_client: Client, chdb_database: str
) -> None:
    settings = Settings(clickhouse=ClickHouseSettings(url="chdb:///x", database=chdb_database))
    before = {c.name: c for c in clickhouse_checks(chdb_client, settings)}
    assert before["migrations"].status is Status.fail
    assert before["migrations"].fix == "run feedbackloop migrate"
    migrate(chdb_client, chdb_database)
    after = clickhouse_checks(chdb_client, settings)
    assert {c.name: c.status for c in after} == {
        "version": Status.ok,
        "embedded": Status.ok,
        "SQL features": Status.ok,
        "migrations": Status.ok,
        "select permission": Status.ok,
        "insert permission": Status.ok,
        "retention": Status.ok,
    }
    assert chdb_client.query(f"SELECT count() FROM {chdb_database}.interaction_outcomes").result_rows == [
        (0,)
    ]


def test_the_supported_minimum_is_the_engine_chdb_embeds(chdb_client: Client) -> None:
    engine = parse_version(str(chdb_client.query("SELECT version()").result_rows[0][0]))
    assert engine[:2] >= MIN_CLICKHOUSE_VERSION
    assert parse_version("26.9.2.1") == (26, 9, 2, 1)
    assert parse_version("25.8.1.1-lts") == (25, 8, 1, 1)


def test_passwords_are_never_shown() -> None:
    assert redact("http://feedbackloop:s3cret@clickhouse:8123") == "http://feedbackloop:***@clickhouse:8123"
    assert redact("chdb:///var/lib/feedbackloop/chdb") == "chdb:///var/lib/feedbackloop/chdb"


@pytest.mark.parametrize(
    ("kafka", "status", "says"),
    [
        (KafkaSettings(), Status.ok, "PLAINTEXT"),
        (KafkaSettings(bootstrap_servers="kafka:19092"), Status.ok, "PLAINTEXT"),
        (KafkaSettings(bootstrap_servers="kafka.example.com:9092"), Status.warn, "SECURITY_PROTOCOL=SSL"),
        (KafkaSettings(security_protocol="SASL_SSL"), Status.fail, "FEEDBACKLOOP_KAFKA__SASL_MECHANISM"),
        (KafkaSettings(sasl_mechanism="PLAIN"), Status.fail, "FEEDBACKLOOP_KAFKA__SECURITY_PROTOCOL"),
        (KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"), Status.fail, "SASL_PASSWORD"),
        (KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="MD5"), Status.fail, "one of PLAIN"),
        (
            KafkaSettings(
                bootstrap_servers="kafka.example.com:9093",
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username="fl",
                sasl_password=SecretStr("x"),
            ),
            Status.ok,
            "SCRAM-SHA-512 as fl",
        ),
    ],
)
def test_security_settings(kafka: KafkaSettings, status: Status, says: str) -> None:
    check = security_check(kafka)
    assert check.status is status
    assert says in check.detail + check.fix


def test_unreachable_services_name_the_setting_to_change(tmp_path: Path) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}"),
        clickhouse=ClickHouseSettings(url=f"http://fl:s3cret@127.0.0.1:{_closed_port()}"),
        producer=ProducerSettings(spool_dir=tmp_path / "spool"),
    )
    checks = {c.name: c for c in run_checks(settings, scope=Scope.all, timeout_s=2.0)}
    broker, clickhouse = checks["brokers reachable"], checks["answers"]
    assert broker.status is Status.fail
    assert "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS" in broker.fix
    assert clickhouse.status is Status.fail
    assert "FEEDBACKLOOP_CLICKHOUSE__URL" in clickhouse.fix
    assert "Connection refused" in clickhouse.detail
    assert "s3cret" not in clickhouse.detail + clickhouse.fix
    assert checks["topics and groups"].status is Status.skip
