"""Which offsets the sink may commit: per partition, up to the first row not yet in the backend.

Pure bookkeeping, no broker. A partition's committable offset is the offset of its first row still
buffered (not written, not dead-lettered); with nothing buffered, the offset after the last message
read. Messages that become no row (invalid input counted and skipped, validation dead letters) only
move the read position. So a commit never covers a row the backend does not hold, whatever failed.
"""

from __future__ import annotations

from collections.abc import Iterable

#: (topic, partition)
Partition = tuple[str, int]


class OffsetLedger:
    """Read positions and committed offsets per partition."""

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def read(self, partition: Partition, offset: int) -> None:
        """A message at ``offset`` was taken from ``partition`` (buffered, skipped or dead-lettered)."""
        self._next[partition] = offset + 1

    def committable(
        self, buffered: Iterable[tuple[Partition, int]], only: Iterable[Partition] | None = None
    ) -> dict[Partition, int]:
        """Offsets to commit now: per partition read (or of ``only``), the first buffered offset, else
        the next unread one — where that is beyond what was committed already."""
        first: dict[Partition, int] = {}
        for partition, offset in buffered:
            if offset < first.get(partition, offset + 1):
                first[partition] = offset
        wanted = self._next.keys() if only is None else [p for p in only if p in self._next]
        safe = {p: min(first.get(p, self._next[p]), self._next[p]) for p in wanted}
        return {p: o for p, o in safe.items() if o > self._committed.get(p, -1)}

    def committed(self, offsets: dict[Partition, int]) -> None:
        """Record a successful commit of ``offsets``."""
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop what is known about ``partitions`` (revoked or lost: their next owner reads them from
        the committed offset)."""
        for partition in partitions:
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
