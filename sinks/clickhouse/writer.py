"""Writes batches of rows into one ClickHouse table, with the outage drill in front of the client.

Replays are harmless: every table folds duplicates by its key (ReplacingMergeTree), so a batch that
failed halfway (some parts written) can be written again whole.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from sinks.faults import OutageDrill


class ClickHouseTableWriter:
    """One table's writer (:class:`sinks.protocol.TableWriter`)."""

    def __init__(
        self, client: Client, table: str, columns: Sequence[str], drill: OutageDrill | None = None
    ) -> None:
        self.client = client
        self.table = table
        self.columns = list(columns)
        self._drill = drill

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in one INSERT, or raise the client's error."""
        if self._drill is not None and self._drill.active():
            until = datetime.fromtimestamp(self._drill.until() or time.time(), UTC).isoformat()
            # What clickhouse-connect raises when the server refuses the connection, so the drill takes
            # the path a real outage takes.
            raise OperationalError(
                f"[Errno 111] Connection refused (outage drill {self._drill.path} until {until})"
            )
        self.client.insert(self.table, rows, column_names=self.columns)
