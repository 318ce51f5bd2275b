"""Batched, idempotent inserts into one ClickHouse table.

Rows wait in a buffer until the sink flushes (on size, interval or shutdown). A failed insert is
retried with exponential backoff; if it keeps failing, the batch is split in halves until the
rows ClickHouse refuses are isolated, and those go to the dead-letter callback — the rest are
inserted. Replays are harmless: every table folds duplicates by its key (ReplacingMergeTree).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A row and where it came from (for its dead letter)."""

    row: list[Any]
    source: Any


#: Called with a row ClickHouse refused and the error text.
DeadLetterFn = Callable[[Pending, str], None]


@dataclass
class TableWriter:
    """Buffer and insert rows of one table."""

    client: Client
    table: str
    columns: tuple[str, ...]
    dead_letter: DeadLetterFn
    max_retries: int = 5
    backoff_s: float = 0.2
    sleep: Callable[[float], None] = time.sleep
    inserted: int = 0
    refused: int = 0
    _buffer: list[Pending] = field(default_factory=list)

    def add(self, row: list[Any], source: Any) -> None:
        """Buffer one row."""
        self._buffer.append(Pending(row, source))

    def __len__(self) -> int:
        return len(self._buffer)

    def sources(self) -> list[Any]:
        """Where the buffered rows came from (in order)."""
        return [p.source for p in self._buffer]

    def flush(self) -> int:
        """Insert everything buffered; return the rows inserted. Refused rows are dead-lettered."""
        batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        error = self._insert_with_retries(batch)
        if error is None:
            return len(batch)
        log.error("insert into %s keeps failing (%s); isolating the rows it refuses", self.table, error)
        return self._isolate(batch)

    def _insert(self, batch: list[Pending]) -> None:
        self.client.insert(self.table, [p.row for p in batch], column_names=list(self.columns))
        self.inserted += len(batch)

    def _insert_with_retries(self, batch: list[Pending]) -> str | None:
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                self._insert(batch)
                return None
            except Exception as exc:  # any driver or server error: retry, then isolate
                if attempt == self.max_retries:
                    return str(exc)
                log.warning("insert into %s failed (attempt %d): %s", self.table, attempt + 1, exc)
                self.sleep(delay)
                delay = min(delay * 2, 10.0)
        return None  # pragma: no cover - the loop always returns

    def _isolate(self, batch: list[Pending]) -> int:
        # The error persisted through the retries, so splits are tried once each.
        try:
            self._insert(batch)
            return len(batch)
        except Exception as exc:
            if len(batch) == 1:
                self.refused += 1
                self.dead_letter(batch[0], str(exc))
                return 0
        middle = len(batch) // 2
        return self._isolate(batch[:middle]) + self._isolate(batch[middle:])
