"""One way to reach ClickHouse — embedded chdb or a server — through clickhouse-connect, and migrations."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from feedbackloop.settings import ClickHouseSettings

_OWNER_FILE = ".feedbackloop-owner"


class ClickHouseBusyError(RuntimeError):
    """The chdb directory is held by another process (chdb allows one process per directory)."""


def chdb_path(url: str) -> Path | None:
    """The data directory of a chdb url, else None: ``chdb:///abs/dir`` or ``chdb://relative/dir``."""
    if not url.startswith("chdb://"):
        return None
    return Path(url.removeprefix("chdb://"))


def connect(settings: ClickHouseSettings) -> Client:
    """A clickhouse-connect client for the configured url (chdb or http(s))."""
    path = chdb_path(settings.url)
    if path is None:
        return clickhouse_connect.get_client(dsn=settings.url)
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except ProgrammingError as exc:
        raise ClickHouseBusyError(_busy_message(path)) from exc
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return client


def _busy_message(path: Path) -> str:
    owner = ""
    try:
        pid = int((path / _OWNER_FILE).read_text())
        os.kill(pid, 0)
        owner = f" by process {pid}"
    except (OSError, ValueError):
        pass
    return (
        f"the chdb directory {path} is in use{owner}: chdb allows one process per directory. "
        "Stop the feedbackloop worker (or whatever holds it) and try again, or point "
        "FEEDBACKLOOP_CLICKHOUSE__URL at a ClickHouse server (http://user:pass@host:8123)."
    )


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of ``sinks/migrations``."""

    version: int
    name: str
    sql: str

    def statements(self, database: str) -> list[str]:
        """The file's statements with ``{db}`` bound to ``database``, comments dropped."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [s.strip().replace("{db}", database) for s in text.split(";") if s.strip()]


def migrations() -> list[Migration]:
    """Every migration shipped with feedbackloop, in order."""
    found = []
    for entry in resources.files("sinks").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def migrate(client: Client, database: str) -> list[Migration]:
    """Create ``database`` and apply the migrations it has not had yet; return those applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    # database is an identifier checked by ClickHouseSettings' pattern, not user data
    applied_sql = f"SELECT version FROM {database}.schema_migrations"  # noqa: S608
    done = {row[0] for row in client.query(applied_sql).result_rows}
    applied = []
    for migration in migrations():
        if migration.version in done:
            continue
        for statement in migration.statements(database):
            client.command(statement)
        client.insert(
            f"{database}.schema_migrations",
            [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        applied.append(migration)
    return applied


def query_rows(
    client: Client, sql: str, parameters: dict[str, Any] | None = None
) -> tuple[list[str], list[Any]]:
    """Run ``sql``; return column names and rows."""
    result = client.query(sql, parameters=parameters)
    return list(result.column_names), [list(row) for row in result.result_rows]
