"""``feedbackloop doctor``: check a deployment before data flows -- local, compose or remote alike.

Kafka: the brokers answer, and the addresses they advertise can be reached from here; the security
settings hang together; every topic exists with the same partition count (events of a session meet
by partition number: co-partitioning); the consumer groups' state. ClickHouse: the server answers;
its version is at least :data:`MIN_CLICKHOUSE_VERSION`; every SQL feature the migrations and views
use works as they expect (:data:`FEATURES`, one tiny query each); the migrations are applied; this
user may insert into the sink's tables and select from every table and view. This machine: the
worker's state folder and the SDK's spool are writable.

Each check says what it found and, when it fails, what to change: the setting (by its environment
variable) or the command. The command exits 1 when any check fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from clickhouse_connect.driver.client import Client
from rich import box
from rich.console import Console
from rich.table import Table

from infra.groups import app_id, contributions_topic, lease_group_id, progress_group_id, sink_group_id
from infra.settings import ClickHouseSettings, KafkaSettings, Settings, check_database_name

#: The oldest ClickHouse server supported: the engine chdb embeds, which every test runs the
#: migrations and views on (chdb 4.4 = ClickHouse 26.9). docker-compose.yml pins this generation.
MIN_CLICKHOUSE_VERSION = (26, 9)

_URL = "FEEDBACKLOOP_CLICKHOUSE__URL"
_BOOTSTRAP = "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS"


class Status(StrEnum):
    """The outcome of one check."""

    ok = "ok"
    warn = "warn"
    fail = "fail"
    skip = "skip"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    area: str
    name: str
    status: Status
    detail: str
    fix: str = ""


class Scope(StrEnum):
    """Which checks to run."""

    all = "all"
    kafka = "kafka"
    clickhouse = "clickhouse"
    reachable = "reachable"  # only whether Kafka and ClickHouse answer (a readiness wait)


# ------------------------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class Feature:
    """An SQL feature the migrations (or the dashboards) use, and a tiny query that proves it works.

    ``uses`` are patterns found in the SQL that uses it; ``covers`` the function-like names it
    stands for (a unit test keeps both true as migrations are added). ``probe`` runs in order with
    ``{scratch}`` bound to a scratch database; the first cell of the last statement's first row
    must read ``expect``.
    """

    name: str
    uses: tuple[str, ...]
    probe: tuple[str, ...]
    expect: str
    covers: tuple[str, ...] = ()

    @property
    def needs_scratch(self) -> bool:
        """Whether the probe creates objects (in a scratch database)."""
        return any("{scratch}" in statement for statement in self.probe)


def _fn(name: str, sql: str, expect: str) -> Feature:
    return Feature(f"{name}()", (rf"\b{name}\s*\(",), (sql,), expect, (name,))


FEATURES: tuple[Feature, ...] = (
    # Column types.
    Feature(
        "DateTime64(3, 'UTC')",
        (r"DateTime64\(3, 'UTC'\)",),
        ("SELECT toString(toDateTime64('2026-11-26 10:42:00.123', 3, 'UTC'))",),
        "2026-11-26 10:42:00.123",
        ("DateTime64",),
    ),
    Feature(
        "LowCardinality(Nullable(String))",
        (r"LowCardinality\(Nullable\(String\)\)",),
        ("SELECT toTypeName(CAST(NULL, 'LowCardinality(Nullable(String))'))",),
        "LowCardinality(Nullable(String))",
        ("LowCardinality", "Nullable"),
    ),
    Feature(
        "Array(LowCardinality(String))",
        (r"Array\(LowCardinality\(String\)\)",),
        ("SELECT toString(CAST(['a'], 'Array(LowCardinality(String))'))",),
        "['a']",
        ("Array",),
    ),
    Feature(
        "Map(String, String)", (r"Map\(String, String\)",), ("SELECT map('k', 'v')['k']",), "v", ("Map",)
    ),
    Feature(
        "UUID",
        (r"\bUUID\b",),
        ("SELECT toString(toUUID('00000000-0000-0000-0000-00000000000a'))",),
        "00000000-0000-0000-0000-00000000000a",
    ),
    Feature("Bool", (r"\bBool\b",), ("SELECT toString(CAST(1, 'Bool'))",), "true"),
    # Tables and views.
    Feature(
        "ReplacingMergeTree(version) read with FINAL, PARTITION BY, DEFAULT now64",
        (r"ReplacingMergeTree\(\w+\)", r"\bFINAL\b", r"PARTITION BY toYYYYMM", r"DEFAULT now64\(3\)"),
        (
            "CREATE TABLE {scratch}.rmt (k UInt8, v UInt32, at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree(v) PARTITION BY toYYYYMM(at) ORDER BY k",
            "INSERT INTO {scratch}.rmt (k, v) VALUES (1, 1)",
            "INSERT INTO {scratch}.rmt (k, v) VALUES (1, 2)",
            "SELECT concat(toString(max(v)), '/', toString(count())) FROM {scratch}.rmt FINAL",
        ),
        "2/1",
        ("ReplacingMergeTree",),
    ),
    Feature(
        "parameterized views (CREATE OR REPLACE VIEW with {name:Type})",
        (r"CREATE OR REPLACE VIEW", r"\{start:DateTime64\(3\)\}"),
        (
            "CREATE OR REPLACE VIEW {scratch}.pv AS SELECT count() AS n FROM numbers(10) "
            "WHERE number < {n:UInt8} AND toDateTime64('2026-01-01 00:00:00', 3) >= {start:DateTime64(3)}",
            "SELECT n FROM {scratch}.pv(n = 3, start = '1970-01-01 00:00:00')",
        ),
        "3",
    ),
    Feature(
        "a parameterized view reading another, passing its parameters on",
        (r"_between\(start = \{start:DateTime64\(3\)\}",),
        (
            "CREATE OR REPLACE VIEW {scratch}.inner_pv AS "
            "SELECT number AS n FROM numbers(10) WHERE number < {n:UInt8}",
            "CREATE OR REPLACE VIEW {scratch}.outer_pv AS "
            "SELECT count() AS c FROM {scratch}.inner_pv(n = {m:UInt8})",
            "SELECT c FROM {scratch}.outer_pv(m = 4)",
        ),
        "4",
    ),
    # Query forms.
    Feature(
        "ARRAY JOIN of several arrays",
        (r"ARRAY JOIN\s+arrayEnumerate",),
        (
            "SELECT toString(groupArray((i, x))) FROM (SELECT ['a', 'b'] AS xs) "
            "ARRAY JOIN arrayEnumerate(xs) AS i, xs AS x",
        ),
        "[(1,'a'),(2,'b')]",
    ),
    Feature(
        "LEFT JOIN filling unmatched columns with defaults (join_use_nulls = 0)",
        (r"\bLEFT JOIN\b",),
        (
            "SELECT toString(b.v) FROM (SELECT 1 AS k) AS a "
            "LEFT JOIN (SELECT 2 AS k, 3 AS v) AS b ON a.k = b.k",
        ),
        "0",
    ),
    Feature(
        "INNER JOIN",
        (r"\bINNER JOIN\b",),
        ("SELECT b.v FROM (SELECT 1 AS k) AS a INNER JOIN (SELECT 1 AS k, 3 AS v) AS b ON a.k = b.k",),
        "3",
    ),
    Feature(
        "WITH <scalar subquery> AS name",
        (r"WITH\s+ifNull\(\(SELECT",),
        ("WITH ifNull((SELECT 7), 20) AS cap SELECT cap",),
        "7",
    ),
    Feature(
        "an alias used later in the same SELECT",
        (r"AS rest_interactions,[\s\S]*\brest_interactions = 0",),
        ("SELECT b FROM (SELECT 1 + 1 AS a, a * 3 AS b)",),
        "6",
    ),
    Feature(
        "inf and float division",
        (r"\binf\b",),
        ("SELECT concat(toString(1 / 4), ' ', toString(inf))",),
        "0.25 inf",
    ),
    # Functions.
    _fn("sum", "SELECT sum(number) FROM numbers(4)", "6"),
    _fn("count", "SELECT count() FROM numbers(4)", "4"),
    _fn("countIf", "SELECT countIf(number > 1) FROM numbers(4)", "2"),
    _fn("avg", "SELECT toString(avg(number)) FROM numbers(5)", "2"),
    _fn("min", "SELECT min(number) FROM numbers(3)", "0"),
    _fn("max", "SELECT max(number) FROM numbers(3)", "2"),
    _fn("any", "SELECT any(x) FROM (SELECT 7 AS x)", "7"),
    _fn("uniqExact", "SELECT uniqExact(number % 2) FROM numbers(5)", "2"),
    _fn("uniqExactIf", "SELECT uniqExactIf(number, number > 2) FROM numbers(5)", "2"),
    _fn("topK", "SELECT topK(1)(x)[1] FROM (SELECT arrayJoin([1, 2, 2]) AS x)", "2"),
    _fn("groupArray", "SELECT toString(groupArray(number)) FROM numbers(3)", "[0,1,2]"),
    _fn("groupUniqArray", "SELECT length(groupUniqArray(number % 2)) FROM numbers(4)", "2"),
    _fn("arraySort", "SELECT toString(arraySort([3, 1, 2]))", "[1,2,3]"),
    _fn("arrayEnumerate", "SELECT toString(arrayEnumerate(['a', 'b']))", "[1,2]"),
    _fn("arrayElement", "SELECT arrayElement(['a', 'b'], 2)", "b"),
    _fn("ifNull", "SELECT ifNull(NULL, 3)", "3"),
    _fn("nullIf", "SELECT isNull(nullIf(1, 1))", "1"),
    _fn("toNullable", "SELECT toTypeName(toNullable(1))", "Nullable(UInt8)"),
    _fn("least", "SELECT least(3, 1, 2)", "1"),
    _fn("greatest", "SELECT greatest(3, 1, 2)", "3"),
    _fn("multiIf", "SELECT multiIf(1 = 2, 'a', 1 = 1, 'b', 'c')", "b"),
    _fn("if", "SELECT if(1 > 0, 'yes', 'no')", "yes"),
    _fn("toFloat64", "SELECT toString(toFloat64('1.5'))", "1.5"),
    _fn("toUInt64", "SELECT toUInt64('42')", "42"),
    _fn("sqrt", "SELECT toString(sqrt(16))", "4"),
    _fn("ceil", "SELECT toString(ceil(1.2))", "2"),
    _fn("toYYYYMM", "SELECT toYYYYMM(toDate('2026-11-26'))", "202611"),
    _fn("toMonday", "SELECT toString(toMonday(toDate('2026-11-26')))", "2026-11-23"),
    _fn(
        "toStartOfHour",
        "SELECT toString(toStartOfHour(toDateTime64('2026-11-26 10:42:00.123', 3, 'UTC')))",
        "2026-11-26 10:00:00",
    ),
    _fn(
        "toStartOfDay",
        "SELECT toString(toStartOfDay(toDateTime64('2026-11-26 10:42:00.123', 3, 'UTC')))",
        "2026-11-26 00:00:00",
    ),
    _fn("toDateTime", "SELECT toString(toDateTime(0, 'UTC'))", "1970-01-01 00:00:00"),
    _fn("now64", "SELECT toTypeName(now64(3))", "DateTime64(3)"),
    _fn("arrayResize", "SELECT toString(arrayResize(CAST([], 'Array(String)'), 2))", "['','']"),
    # Retention and erasure (sinks/clickhouse/retention.py, erasure.py): a column TTL replaces expired
    # values by the column's DEFAULT expression; a lightweight DELETE hides rows at once.
    Feature(
        "column TTL to the column's DEFAULT, table TTL, OPTIMIZE ... FINAL",
        (r"DEFAULT arrayResize",),
        (
            "CREATE TABLE {scratch}.ttl (k UInt8, at DateTime64(3, 'UTC'), n Array(UInt8), "
            "t Array(String) DEFAULT arrayResize(CAST([], 'Array(String)'), length(n))) "
            "ENGINE = ReplacingMergeTree ORDER BY k",
            "INSERT INTO {scratch}.ttl VALUES (1, now64(3) - INTERVAL 3 DAY, [1, 2], ['a', 'b'])",
            "ALTER TABLE {scratch}.ttl MODIFY COLUMN t TTL at + INTERVAL 1 DAY",
            "ALTER TABLE {scratch}.ttl MODIFY TTL at + INTERVAL 30 DAY",
            "OPTIMIZE TABLE {scratch}.ttl FINAL",
            "SELECT toString(t) FROM {scratch}.ttl",
        ),
        "['','']",
    ),
    Feature(
        "lightweight DELETE",
        (),
        (
            "CREATE TABLE {scratch}.lwd (k UInt8, user_id String) ENGINE = ReplacingMergeTree ORDER BY k",
            "INSERT INTO {scratch}.lwd VALUES (1, 'a'), (2, 'b')",
            "DELETE FROM {scratch}.lwd WHERE user_id IN ('a')",
            "SELECT toString(groupArray(k)) FROM {scratch}.lwd",
        ),
        "[2]",
    ),
    # Issue 17: the loop-health views (0014_loop_health.sql) and their dashboard.
    Feature(
        "WITH (<scalar subquery>) AS name",
        (r"WITH\s+\(SELECT",),
        ("WITH (SELECT max(number) FROM numbers(5)) AS newest SELECT newest",),
        "4",
        ("WITH",),
    ),
    Feature(
        "UNION ALL of aggregates, regrouped",
        (r"\bUNION ALL\b",),
        (
            "SELECT sum(n) FROM (SELECT count() AS n FROM numbers(2) UNION ALL "
            "SELECT count() AS n FROM numbers(3))",
        ),
        "5",
    ),
    Feature(
        "LEFT JOIN on a constant condition (every row against every row, unmatched kept)",
        (r"LEFT JOIN \{db\}\.experiment_runs AS r ON 1 = 1",),
        (
            "SELECT toString(groupArray((a.k, b.v))) FROM (SELECT 1 AS k) AS a "
            "LEFT JOIN (SELECT 7 AS v WHERE 0) AS b ON 1 = 1",
        ),
        "[(1,0)]",
    ),
    Feature(
        "ARRAY JOIN of an array literal (a row per element)",
        (r"ARRAY JOIN \[prompt_version, '\(all\)'\]",),
        ("SELECT toString(groupArray(x)) FROM (SELECT 'v1' AS v) ARRAY JOIN [v, '(all)'] AS x",),
        "['v1','(all)']",
    ),
    _fn("CAST", "SELECT toTypeName(CAST([], 'Array(String)'))", "Array(String)"),
    _fn(
        "argMax",
        "SELECT argMax(x, y) FROM (SELECT arrayJoin([(1, 'a'), (3, 'b')]) AS t, t.2 AS x, t.1 AS y)",
        "b",
    ),
    _fn(
        "argMin",
        "SELECT argMin(x, y) FROM (SELECT arrayJoin([(1, 'a'), (3, 'b')]) AS t, t.2 AS x, t.1 AS y)",
        "a",
    ),
    _fn("arrayFilter", "SELECT toString(arrayFilter(x -> x != '', ['a', '', 'b']))", "['a','b']"),
    _fn("arrayFlatten", "SELECT toString(arrayFlatten([['a'], [], ['b']]))", "['a','b']"),
    _fn("arrayJoin", "SELECT count() FROM (SELECT arrayJoin([1, 2, 3]))", "3"),
    _fn("assumeNotNull", "SELECT toTypeName(assumeNotNull(toNullable(1)))", "UInt8"),
    _fn(
        "dateDiff",
        "SELECT dateDiff('millisecond', toDateTime64('2026-11-01 00:00:00', 3, 'UTC'), "
        "toDateTime64('2026-11-15 00:00:00.5', 3, 'UTC'))",
        "1209600500",
    ),
    _fn("groupArrayIf", "SELECT toString(groupArrayIf(number, number > 1)) FROM numbers(4)", "[2,3]"),
    _fn("has", "SELECT has([toDate('2026-11-23')], toDate('2026-11-23'))", "1"),
    _fn("intDiv", "SELECT intDiv(15, 7)", "2"),
    _fn("length", "SELECT length(['a', 'b'])", "2"),
    _fn("lower", "SELECT lower('Wrong Answer')", "wrong answer"),
    _fn("minIf", "SELECT minIf(number, number > 1) FROM numbers(4)", "2"),
    _fn("minOrNull", "SELECT isNull(minOrNull(number)) FROM numbers(0)", "1"),
    _fn("position", "SELECT position('edit: a -> b', ':')", "5"),
    _fn(
        "quantileExactInclusiveIf",
        "SELECT toString(quantileExactInclusiveIf(0.5)(number, number > 0)) FROM numbers(5)",
        "2.5",
    ),
    _fn("range", "SELECT toString(range(3))", "[0,1,2]"),
    _fn("splitByChar", "SELECT toString(splitByChar(';', 'a;b'))", "['a','b']"),
    _fn("splitByString", "SELECT toString(splitByString('->', 'a -> b'))", "['a ',' b']"),
    _fn("substring", "SELECT substring('edit: a', 1, 4)", "edit"),
    _fn(
        "toDateTime64",
        "SELECT toString(toDateTime64('2026-11-26 10:42:00.123', 3, 'UTC'))",
        "2026-11-26 10:42:00.123",
    ),
    _fn("toIntervalDay", "SELECT toString(toDate('2026-11-23') + toIntervalDay(7))", "2026-11-30"),
    _fn(
        "toIntervalMillisecond",
        "SELECT toString(toDateTime64('2026-11-30 00:00:00', 3, 'UTC') - toIntervalMillisecond(1))",
        "2026-11-29 23:59:59.999",
    ),
    _fn("toIntervalWeek", "SELECT toString(toDate('2026-11-23') + toIntervalWeek(2))", "2026-12-07"),
    _fn("toStartOfMonth", "SELECT toString(toStartOfMonth(toDate('2026-11-26')))", "2026-11-01"),
    _fn("toUInt32", "SELECT toUInt32('7')", "7"),
    _fn("trimBoth", "SELECT concat('[', trimBoth('  a b  '), ']')", "[a b]"),
    # What the Grafana datasource's $__timeInterval macro expands to.
    _fn(
        "toStartOfInterval",
        "SELECT toString(toStartOfInterval(toDateTime('2026-11-26 10:42:31', 'UTC'), INTERVAL 20 second))",
        "2026-11-26 10:42:20",
    ),
)


def probe_features(client: Client, database: str, features: Iterable[Feature] = FEATURES) -> list[Check]:
    """Run every feature's probe on ``client``: a check per failing feature, and one summing up.

    Probes that create objects do so in a scratch database, dropped afterwards; when it cannot be
    created (no CREATE DATABASE grant), those probes are skipped with a warning. ``database`` must be
    a plain identifier (``ValueError`` otherwise).
    """
    check_database_name(database)
    features = list(features)
    scratch = f"{database}_doctor_{uuid.uuid4().hex[:8]}"
    scratch_error: str | None = None
    if any(f.needs_scratch for f in features):
        try:
            client.command(f"CREATE DATABASE {scratch}")
        except Exception as exc:
            scratch_error = _first_line(exc)
    failed: list[Check] = []
    skipped: list[str] = []
    try:
        for feature in features:
            if feature.needs_scratch and scratch_error is not None:
                skipped.append(feature.name)
                continue
            problem = _run_probe(client, feature, scratch)
            if problem is not None:
                failed.append(
                    Check(
                        "clickhouse",
                        f"SQL: {feature.name}",
                        Status.fail,
                        problem,
                        f"use a ClickHouse server ≥ {_version_text(MIN_CLICKHOUSE_VERSION)} with default "
                        "settings for this user (the views were written and tested on those)",
                    )
                )
    finally:
        if scratch_error is None:
            # The checks' answer matters more than the scratch database.
            with contextlib.suppress(Exception):
                client.command(f"DROP DATABASE IF EXISTS {scratch}")
    probed = len(features) - len(skipped)
    summary_status = Status.fail if failed else Status.warn if skipped else Status.ok
    detail = f"{probed - len(failed)} of {probed} SQL features the migrations and views use work as expected"
    fix = "see the failing features below" if failed else ""
    if skipped:
        detail += f"; {len(skipped)} not probed: no scratch database ({scratch_error})"
        fix = fix or "grant CREATE DATABASE to this user to probe tables and views (or trust `migrate`)"
    return [Check("clickhouse", "SQL features", summary_status, detail, fix), *failed]


def _run_probe(client: Client, feature: Feature, scratch: str) -> str | None:
    try:
        result = None
        for statement in feature.probe:
            sql = statement.replace("{scratch}", scratch)
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                result = client.query(sql).result_rows
            else:
                client.command(sql)
    except Exception as exc:
        return f"the probe failed: {_first_line(exc)}"
    got = None if not result else result[0][0]
    if str(got) != feature.expect:
        return f"expected {feature.expect!r}, the server returned {got!r}"
    return None


# ------------------------------------------------------------------------------------ ClickHouse


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def parse_version(text: str) -> tuple[int, ...]:
    """``26.9.2.1`` -> (26, 9, 2, 1); whatever follows the numbers is ignored."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("-")[0])[:4])


def connect_clickhouse(settings: Settings) -> tuple[Client | None, Check]:
    """A client for the configured ClickHouse, and the check saying whether it answered."""
    from infra.clickhouse import ClickHouseBusyError, connect

    shown = settings.clickhouse.shown_url
    driver_log = logging.getLogger("clickhouse_connect")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)  # it logs each failed attempt; the check says it once
    try:
        client = connect(settings.clickhouse, connect_timeout=5, send_receive_timeout=30)
        client.command("SELECT 1")
    except ClickHouseBusyError as exc:
        return None, Check(
            "clickhouse",
            "answers",
            Status.warn,
            str(exc).split(": chdb allows")[0]
            + ": the ClickHouse checks need it (chdb: one process at a time)",
            "run doctor while no worker holds the chdb directory, or use a ClickHouse server",
        )
    except Exception as exc:
        message = _first_line(exc)
        # clickhouse-connect wraps the socket's error in a page of HTTP-pool text: keep the error.
        errno = re.search(r"\[Errno -?\d+\] [^\"')]+", message)
        message = errno.group(0) if errno else message
        if re.search(r"authentication|password|516", message, re.IGNORECASE):
            fix = f"fix the user and password in {_URL} (now {shown})"
        else:
            fix = (
                f"start the ClickHouse server, or set {_URL} (now {shown}) to one this machine reaches: "
                "http(s)://user:password@host:8123, or chdb:///dir for embedded ClickHouse"
            )
        return None, Check("clickhouse", "answers", Status.fail, f"{shown}: {message}", fix)
    finally:
        driver_log.setLevel(level)
    return client, Check("clickhouse", "answers", Status.ok, shown)


def clickhouse_checks(client: Client, settings: Settings) -> list[Check]:
    """Version, SQL features, migrations and permissions of the ClickHouse behind ``client``."""
    from infra.clickhouse import chdb_path

    database = settings.clickhouse.database
    checks: list[Check] = []
    version_text = str(client.query("SELECT version()").result_rows[0][0])
    version = parse_version(version_text)
    embedded = chdb_path(settings.clickhouse.url) is not None
    kind = "embedded (chdb)" if embedded else "server"
    if version[:2] >= MIN_CLICKHOUSE_VERSION:
        checks.append(
            Check(
                "clickhouse",
                "version",
                Status.ok,
                f"ClickHouse {version_text}, {kind}; supported from {_version_text(MIN_CLICKHOUSE_VERSION)}",
            )
        )
    else:
        checks.append(
            Check(
                "clickhouse",
                "version",
                Status.fail,
                f"ClickHouse {version_text} ({kind}) is older than {_version_text(MIN_CLICKHOUSE_VERSION)}, "
                "the oldest the migrations and views are tested on",
                f"upgrade the server to ClickHouse ≥ {_version_text(MIN_CLICKHOUSE_VERSION)} "
                "(docker-compose.yml pins clickhouse/clickhouse-server of that generation)",
            )
        )
    if embedded:
        checks.append(
            Check(
                "clickhouse",
                "embedded",
                Status.ok,
                "chdb: right for one machine; one sink may write it (a second sink in the group is refused)",
                "",
            )
        )
    checks += probe_features(client, database)
    checks.append(_migrations_check(client, database))
    if checks[-1].status is Status.ok:
        checks.append(retention_check(client, settings))
        checks += _permission_checks(client, database)
    else:
        checks.append(
            Check(
                "clickhouse",
                "permissions",
                Status.skip,
                "needs the migrated tables",
                "run feedbackloop migrate",
            )
        )
    return checks


def _migrations_check(client: Client, database: str) -> Check:
    from sinks.clickhouse import migrations

    shipped = {m.version: f"{m.version:04d}_{m.name}" for m in migrations()}
    try:
        rows = client.query(f"SELECT version FROM {database}.schema_migrations").result_rows  # noqa: S608
        applied = {int(row[0]) for row in rows}
    except Exception as exc:
        missing_db = re.search(r"UNKNOWN_(DATABASE|TABLE)|doesn't exist|does not exist", str(exc))
        detail = f"database {database} has no migrations yet" if missing_db else _first_line(exc)
        return Check("clickhouse", "migrations", Status.fail, detail, "run feedbackloop migrate")
    missing = [name for version, name in sorted(shipped.items()) if version not in applied]
    unknown = sorted(applied - set(shipped))
    if missing:
        return Check(
            "clickhouse",
            "migrations",
            Status.fail,
            f"{len(missing)} of {len(shipped)} not applied to {database}: {', '.join(missing)}",
            "run feedbackloop migrate",
        )
    if unknown:
        return Check(
            "clickhouse",
            "migrations",
            Status.warn,
            f"{database} has migrations this feedbackloop does not know ({unknown}): a newer one migrated it",
            "upgrade feedbackloop here",
        )
    return Check("clickhouse", "migrations", Status.ok, f"all {len(shipped)} applied to {database}")


def retention_check(client: Client, settings: Settings) -> Check:
    """Whether the raw-text TTLs of the database are what ``retention.raw_text_days`` says."""
    from sinks.clickhouse.retention import retention_state

    env = "FEEDBACKLOOP_RETENTION__RAW_TEXT_DAYS"
    state = retention_state(client, settings.clickhouse.database)
    found = sorted(set(state.values()), key=lambda d: -1 if d is None else d)
    wanted = settings.retention.raw_text_days
    if wanted is not None and any(days != (wanted or None) for days in state.values()):
        differ = sorted(f"{t}.{c}" if c else t for (t, c), days in state.items() if days != (wanted or None))
        return Check(
            "clickhouse",
            "retention",
            Status.fail,
            f"{env}={wanted}, but {', '.join(differ)} keep raw text "
            + " / ".join("until erased" if d is None else f"{d} days" for d in found),
            "run feedbackloop migrate (the sink applies it too when it starts)",
        )
    if found == [None]:
        return Check(
            "clickhouse",
            "retention",
            Status.ok,
            "raw text (prompts, responses, corrections, comments) kept until erased: no TTLs",
            f"to expire it, set {env} (e.g. 90) and run feedbackloop migrate" if wanted is None else "",
        )
    shown = " / ".join("until erased" if d is None else f"{d} days" for d in found)
    return Check("clickhouse", "retention", Status.ok, f"raw text kept {shown}, dead letters as long")


def _view_arguments(as_select: str) -> str:
    """Arguments that satisfy a parameterized view's ``{name:Type}`` parameters (empty if none)."""
    values = []
    for name, kind in dict(re.findall(r"\{(\w+):([^}]+)\}", as_select)).items():
        if kind.startswith(("DateTime", "Date")):
            values.append(f"{name} = '1970-01-01 00:00:00'")
        elif kind.startswith("String"):
            values.append(f"{name} = 'day'")
        else:
            values.append(f"{name} = 0")
    return f"({', '.join(values)})" if values else ""


def _permission_checks(client: Client, database: str) -> list[Check]:
    from sinks.rows import TABLES

    objects = client.query(
        "SELECT name, engine, as_select FROM system.tables WHERE database = %(db)s ORDER BY name",
        parameters={"db": database},
    ).result_rows
    denied_select = []
    for name, engine, as_select in objects:
        args = _view_arguments(str(as_select)) if engine == "View" else ""
        try:
            client.query(f"SELECT * FROM {database}.{name}{args} LIMIT 0")  # noqa: S608
        except Exception as exc:
            denied_select.append(f"{name} ({_first_line(exc)[:80]})")
    denied_insert = []
    for table in sorted({spec.table for spec in TABLES}):
        # Nothing is inserted, but ClickHouse checks the INSERT (and SELECT) grant before it runs.
        try:
            sql = f"INSERT INTO {database}.{table} SELECT * FROM {database}.{table} LIMIT 0"  # noqa: S608
            client.command(sql)
        except Exception as exc:
            denied_insert.append(f"{table} ({_first_line(exc)[:80]})")
    return [
        Check(
            "clickhouse",
            "select permission",
            Status.fail if denied_select else Status.ok,
            f"denied on {', '.join(denied_select)}"
            if denied_select
            else f"every table and view of {database} ({len(objects)})",
            f"GRANT SELECT ON {database}.* TO <the user in {_URL}>" if denied_select else "",
        ),
        Check(
            "clickhouse",
            "insert permission",
            Status.fail if denied_insert else Status.ok,
            f"denied on {', '.join(denied_insert)}"
            if denied_insert
            else f"the sink's {len({s.table for s in TABLES})} tables",
            f"GRANT INSERT ON {database}.* TO <the user in {_URL}>" if denied_insert else "",
        ),
    ]


# ----------------------------------------------------------------------------------------- Kafka


#: The SASL mechanisms every client can be given (a user name and a password: librdkafka and aiokafka).
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _hosts(bootstrap: str) -> list[str]:
    return [server.strip().rsplit(":", 1)[0].strip("[]") for server in bootstrap.split(",") if server.strip()]


def _unreadable(paths: Iterable[tuple[str, Path | None]]) -> list[str]:
    """``name (path)`` of each file given that this process cannot read."""
    return [f"{name} ({path})" for name, path in paths if path is not None and not os.access(path, os.R_OK)]


def security_check(kafka: KafkaSettings) -> Check:
    """Whether the Kafka security settings hang together, what they expose, and -- when they do --
    what every client uses: the protocol, the SASL mechanism and user, the CA and client certificate."""
    protocol, mechanism = kafka.security_protocol, kafka.sasl_mechanism
    sasl = kafka.uses_sasl
    env = "FEEDBACKLOOP_KAFKA__"
    if sasl and not mechanism:
        return Check(
            "kafka",
            "security",
            Status.fail,
            f"{protocol} without a SASL mechanism",
            f"set {env}SASL_MECHANISM (one of {', '.join(_MECHANISMS)})",
        )
    if mechanism and not sasl:
        return Check(
            "kafka",
            "security",
            Status.fail,
            f"SASL mechanism {mechanism} is set, but {protocol} does not use SASL: it is ignored",
            f"set {env}SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), or unset {env}SASL_MECHANISM",
        )
    if mechanism and mechanism.upper() not in _MECHANISMS:
        return Check(
            "kafka",
            "security",
            Status.fail,
            f"unsupported SASL mechanism {mechanism}",
            f"set {env}SASL_MECHANISM to one of {', '.join(_MECHANISMS)}",
        )
    if mechanism and not (kafka.sasl_username and kafka.sasl_password):
        return Check(
            "kafka",
            "security",
            Status.fail,
            f"SASL {mechanism} needs a user name and a password",
            f"set {env}SASL_USERNAME and {env}SASL_PASSWORD",
        )
    files = [
        ("SSL_CA_FILE", kafka.ssl_ca_file),
        ("SSL_CERT_FILE", kafka.ssl_cert_file),
        ("SSL_KEY_FILE", kafka.ssl_key_file),
    ]
    given = [name for name, path in files if path is not None]
    if given and not kafka.uses_tls:
        return Check(
            "kafka",
            "security",
            Status.fail,
            f"{', '.join(env + name for name in given)} set, but {protocol} does not use TLS: ignored",
            f"set {env}SECURITY_PROTOCOL=SSL (or SASL_SSL), or unset them",
        )
    unreadable = _unreadable((env + name, path) for name, path in files)
    if unreadable:
        return Check(
            "kafka",
            "security",
            Status.fail,
            f"cannot read {', '.join(unreadable)}",
            "point the setting at a PEM file this user can read",
        )
    if kafka.uses_tls:
        from infra.kafka import ssl_context

        try:
            ssl_context(kafka)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a bad file or key password
            return Check(
                "kafka",
                "security",
                Status.fail,
                f"the TLS files do not load: {_first_line(exc)}",
                f"check {env}SSL_CA_FILE, {env}SSL_CERT_FILE, {env}SSL_KEY_FILE and {env}SSL_KEY_PASSWORD",
            )
    # A name without dots is a host on a private network (a compose service); the rest may not be.
    exposed = [h for h in _hosts(kafka.bootstrap_servers) if not _loopback(h) and "." in h]
    if not kafka.uses_tls and exposed:
        secret = " and the SASL password" if mechanism and mechanism.upper() == "PLAIN" else ""
        return Check(
            "kafka",
            "security",
            Status.warn,
            f"{protocol}: events{secret} cross the network to {', '.join(exposed)} unencrypted",
            f"set {env}SECURITY_PROTOCOL=SSL or SASL_SSL unless that network is private",
        )
    how = _kafka_security_in_use(kafka)
    if kafka.uses_tls and not kafka.ssl_check_hostname:
        return Check(
            "kafka",
            "security",
            Status.warn,
            how,
            f"host names are not checked against the brokers' certificates: set {env}SSL_CHECK_HOSTNAME=true "
            "once the brokers' certificates name the addresses clients use",
        )
    return Check("kafka", "security", Status.ok, how)


def _kafka_security_in_use(kafka: KafkaSettings) -> str:
    """What every client uses, in one line (never a secret)."""
    parts: list[str] = [kafka.security_protocol]
    if kafka.uses_sasl:
        parts.append(f"SASL {kafka.sasl_mechanism} as {kafka.sasl_username}")
    if kafka.uses_tls:
        ca = f"the CA in {kafka.ssl_ca_file}" if kafka.ssl_ca_file is not None else "the system's CAs"
        checked = "host names checked" if kafka.ssl_check_hostname else "host names NOT checked"
        parts.append(f"brokers verified against {ca} ({checked})")
        if kafka.ssl_cert_file is not None:
            parts.append(f"client certificate {kafka.ssl_cert_file}")
    return ", ".join(parts) + "; for every client (confluent-kafka, the SDK, Faust)"


def clickhouse_security_check(clickhouse: ClickHouseSettings) -> Check:
    """How the ClickHouse client connects: embedded, http (where that is a risk) or https verified
    against which CA; with a password or not (never the password)."""
    url = clickhouse.shown_url
    env = "FEEDBACKLOOP_CLICKHOUSE__"
    scheme = urlsplit(clickhouse.url).scheme
    if scheme == "chdb":
        return Check("clickhouse", "security", Status.ok, "embedded (chdb): no network, no credentials")
    host = urlsplit(clickhouse.url).hostname or ""
    password = "with a password" if clickhouse.password is not None else "without a password"
    if scheme == "http":
        if _loopback(host) or "." not in host:
            return Check("clickhouse", "security", Status.ok, f"http to {url}, {password} (local or private)")
        return Check(
            "clickhouse",
            "security",
            Status.warn,
            f"http to {url}: the password and every row cross the network unencrypted",
            f"use https:// in {_URL} (and {env}CA_CERT if the server's certificate is not publicly trusted)",
        )
    unreadable = _unreadable(
        (env + name, path)
        for name, path in (
            ("CA_CERT", clickhouse.ca_cert),
            ("CLIENT_CERT", clickhouse.client_cert),
            ("CLIENT_CERT_KEY", clickhouse.client_cert_key),
        )
    )
    if unreadable:
        return Check(
            "clickhouse",
            "security",
            Status.fail,
            f"cannot read {', '.join(unreadable)}",
            "point the setting at a PEM file this user can read",
        )
    if not clickhouse.verify:
        return Check(
            "clickhouse",
            "security",
            Status.warn,
            f"https to {url}, {password}, the server's certificate NOT verified",
            f"set {env}VERIFY=true ({env}CA_CERT: the CA that signed the server's certificate)",
        )
    ca = f"the CA in {clickhouse.ca_cert}" if clickhouse.ca_cert is not None else "the system's CAs"
    client = f", client certificate {clickhouse.client_cert}" if clickhouse.client_cert is not None else ""
    return Check(
        "clickhouse",
        "security",
        Status.ok,
        f"https to {url}, {password}, server verified against {ca}{client}",
    )


def _admin(kafka: KafkaSettings) -> Any:
    from confluent_kafka.admin import AdminClient

    from infra.kafka import client_config

    return AdminClient(client_config(kafka, **{"socket.connection.setup.timeout.ms": 5000}))


def _broker_check(kafka: KafkaSettings, timeout_s: float) -> tuple[Any, Check]:
    from confluent_kafka import KafkaException

    admin = _admin(kafka)
    started = time.monotonic()
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)
        error = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        return None, Check(
            "kafka",
            "brokers reachable",
            Status.fail,
            f"no broker answered at {kafka.bootstrap_servers} within {timeout_s:.0f} s ({error})",
            f"start the broker (feedbackloop stack up, or docker compose up -d kafka), or set {_BOOTSTRAP} "
            f"(now {kafka.bootstrap_servers}) to brokers this machine reaches",
        )
    admin.poll(0)
    took = (time.monotonic() - started) * 1000
    brokers = sorted(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    return metadata, Check(
        "kafka",
        "brokers reachable",
        Status.ok,
        f"{len(brokers)} broker(s) via {kafka.bootstrap_servers}, cluster {metadata.cluster_id}, "
        f"{took:.0f} ms",
    )


def _advertised_check(metadata: Any) -> Check:
    unreachable = []
    for broker in metadata.brokers.values():
        try:
            with socket.create_connection((broker.host, broker.port), timeout=3):
                pass
        except OSError as exc:
            unreachable.append(f"{broker.host}:{broker.port} ({exc.strerror or exc})")
    if unreachable:
        return Check(
            "kafka",
            "advertised listeners",
            Status.fail,
            f"the brokers advertise addresses this machine cannot reach: {', '.join(unreachable)}",
            "clients connect to what the brokers advertise: give them a listener advertised for this "
            "network (docker-compose.yml: 127.0.0.1:9092 from the host, kafka:19092 inside), or run "
            "this where those names resolve",
        )
    shown = ", ".join(sorted(f"{b.host}:{b.port}" for b in metadata.brokers.values()))
    return Check("kafka", "advertised listeners", Status.ok, f"reachable: {shown}")


def expected_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """The public topics (which must exist) and the processors' internal topics (checked if they do)."""
    from infra.kafka import public_topic_names

    internal_prefix = app_id(settings)
    internal = [
        contributions_topic(settings),
        f"{internal_prefix}-records-changelog",
        f"{internal_prefix}-windows-changelog",
    ]
    return public_topic_names(settings.kafka), internal


def topics_check(settings: Settings, metadata: Any) -> Check:
    """Every topic present with ``kafka.partitions`` partitions (co-partitioning by session_id)."""
    want = settings.kafka.partitions
    public, internal = expected_topics(settings)
    existing = {name: len(topic.partitions) for name, topic in metadata.topics.items()}
    missing = [name for name in public if name not in existing]
    counts = {name: existing[name] for name in public + internal if name in existing}
    wrong = {name: n for name, n in counts.items() if n != want}
    env = "FEEDBACKLOOP_KAFKA__PARTITIONS"
    if wrong:
        found = sorted(set(counts.values()))
        if len(found) == 1:
            fix = f"set {env}={found[0]}: that is what every existing topic has (now {want})"
        else:
            fix = (
                "events of a session meet by partition number, so every topic needs one count: recreate the "
                f"odd ones with {env} partitions (a topic's partitions cannot shrink)"
            )
        shown = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        return Check("kafka", "topics", Status.fail, f"{shown}; {env} is {want}", fix)
    if missing:
        return Check(
            "kafka",
            "topics",
            Status.warn,
            f"{len(missing)} of {len(public)} public topics not created yet: {', '.join(missing)}",
            "feedbackloop worker creates them when it starts (feedbackloop stack up does locally); until "
            "then producers spool",
        )
    return Check(
        "kafka",
        "topics",
        Status.ok,
        f"{len(counts)} topics ({len(public)} public), {want} partitions each: co-partitioned",
    )


@dataclass(frozen=True)
class _Group:
    role: str
    group_id: str
    essential: bool  # a running worker has members in it


def _groups(settings: Settings) -> list[_Group]:
    return [
        _Group("processors", app_id(settings), True),
        _Group("sink", sink_group_id(settings), True),
        _Group("evaluator lease", lease_group_id(settings), True),
        _Group("evaluator progress", progress_group_id(settings), False),
    ]


def group_checks(settings: Settings, *, running: bool, timeout_s: float = 10.0) -> list[Check]:
    """The state of each consumer group; a failure for a split (two sinks on chdb) and, with
    ``running``, for a group a running worker should be in but nobody is."""
    from confluent_kafka import KafkaException

    from infra.clickhouse import chdb_path

    admin = _admin(settings.kafka)
    groups = _groups(settings)
    futures = admin.describe_consumer_groups([g.group_id for g in groups], request_timeout=timeout_s)
    checks = []
    for group in groups:
        name = f"group {group.role}"
        try:
            description = futures[group.group_id].result()
        except KafkaException as exc:
            checks.append(Check("kafka", name, Status.fail, f"{group.group_id}: {_first_line(exc)}", ""))
            continue
        members = description.members or []
        state = getattr(description.state, "name", str(description.state))
        hosts = sorted({m.host.lstrip("/") for m in members})
        if members:
            detail = f"{group.group_id}: {state.lower()}, {len(members)} member(s) on {', '.join(hosts)}"
        else:
            detail = f"{group.group_id}: no members ({'never used' if state == 'DEAD' else state.lower()})"
        if group.role == "sink" and len(members) > 1 and chdb_path(settings.clickhouse.url) is not None:
            checks.append(
                Check(
                    "kafka",
                    name,
                    Status.fail,
                    detail + ": sinks on embedded ClickHouse split the data between their databases",
                    f"point every sink at one ClickHouse server ({_URL}=http://user:password@host:8123)",
                )
            )
        elif running and group.essential and not members:
            checks.append(
                Check(
                    "kafka", name, Status.fail, detail, "no worker runs this stage: start feedbackloop worker"
                )
            )
        elif state in ("PREPARING_REBALANCE", "COMPLETING_REBALANCE"):
            checks.append(Check("kafka", name, Status.warn, detail + " (rebalancing)", ""))
        else:
            checks.append(Check("kafka", name, Status.ok, detail))
    admin.poll(0)
    return checks


# ------------------------------------------------------------------------------------ this host


def local_checks(settings: Settings) -> list[Check]:
    """The folders this machine's worker and SDK write: the processors' state and the spool."""
    from feedbackloop.worker import DataDirError, prepare_data_dir

    checks = []
    try:
        path = prepare_data_dir(settings)
        checks.append(Check("host", "worker state folder", Status.ok, f"{path} is writable"))
    except DataDirError as exc:
        checks.append(
            Check(
                "host",
                "worker state folder",
                Status.fail,
                str(exc).split(": set ")[0],
                "set FEEDBACKLOOP_PIPELINE__DATA_DIR to a folder the worker's user owns",
            )
        )
    spool = settings.producer.spool_dir.absolute()
    probe = spool if spool.exists() else next((p for p in spool.parents if p.exists()), Path("/"))
    if os.access(probe, os.W_OK | os.X_OK):
        checks.append(Check("host", "SDK spool folder", Status.ok, f"{spool} is writable"))
    else:
        checks.append(
            Check(
                "host",
                "SDK spool folder",
                Status.fail,
                f"{probe} is not writable by uid {os.getuid()}, so {spool} cannot be used",
                "set FEEDBACKLOOP_PRODUCER__SPOOL_DIR to a folder the app's user owns",
            )
        )
    return checks


# ------------------------------------------------------------------------------------------- run


def run_checks(
    settings: Settings, *, scope: Scope = Scope.all, running: bool = False, timeout_s: float = 10.0
) -> list[Check]:
    """Every check of ``scope``, in the order they are shown (``timeout_s``: how long Kafka may
    take to answer)."""
    checks: list[Check] = []
    if scope in (Scope.all, Scope.kafka, Scope.reachable):
        kafka = settings.kafka
        metadata, reached = _broker_check(kafka, timeout_s=timeout_s)
        checks.append(reached)
        if scope is not Scope.reachable:
            checks.append(security_check(kafka))
            if metadata is None:
                checks.append(Check("kafka", "topics and groups", Status.skip, "needs a reachable broker"))
            else:
                checks.append(_advertised_check(metadata))
                checks.append(topics_check(settings, metadata))
                checks += group_checks(settings, running=running, timeout_s=timeout_s)
    if scope in (Scope.all, Scope.clickhouse, Scope.reachable):
        client, answered = connect_clickhouse(settings)
        checks.append(answered)
        if scope is not Scope.reachable:
            checks.append(clickhouse_security_check(settings.clickhouse))
        if client is not None:
            try:
                if scope is not Scope.reachable:
                    checks += clickhouse_checks(client, settings)
            finally:
                client.close()
    if scope is Scope.all:
        checks += local_checks(settings)
    return checks


_SYMBOL = {
    Status.ok: "[green]✓[/green]",
    Status.warn: "[yellow]![/yellow]",
    Status.fail: "[red]✗[/red]",
    Status.skip: "[dim]–[/dim]",
}


def print_checks(checks: list[Check], console: Console) -> None:
    """The checks as a table, then a line counting them."""
    table = Table("", "check", "found", "fix", box=box.SIMPLE_HEAVY, title="feedbackloop doctor")
    for check in checks:
        table.add_row(_SYMBOL[check.status], f"{check.area}: {check.name}", check.detail, check.fix)
    console.print(table)
    counts = {status: sum(c.status is status for c in checks) for status in Status}
    console.print(
        f"{len(checks)} checks: {counts[Status.ok]} ok, {counts[Status.warn]} warnings, "
        f"{counts[Status.fail]} failed" + (f", {counts[Status.skip]} skipped" if counts[Status.skip] else "")
    )


def run_doctor(
    settings: Settings,
    console: Console,
    *,
    scope: Scope = Scope.all,
    running: bool = False,
    wait_s: float = 0.0,
) -> int:
    """Run the checks (again every 2 s while any fails, for up to ``wait_s``), print them; return
    the exit code: 1 when any failed."""
    deadline = time.monotonic() + wait_s
    while True:
        found = run_checks(settings, scope=scope, running=running)
        failed = [c for c in found if c.status is Status.fail]
        if not failed or time.monotonic() >= deadline:
            break
        console.print(
            f"waiting for: {', '.join(f'{c.area}: {c.name}' for c in failed)} "
            f"({deadline - time.monotonic():.0f} s left)"
        )
        time.sleep(2.0)
    print_checks(found, console)
    return 1 if failed else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the command line."""

    @app.command("doctor")
    def doctor_cmd(
        scope: Annotated[
            Scope, typer.Option(help="all; kafka or clickhouse alone; reachable: only whether both answer.")
        ] = Scope.all,
        running: Annotated[
            bool, typer.Option("--running", help="Also fail when no worker is in a stage's consumer group.")
        ] = False,
        wait: Annotated[
            float, typer.Option(help="Retry failing checks for up to this many seconds (a readiness wait).")
        ] = 0.0,
    ) -> None:
        """Check a deployment before data flows: Kafka, topics, groups, security, ClickHouse, folders."""
        from feedbackloop.context import load_settings
        from feedbackloop.output import console

        raise typer.Exit(run_doctor(load_settings(), console, scope=scope, running=running, wait_s=wait))


__all__ = [
    "FEATURES",
    "MIN_CLICKHOUSE_VERSION",
    "Check",
    "Feature",
    "Scope",
    "Status",
    "clickhouse_checks",
    "clickhouse_security_check",
    "connect_clickhouse",
    "print_checks",
    "probe_features",
    "register",
    "retention_check",
    "run_checks",
    "run_doctor",
    "security_check",
    "topics_check",
]
