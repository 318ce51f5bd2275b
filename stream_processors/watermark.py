"""Event-time watermark of one partition, over the input topics that share it.

The watermark is how far event time has certainly progressed: an interaction settles once the
watermark passes its end of observation. Each input topic of the partition reports the largest
event time read from it; the partition's watermark is the smallest of those over the inputs
that still have unread messages (an input that is read to its end cannot hold time back), minus
the allowed out-of-orderness. When every input is known to be read to its end (the caller checks
positions against the broker's high watermarks) and nothing new came for ``idle_advance_ms`` of
wall-clock time, the watermark follows the wall clock instead, so the last interactions of a
quiet partition settle without waiting for new traffic. Events that arrive behind it afterwards
(a late session, a backfill) are not lost: the partition state holds them until their session goes
quiet (``stream_processors.state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Input:
    max_event_ms: int | None = None
    caught_up: bool = False


@dataclass
class Watermark:
    """Watermark of one partition. Pure: wall-clock time is passed in, never read."""

    allowed_lateness_ms: int
    idle_advance_ms: int
    value_ms: int = 0
    #: Wall-clock time the watermark was created: it counts as the last input, so a worker that starts
    #: before any data arrives waits ``idle_advance_ms`` like any other before following the wall clock.
    created_wall_ms: int = 0
    _inputs: dict[str, _Input] = field(default_factory=dict)
    _last_input_wall_ms: int = 0

    def __post_init__(self) -> None:
        self._last_input_wall_ms = self.created_wall_ms

    def register(self, *topics: str) -> None:
        """Name the partition's inputs; each holds time back until it is known to be read to its end."""
        for topic in topics:
            self._inputs.setdefault(topic, _Input())

    def observe(self, topic: str, event_ms: int, wall_ms: int) -> None:
        """An event of ``topic`` with event time ``event_ms`` was read at ``wall_ms``."""
        state = self._inputs.setdefault(topic, _Input())
        if state.max_event_ms is None or event_ms > state.max_event_ms:
            state.max_event_ms = event_ms
        self._last_input_wall_ms = wall_ms

    def set_caught_up(self, topic: str, caught_up: bool) -> None:
        """Whether every message of ``topic``'s partition has been read."""
        self._inputs.setdefault(topic, _Input()).caught_up = caught_up

    def caught_up(self) -> bool:
        """Whether every input is known to be read to its end."""
        return all(s.caught_up for s in self._inputs.values())

    def advance(self, wall_ms: int) -> int:
        """Recompute and return the watermark; it never goes back."""
        seen = [s for s in self._inputs.values() if s.max_event_ms is not None]
        behind = [s.max_event_ms for s in self._inputs.values() if not s.caught_up]
        candidate: int | None
        if None in behind:
            candidate = None  # an input with unread messages we know nothing about holds time still
        elif behind:
            candidate = min(m for m in behind if m is not None) - self.allowed_lateness_ms
        else:
            highest = [s.max_event_ms for s in seen if s.max_event_ms is not None]
            candidate = max(highest) - self.allowed_lateness_ms if highest else None
            all_read = all(s.caught_up for s in self._inputs.values())
            if all_read and wall_ms - self._last_input_wall_ms >= self.idle_advance_ms:
                wall_candidate = wall_ms - self.allowed_lateness_ms
                candidate = wall_candidate if candidate is None else max(candidate, wall_candidate)
        if candidate is not None and candidate > self.value_ms:
            self.value_ms = candidate
        return self.value_ms
