"""The ClickHouse schema as code: numbered migration files, applied once each by ``migrate``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

from infra.settings import check_database_name


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of ``sinks/clickhouse/migrations``."""

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
    for entry in resources.files("sinks.clickhouse").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def migrate(client: Client, database: str) -> list[Migration]:
    """Create ``database`` and apply the migrations it has not had yet; return those applied.
    ``database`` must be a plain identifier (``ValueError`` otherwise): it is put into the SQL."""
    check_database_name(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
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
