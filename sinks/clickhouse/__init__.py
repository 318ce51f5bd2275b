"""The ClickHouse backend of the sink: its schema (numbered migrations), its writer, its error classes."""

from sinks.clickhouse.backend import ClickHouseBackend
from sinks.clickhouse.errors import classify
from sinks.clickhouse.retention import RetentionChange, apply_retention
from sinks.clickhouse.schema import Migration, migrate, migrations
from sinks.clickhouse.writer import ClickHouseTableWriter

__all__ = [
    "ClickHouseBackend",
    "ClickHouseTableWriter",
    "Migration",
    "RetentionChange",
    "apply_retention",
    "classify",
    "migrate",
    "migrations",
]
