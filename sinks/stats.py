"""What the sink did and what state it is in: counters, publish-to-visible latency, and its status.

The status (``state``, ``paused_since``, ``last_error``) is what an operator reads to see an outage:
the sink writes it to ``pipeline.sink_stats_file`` (JSON) on every change of state and every 10 s,
and serves it as Prometheus metrics on ``sink.metrics_port``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class SinkState(StrEnum):
    """Where the sink is in its life."""

    STARTING = "starting"  # opening the backend (retried while it is unavailable)
    RUNNING = "running"
    PAUSED = "paused"  # the backend is unavailable: consumption paused, writes retried
    STOPPED = "stopped"
    FAILED = "failed"  # stopped by an error that is not the backend's (nothing was committed for it)


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


@dataclass
class SinkStats:
    """Counters, latency samples (ms, reservoir-sampled per table) and the status of one sink."""

    backend: str = ""
    consumed: int = 0
    skipped_invalid_input: int = 0
    #: Messages of erased users not written (read, or buffered when the erasure came), and the rows
    #: deleted for erasures, per table.
    skipped_erased: int = 0
    erased_rows: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, list[int]] = field(default_factory=dict)
    state: SinkState = SinkState.STARTING
    paused_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    transient_failures: int = 0
    outages: int = 0
    paused_s_total: float = 0.0
    _seen: dict[str, int] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def record_latency(self, table: str, samples: list[int], keep: int = 50_000) -> None:
        """Reservoir-sample publish-to-visible latencies per table."""
        reservoir = self.latency_ms.setdefault(table, [])
        seen = self._seen.get(table, 0)
        for sample in samples:
            seen += 1
            if len(reservoir) < keep:
                reservoir.append(sample)
            else:
                slot = self._rng.randrange(seen)
                if slot < keep:
                    reservoir[slot] = sample
        self._seen[table] = seen

    def failed_attempt(self, error: BaseException, now: float) -> bool:
        """Count a write (or open) the backend could not take; return True if this starts an outage."""
        self.transient_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:2000]
        self.last_error_at = now
        if self.paused_since is not None:
            return False
        self.paused_since = now
        self.outages += 1
        return True

    def recovered(self, now: float) -> float:
        """The outage is over; return how long it lasted (s)."""
        lasted = 0.0 if self.paused_since is None else now - self.paused_since
        self.paused_s_total += lasted
        self.paused_since = None
        return lasted

    def paused_for(self, now: float | None = None) -> float:
        """Seconds the current outage has lasted (0 without one)."""
        if self.paused_since is None:
            return 0.0
        return (time.time() if now is None else now) - self.paused_since

    def summary(self) -> dict[str, Any]:
        """JSON-ready status, counters and p50/p99 latency per table."""
        latency = {}
        for table, values in self.latency_ms.items():
            ordered = sorted(values)
            if ordered:
                latency[table] = {
                    "p50_ms": ordered[len(ordered) // 2],
                    "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                    "samples": self._seen.get(table, 0),
                }
        return {
            "backend": self.backend,
            "state": self.state.value,
            "paused_since": _iso(self.paused_since),
            "paused_s": round(self.paused_for(), 3),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "transient_failures": self.transient_failures,
            "outages": self.outages,
            "paused_s_total": round(self.paused_s_total + self.paused_for(), 3),
            "consumed": self.consumed,
            "skipped_invalid_input": self.skipped_invalid_input,
            "skipped_erased": self.skipped_erased,
            "erased_rows": self.erased_rows,
            "dead_lettered": self.dead_lettered,
            "inserted": self.inserted,
            "latency": latency,
        }

    def collector(self) -> Collector:
        """These numbers as Prometheus metrics (``feedbackloop_sink_*``), read at scrape time."""
        return _StatsCollector(self)


class _StatsCollector(Collector):
    def __init__(self, stats: SinkStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        state = GaugeMetricFamily(
            "feedbackloop_sink_state", "1 for the state the sink is in", labels=["state"]
        )
        for candidate in SinkState:
            state.add_metric([candidate.value], 1.0 if s.state is candidate else 0.0)
        yield state
        yield GaugeMetricFamily(
            "feedbackloop_sink_paused_seconds", "How long the current outage has lasted", value=s.paused_for()
        )
        yield CounterMetricFamily(
            "feedbackloop_sink_transient_failures",
            "Writes the backend could not take (each retried)",
            value=s.transient_failures,
        )
        yield CounterMetricFamily(
            "feedbackloop_sink_outages", "Times the sink paused for an unavailable backend", value=s.outages
        )
        yield CounterMetricFamily("feedbackloop_sink_consumed", "Messages read", value=s.consumed)
        yield CounterMetricFamily(
            "feedbackloop_sink_dead_lettered", "Messages sent to the dead-letter topic", value=s.dead_lettered
        )
        inserted = CounterMetricFamily("feedbackloop_sink_rows", "Rows written, per table", labels=["table"])
        for table, count in sorted(s.inserted.items()):
            inserted.add_metric([table], count)
        yield inserted
