"""One table's buffer: rows wait here until a write, and a failed write is sorted out by whose fault it was.

Backend-neutral and broker-free: the writer and the classification come from the backend, the rows'
sources are opaque. A write that fails because the backend cannot take rows now leaves every row
buffered (the runner pauses and retries). A write the backend refuses because of some rows is split
in halves until those rows are found; they come back as refused (for the dead-letter topic), the rest
are written. If the backend becomes unavailable halfway through that search, the rows not yet written
or refused stay buffered for the retry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sinks.protocol import Fault, TableWriter


@dataclass
class Pending:
    """A buffered row and where it came from (for its offset and its dead letter)."""

    row: list[Any]
    source: Any


@dataclass
class FlushResult:
    """What one flush did: rows written, rows refused with the backend's reason, and the error that
    stopped it if the backend became unavailable (the rows it did not get to are still buffered)."""

    written: list[Pending] = field(default_factory=list)
    refused: list[tuple[Pending, str]] = field(default_factory=list)
    unavailable: BaseException | None = None


class TableBuffer:
    """Rows for one table, written in batches by ``writer``; ``classify`` says whose fault a failure is."""

    def __init__(self, table: str, writer: TableWriter, classify: Callable[[BaseException], Fault]) -> None:
        self.table = table
        self._writer = writer
        self._classify = classify
        self._rows: list[Pending] = []

    def add(self, row: list[Any], source: Any) -> None:
        """Buffer one row."""
        self._rows.append(Pending(row, source))

    def __len__(self) -> int:
        return len(self._rows)

    def pending(self) -> list[Pending]:
        """The rows not yet written, in the order they were added."""
        return list(self._rows)

    def discard(self, drop: Callable[[Any], bool]) -> int:
        """Forget the rows whose source ``drop`` selects (their partition was taken away); return how many."""
        kept = [p for p in self._rows if not drop(p.source)]
        dropped = len(self._rows) - len(kept)
        self._rows = kept
        return dropped

    def drop_rows(self, drop: Callable[[list[Any]], bool]) -> int:
        """Forget the buffered rows ``drop`` selects (an erased user's); return how many. Their offsets
        become committable: the rows are meant never to be written."""
        kept = [p for p in self._rows if not drop(p.row)]
        dropped = len(self._rows) - len(kept)
        self._rows = kept
        return dropped

    def flush(self) -> FlushResult:
        """Write what is buffered, as one batch if the backend takes it."""
        result = FlushResult()
        if not self._rows:
            return result
        batch = self._rows
        try:
            self._write(batch)
        except Exception as exc:  # the backend decides whose fault it was
            if self._classify(exc) is Fault.TRANSIENT:
                result.unavailable = exc
                return result
            self._rows = self._isolate(batch, result)
            return result
        self._rows = []
        result.written = batch
        return result

    def _write(self, batch: Iterable[Pending]) -> None:
        self._writer.write([p.row for p in batch])

    def _isolate(self, batch: list[Pending], result: FlushResult) -> list[Pending]:
        """Split ``batch`` (which the backend refused) until the refused rows are alone; return the rows
        left unresolved because the backend became unavailable meanwhile (in their original order)."""
        middle = len(batch) // 2
        parts: deque[list[Pending]] = deque([batch[:middle], batch[middle:]] if len(batch) > 1 else [batch])
        while parts:
            part = parts.popleft()
            try:
                self._write(part)
            except Exception as exc:  # the backend decides whose fault it was
                if self._classify(exc) is Fault.TRANSIENT:
                    result.unavailable = exc
                    return [p for rest in (part, *parts) for p in rest]
                if len(part) == 1:
                    result.refused.append((part[0], str(exc)))
                else:
                    middle = len(part) // 2
                    parts.extendleft([part[middle:], part[:middle]])
                continue
            result.written.extend(part)
        return []
