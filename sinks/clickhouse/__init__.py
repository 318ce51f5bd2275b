"""The ClickHouse backend of the sink: its schema (numbered migrations) and its batched table writer."""

from sinks.clickhouse.schema import Migration, migrate, migrations
from sinks.clickhouse.writer import Pending, TableWriter

__all__ = ["Migration", "Pending", "TableWriter", "migrate", "migrations"]
