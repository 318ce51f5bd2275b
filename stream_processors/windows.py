"""Tumbling windows of outcome contributions per (prompt_version, model, input_category).

A window keeps each member interaction's latest contribution (highest version), so amendments
replace rather than add, and replays change nothing. Its aggregate is kept up to date as members
come and change (:class:`RunningAggregate`: a member's old contribution is taken out, its new one put
in), so a change costs the same in a window of ten members as in one of a million; it equals
:func:`aggregate_window` over the members. The aggregate's version is the sum of the members'
versions, which grows with every change and is the same for the same final membership.

Windows are kept ``retention`` of event time behind the newest one. A contribution to a window
further back that this partition never had (a late session's, e.g. a day old) opens it: it is then
complete, as it would have been on time, and lingers for ``linger`` of wall-clock time after it was
last touched. Any other window behind the horizon still waits ``grace`` of wall-clock time after it
was last touched before it goes: in a backfill, newer windows can carry the horizon past a window
whose members are still settling. A window that was expired leaves a tombstone for the late
horizon: a contribution to it cannot make it whole again (its other members are gone), so it is
counted in ``late_dropped`` instead of publishing a partial aggregate; the outcome itself is still
amended in ``interaction_outcomes``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from schemas import format_ms
from schemas.signals import WINDOWED_SIGNALS, Aggregate, Signal


def nearest_rank(sorted_values: list[int], q: float) -> int:
    """Nearest-rank quantile ``q`` of non-empty sorted values: the ceil(q*n)-th smallest."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _metric(signal: Signal, kind: Aggregate) -> str | None:
    return next((m.name for m in signal.window if m.aggregate is kind), None)


# Built once from the signal registry, so a window costs what hand-written counters cost.
#: ``(metric, flag)``: how many members have the flag true.
_COUNTS = tuple((m, s.name) for s in WINDOWED_SIGNALS if (m := _metric(s, Aggregate.COUNT)))
#: ``(signal, sum metric, mean metric)`` of each summed or averaged signal: one pass over its values.
_NUMBERS = tuple(
    (s.name, _metric(s, Aggregate.SUM), _metric(s, Aggregate.MEAN))
    for s in WINDOWED_SIGNALS
    if _metric(s, Aggregate.SUM) or _metric(s, Aggregate.MEAN)
)


def aggregate_window(
    window_start_ms: int, window_ms: int, members: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The ``PromptVersionMetrics`` of one window from its members' contributions (JSON-ready):
    the window's own fields, and every window metric of the signal registry (``schemas.signals``)."""
    rows = list(members)
    if not rows:
        raise ValueError("a window aggregate needs at least one member")
    first = rows[0]
    latencies = sorted(r["response_time_ms"] for r in rows)
    out: dict[str, Any] = {
        "schema_version": 1,
        "window_start": format_ms(window_start_ms),
        "window_end": format_ms(window_start_ms + window_ms),
        "prompt_version": first["prompt_version"],
        "model": first["model"],
        "input_category": first["input_category"],
        "version": sum(r["version"] for r in rows),
        "interactions": len(rows),
        "distinct_users": len({r["user_id"] for r in rows}),
        "response_time_mean_ms": sum(latencies) / len(latencies),
        "response_time_p95_ms": nearest_rank(latencies, 0.95),
    }
    for metric, flag in _COUNTS:
        out[metric] = sum(1 for r in rows if r[flag])
    for signal, sum_metric, mean_metric in _NUMBERS:
        values = [v for r in rows if (v := r[signal]) is not None]
        total = _total(values)
        if sum_metric is not None:
            out[sum_metric] = total
        if mean_metric is not None:
            out[mean_metric] = total / len(values) if values else None
    return out


def _total(values: Iterable[int | float]) -> int | float:
    """Exact sum: integers as integers, floats correctly rounded whatever their order (so a window
    reached through amendments and replays sums to the same bits as one built in one go)."""
    ints = 0
    floats = []
    for value in values:
        if isinstance(value, float):
            floats.append(value)
        else:
            ints += value
    return math.fsum([ints, *floats]) if floats else ints


class RunningAggregate:
    """One window's aggregate, updated member by member (see the module docstring)."""

    __slots__ = ("counts", "first", "latencies", "numbers", "users", "version")

    def __init__(self, first: Mapping[str, Any]) -> None:
        self.first = first
        self.version = 0
        self.users: dict[str, int] = {}
        self.latencies: list[int] = []
        self.counts = [0] * len(_COUNTS)
        #: Per summed or averaged signal: member id -> its value (members without one are absent).
        self.numbers: list[dict[str, int | float]] = [{} for _ in _NUMBERS]

    def add(self, member: str, contribution: Mapping[str, Any], sign: int) -> None:
        """Put a member's contribution in (``sign`` 1) or take it out (-1)."""
        self.version += sign * contribution["version"]
        user = contribution["user_id"]
        left = self.users.get(user, 0) + sign
        if left:
            self.users[user] = left
        else:
            del self.users[user]
        latency = contribution["response_time_ms"]
        if sign > 0:
            insort(self.latencies, latency)
        else:
            del self.latencies[bisect_left(self.latencies, latency)]
        counts = self.counts
        for index, (_, flag) in enumerate(_COUNTS):
            if contribution[flag]:
                counts[index] += sign
        for values, (signal, _, _) in zip(self.numbers, _NUMBERS, strict=True):
            value = contribution[signal]
            if value is None:
                continue
            if sign > 0:
                values[member] = value
            else:
                del values[member]

    def emit(self, window_start_ms: int, window_ms: int) -> dict[str, Any]:
        """The ``PromptVersionMetrics`` fields, JSON-ready, as :func:`aggregate_window` gives them."""
        first = self.first
        latencies = self.latencies
        out: dict[str, Any] = {
            "schema_version": 1,
            "window_start": format_ms(window_start_ms),
            "window_end": format_ms(window_start_ms + window_ms),
            "prompt_version": first["prompt_version"],
            "model": first["model"],
            "input_category": first["input_category"],
            "version": self.version,
            "interactions": len(latencies),
            "distinct_users": len(self.users),
            "response_time_mean_ms": sum(latencies) / len(latencies),
            "response_time_p95_ms": nearest_rank(latencies, 0.95),
        }
        for (metric, _), count in zip(_COUNTS, self.counts, strict=True):
            out[metric] = count
        for values, (_, sum_metric, mean_metric) in zip(self.numbers, _NUMBERS, strict=True):
            total = _total(values.values())
            if sum_metric is not None:
                out[sum_metric] = total
            if mean_metric is not None:
                out[mean_metric] = total / len(values) if values else None
        return out


class WindowState:
    """The open windows of one partition of the contributions topic."""

    #: Changelog member id of a tombstone.
    TOMBSTONE = "~"

    def __init__(
        self,
        partition: int,
        window_ms: int,
        retention_ms: int,
        late_horizon_ms: int | None = None,
        linger_ms: int = 3_600_000,
        grace_ms: int = 0,
    ) -> None:
        self.partition = partition
        self.window_ms = window_ms
        self.retention_ms = retention_ms
        self.late_horizon_ms = max(retention_ms, late_horizon_ms or retention_ms)
        self.linger_ms = linger_ms
        self.grace_ms = grace_ms
        self.windows: dict[str, dict[str, dict[str, Any]]] = {}
        self._aggregates: dict[str, RunningAggregate] = {}
        self.latest_start_ms = 0
        self.late_dropped = 0
        #: The latest wall-clock reading passed in (epoch ms).
        self.now_ms = 0
        #: Windows opened behind the horizon (they linger).
        self._late: set[str] = set()
        #: Every open window -> wall-clock time it was last touched.
        self._touched: dict[str, int] = {}
        #: Expired windows -> their start, kept for the late horizon.
        self._tombstones: dict[str, int] = {}
        self._changed_windows: set[str] = set()
        self._changed_members: set[tuple[str, str]] = set()
        self._deleted_members: set[tuple[str, str]] = set()

    @staticmethod
    def member_key(window: str, interaction_id: str) -> str:
        """Changelog key of one member of one window."""
        return f"{window}#{interaction_id}"

    @classmethod
    def restore(
        cls,
        partition: int,
        window_ms: int,
        retention_ms: int,
        members: Iterable[tuple[str, bytes]],
        late_horizon_ms: int | None = None,
        linger_ms: int = 3_600_000,
        now_ms: int = 0,
        grace_ms: int = 0,
    ) -> WindowState:
        """Rebuild from changelog entries (entries of other partitions are skipped); ``now_ms`` is the
        wall clock, from which restored windows behind the horizon linger again."""
        state = cls(partition, window_ms, retention_ms, late_horizon_ms, linger_ms, grace_ms)
        state.now_ms = now_ms
        for key, data in members:
            raw = orjson.loads(data)
            if raw["p"] != partition:
                continue
            window, interaction_id = key.rsplit("#", 1)
            if interaction_id == cls.TOMBSTONE:
                state._tombstones[window] = raw["x"]
                continue
            state.windows.setdefault(window, {})[interaction_id] = raw["c"]
            state._aggregate(window, raw["c"]).add(interaction_id, raw["c"], 1)
            state.latest_start_ms = max(state.latest_start_ms, raw["c"]["window_start_ms"])
        horizon = state.latest_start_ms - retention_ms
        for window, window_members in state.windows.items():
            state._touched[window] = now_ms
            if next(iter(window_members.values()))["window_start_ms"] < horizon:
                state._late.add(window)
        return state

    def apply(self, window: str, contribution: dict[str, Any], now_ms: int | None = None) -> None:
        """Take in one contribution (``now_ms``: the wall clock); a lower or equal version than the
        member's is ignored."""
        if now_ms is not None and now_ms > self.now_ms:
            self.now_ms = now_ms
        start = contribution["window_start_ms"]
        if window in self._tombstones or start < self.latest_start_ms - self.late_horizon_ms:
            # Its other members are gone (or may be: beyond the late horizon nothing is remembered);
            # an aggregate of the rest would be partial.
            self.late_dropped += 1
            return
        if window not in self.windows and start + self.retention_ms < self.latest_start_ms:
            self._late.add(window)
        self._touched[window] = self.now_ms
        members = self.windows.setdefault(window, {})
        member_id = contribution["interaction_id"]
        current = members.get(member_id)
        if current is not None and current["version"] >= contribution["version"]:
            return
        aggregate = self._aggregate(window, contribution)
        if current is not None:
            aggregate.add(member_id, current, -1)
        aggregate.add(member_id, contribution, 1)
        members[member_id] = contribution
        self.latest_start_ms = max(self.latest_start_ms, start)
        self._changed_windows.add(window)
        member = (window, contribution["interaction_id"])
        self._changed_members.add(member)
        self._deleted_members.discard(member)

    def _aggregate(self, window: str, contribution: Mapping[str, Any]) -> RunningAggregate:
        aggregate = self._aggregates.get(window)
        if aggregate is None:
            aggregate = self._aggregates[window] = RunningAggregate(contribution)
        return aggregate

    def emissions(self) -> list[tuple[str, dict[str, Any]]]:
        """The aggregate of every window changed since the last call, keyed by window."""
        out = []
        for window in sorted(self._changed_windows):
            aggregate = self._aggregates[window]
            out.append((window, aggregate.emit(aggregate.first["window_start_ms"], self.window_ms)))
        self._changed_windows = set()
        return out

    def expire(self, now_ms: int | None = None) -> None:
        """Forget windows older than the retention horizon (a late one once it stopped lingering),
        leaving a tombstone each; forget tombstones older than the late horizon."""
        if now_ms is not None and now_ms > self.now_ms:
            self.now_ms = now_ms
        horizon = self.latest_start_ms - self.retention_ms
        oldest = self.latest_start_ms - self.late_horizon_ms
        for window, members in list(self.windows.items()):
            start = next(iter(members.values()))["window_start_ms"]
            if start >= horizon:
                continue
            # With no wall clock (offline, now 0) event time alone decides, except for late windows.
            wait = self.linger_ms if window in self._late else (self.grace_ms if self.now_ms > 0 else 0)
            if self.now_ms - self._touched.get(window, 0) < wait:
                continue
            self._late.discard(window)
            self._touched.pop(window, None)
            self._aggregates.pop(window, None)
            for interaction_id in self.windows.pop(window):
                member = (window, interaction_id)
                self._changed_members.discard(member)
                self._deleted_members.add(member)
            self._changed_windows.discard(window)
            if start >= oldest:
                self._tombstones[window] = start
                self._changed_members.add((window, self.TOMBSTONE))
        for window in [w for w, start in self._tombstones.items() if start < oldest]:
            del self._tombstones[window]
            self._deleted_members.add((window, self.TOMBSTONE))

    def snapshot(self) -> dict[str, bytes]:
        """Every member and tombstone as its changelog entry (key, bytes)."""
        out = {
            self.member_key(w, i): orjson.dumps({"p": self.partition, "c": c})
            for w, members in self.windows.items()
            for i, c in members.items()
        }
        for w, start in self._tombstones.items():
            out[self.member_key(w, self.TOMBSTONE)] = orjson.dumps({"p": self.partition, "x": start})
        return out

    def take_changes(self) -> tuple[dict[str, bytes], set[str]]:
        """Changelog upserts and deletions since the last call."""
        upserts = {
            self.member_key(w, i): orjson.dumps({"p": self.partition, "c": self.windows[w][i]})
            for w, i in self._changed_members
            if w in self.windows and i in self.windows[w]
        }
        for w, i in self._changed_members:
            if i == self.TOMBSTONE and w in self._tombstones:
                upserts[self.member_key(w, i)] = orjson.dumps({"p": self.partition, "x": self._tombstones[w]})
        deleted = {self.member_key(w, i) for w, i in self._deleted_members}
        self._changed_members = set()
        self._deleted_members = set()
        return upserts, deleted
