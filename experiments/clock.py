"""Event-time accounting of the evaluator: partition clocks, when a look is due, where a window is cut. Pure.

Time is the outcomes' own event time, ``settled_at``: the processors' watermark when they emitted that
version of an outcome. Nothing here reads the wall clock; every method takes the times it needs.

Partition clocks
    A partition's *clock* is the largest ``settled_at`` read from it; an outcome's *effective time* is its
    partition's clock when it was read, so effective times never decrease within a partition.

Looks
    A look happens at every window boundary ``T`` (a multiple of the window) once every partition's clock
    has reached ``T``, and counts exactly the outcomes with effective time ``< T``, in (effective time,
    partition, offset) order. No partition can then deliver another outcome that belongs before ``T``, so
    what a look counts depends only on the log, not on how the partitions' messages interleaved.

Window cut
    The processors settle an interaction once their watermark passes ``created_at`` plus the settle delay,
    and stamp that watermark as ``settled_at``. Once a partition's clock has passed a window's end plus
    the delay (its *threshold*), it has emitted every timely outcome of the window -- at the latest in the
    batch that crossed it, whose outcomes all carry the crossing value. A partition therefore contributes
    to a window what it emits until its clock moves past that crossing value, and the window is cut once
    every partition has done so: a cut that depends only on each partition's own log.

Flush (liveness at the end of traffic)
    A silent partition would hold every look back; a flush looks at everything read so far and closes the
    windows some partition has passed. An outcome read afterwards with an earlier effective time counts at
    the next look (its effective time is raised to the last look).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class EventTime(Generic[T]):
    """The clocks of a set of partitions, the items waiting for their look, and the windows cut so far."""

    def __init__(self, partitions: Iterable[int], window_ms: int, settle_delay_ms: int) -> None:
        if window_ms <= 0 or settle_delay_ms < 0:
            raise ValueError("window_ms must be positive and settle_delay_ms non-negative")
        self.window_ms = window_ms
        self.settle_delay_ms = settle_delay_ms
        # Per partition: its clock (largest settled_at read) and the clock before its latest increase.
        self._clock: dict[int, int | None] = dict.fromkeys(partitions)
        self._previous: dict[int, int | None] = dict.fromkeys(self._clock)
        if not self._clock:
            raise ValueError("need at least one partition")
        # Items waiting for their look: (effective time, partition, offset, arrival, item); the arrival
        # number only keeps a message read twice from ever comparing items.
        self._pending: list[tuple[int, int, int, int, T]] = []
        self._arrivals = 0
        self.last_look: int | None = None
        self.closed_through = -(2**62)

    @property
    def started(self) -> bool:
        """Whether any partition has a clock yet."""
        return any(c is not None for c in self._clock.values())

    def read(self, partition: int, settled_ms: int) -> int:
        """Move ``partition``'s clock by one message's ``settled_at``; return the message's effective time.

        A partition not named at construction joins the set.
        """
        clock = self._clock.get(partition)
        if clock is None or settled_ms > clock:
            self._previous[partition] = clock
            self._clock[partition] = clock = settled_ms
        if self.last_look is not None and clock < self.last_look:
            return self.last_look  # read after a flush looked past it: it counts at the next look
        return clock

    def wait(self, effective_ms: int, partition: int, offset: int, item: T) -> None:
        """Hold ``item`` until the look that counts it."""
        self._arrivals += 1
        heapq.heappush(self._pending, (effective_ms, partition, offset, self._arrivals, item))

    def boundary_above(self, ms: int) -> int:
        """The first window boundary strictly after ``ms``."""
        return (ms // self.window_ms + 1) * self.window_ms

    def window_start(self, created_ms: int) -> int:
        """Start of the window an interaction created at ``created_ms`` belongs to."""
        return created_ms - created_ms % self.window_ms

    def threshold(self, start: int) -> int:
        """The watermark at which every (timely) interaction of the window starting at ``start`` has
        settled: the processors settle an interaction when their watermark passes created_at + delay."""
        return start + self.window_ms + self.settle_delay_ms

    def takes(self, partition: int, start: int) -> bool:
        """Whether what ``partition`` emits now still joins the window starting at ``start``.

        Yes while the window is not cut and this partition's clock had not passed its threshold before
        its latest increase: the window takes the whole batch that settled its interactions and nothing
        that partition emits afterwards -- the same cut whatever the interleaving.
        """
        previous = self._previous.get(partition)
        return start >= self.closed_through and (previous is None or previous < self.threshold(start))

    def due_looks(self, *, flush: bool = False) -> Iterator[tuple[int, list[T]]]:
        """Each look that is due, in order, with the items it counts (taken off the queue as it goes).

        Without ``flush`` a look at ``T`` is due when every partition's clock has reached ``T``; with it,
        the looks go up to the first boundary after the newest time read (the end-of-traffic rule).
        """
        clocks = [c for c in self._clock.values() if c is not None]
        if not clocks:
            return
        if flush:
            # Everything read so far, including what was read after an earlier flush looked past it.
            limit = self.boundary_above(max(clocks + [item[0] for item in self._pending]))
        elif len(clocks) < len(self._clock):
            return
        else:
            limit = min(clocks)
        pending = self._pending
        while pending:
            t = self.boundary_above(pending[0][0])
            if self.last_look is not None:
                t = max(t, self.last_look + self.window_ms)
            if t > limit:
                return
            counted = []
            while pending and pending[0][0] < t:
                counted.append(heapq.heappop(pending)[4])
            self.last_look = t
            yield t, counted

    def due_windows(self, starts: Iterable[int], *, flush: bool = False) -> list[int]:
        """Which of the open windows ``starts`` are cut now, oldest first; they count as closed from here.

        Without ``flush`` a window is cut once every partition's clock had passed its threshold before
        its latest increase; with it, once any partition's clock has passed it.
        """
        passed: int | None
        if flush:
            clocks = [c for c in self._clock.values() if c is not None]
            passed = max(clocks) if clocks else None
        else:
            previous = [p for p in self._previous.values() if p is not None]
            passed = min(previous) if len(previous) == len(self._previous) else None
        if passed is None:
            return []
        due = []
        for start in sorted(starts):
            if self.threshold(start) > passed:
                break
            due.append(start)
            self.closed_through = max(self.closed_through, start + self.window_ms)
        return due


__all__ = ["EventTime"]
