"""What the sink asks of a backend — the whole of it, so a second backend is one new module.

The runner (``sinks/runner.py``) owns everything backend-neutral: consuming, buffering per table,
batching, isolating refused rows, pausing while the backend is unavailable, dead letters and offsets.
A backend only connects, prepares its schema, writes a batch of rows to one table (all or nothing,
or at least harmlessly repeatable), deletes erased users' rows, and says whose fault a failure was.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from enum import StrEnum
from typing import Any, Protocol

from sinks.rows import TableSpec


class Fault(StrEnum):
    """Whose fault a failed write was, which decides what the sink does with the rows."""

    #: The backend cannot take rows now (unreachable, overloaded, out of space, misconfigured): keep
    #: the rows and their offsets uncommitted, pause consumption, retry until it can.
    TRANSIENT = "transient"
    #: The backend refuses these rows for what they hold: find them by splitting the batch and
    #: dead-letter them; the rest of the batch is written.
    ROW = "row"


class TableWriter(Protocol):
    """Writes batches of rows (values in ``TableSpec.columns`` order) into one table."""

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Write every row or raise. A write that raised may be repeated with the same rows: the
        backend must make such a replay harmless (the ClickHouse tables fold rows by their key)."""
        ...


class SinkBackend(Protocol):
    """Where the sink writes: one instance per sink process."""

    #: The registry name, for logs and the status file.
    name: str
    #: Rows buffered (over all tables) that trigger a write.
    batch_rows: int
    #: Longest a buffered row waits for its write, in seconds.
    flush_interval_s: float

    def open(self) -> None:
        """Connect and bring the schema up to date (idempotent). Raises like a write; the sink retries
        what :meth:`classify` calls transient."""
        ...

    def writer(self, spec: TableSpec) -> TableWriter:
        """The writer for ``spec.table`` (after :meth:`open`)."""
        ...

    def erase(self, user_ids: Collection[str]) -> dict[str, int]:
        """Delete every row of ``user_ids`` (erased users) from every table that holds user rows; return
        the rows deleted per table. Repeatable: users with no rows left cost a look, no more. Raises
        like a write; the sink retries what :meth:`classify` calls transient."""
        ...

    def classify(self, error: BaseException) -> Fault:
        """Whose fault ``error`` (raised by :meth:`open` or a write) was. Anything not known to be the
        rows' own fault must be :attr:`Fault.TRANSIENT`: a stall shows on the status, a dead letter
        sent by mistake loses the row's place."""
        ...

    def close(self) -> None:
        """Release connections (also after a failed :meth:`open`)."""
        ...
