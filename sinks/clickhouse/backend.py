"""The ClickHouse backend of the sink: embedded chdb or a server, through clickhouse-connect."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection

from clickhouse_connect.driver.client import Client

from infra.clickhouse import connect
from infra.settings import Settings
from sinks.clickhouse.erasure import erase_users
from sinks.clickhouse.errors import classify
from sinks.clickhouse.retention import apply_retention
from sinks.clickhouse.schema import migrate
from sinks.clickhouse.writer import ClickHouseTableWriter
from sinks.faults import OutageDrill
from sinks.protocol import Fault
from sinks.rows import TableSpec

log = logging.getLogger(__name__)


class ClickHouseBackend:
    """Writes each table with one INSERT per batch; the schema is the numbered migrations."""

    name = "clickhouse"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings.clickhouse
        self._retention_days = settings.retention.raw_text_days
        self.batch_rows = settings.clickhouse.insert_batch_rows
        self.flush_interval_s = settings.clickhouse.flush_interval_s
        self._drill = OutageDrill(settings.sink.fault_file) if settings.sink.fault_file else None
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The open client (after :meth:`open`)."""
        if self._client is None:
            raise RuntimeError("the ClickHouse backend is not open")
        return self._client

    def open(self) -> None:
        """Connect (chdb: take the directory), apply the migrations not applied yet, and bring the
        raw-text TTLs to the retention setting."""
        if self._client is None:
            self._client = connect(self._settings)
        migrate(self._client, self._settings.database)
        for change in apply_retention(self._client, self._settings.database, self._retention_days):
            log.info("retention: %s", change)

    def writer(self, spec: TableSpec) -> ClickHouseTableWriter:
        """The writer of ``spec.table`` in the configured database."""
        return ClickHouseTableWriter(
            self.client, f"{self._settings.database}.{spec.table}", spec.columns, self._drill
        )

    def erase(self, user_ids: Collection[str]) -> dict[str, int]:
        """See :mod:`sinks.clickhouse.erasure`."""
        return erase_users(self.client, self._settings.database, user_ids)

    def classify(self, error: BaseException) -> Fault:
        """See :mod:`sinks.clickhouse.errors`."""
        return classify(error)

    def close(self) -> None:
        """Close the client (chdb: release the directory)."""
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing what failed must not hide why it failed
                self._client.close()
            self._client = None
