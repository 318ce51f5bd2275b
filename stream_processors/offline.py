"""The processors' logic on a list of messages, without Kafka.

Runs exactly the per-message work of the Faust agents — decode and validate, apply to the
partition's state, advance the watermark per batch, serialize every output and the changed
state records, aggregate windows — in a tight loop. The benchmark uses it as the compute
ceiling of a worker; tests use it to check the logic on generated workloads in milliseconds.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra.settings import PipelineSettings
from schemas import to_epoch_ms
from stream_processors.decode import InvalidInputError, apply_event, decode_input
from stream_processors.state import Emit, LostEvent, PartitionState
from stream_processors.watermark import Watermark
from stream_processors.windows import WindowState

INTERACTIONS, FEEDBACK = "interactions", "feedback"


@dataclass(frozen=True)
class RawMessage:
    """An input message as it sits on its topic."""

    is_interaction: bool
    key: bytes | None
    value: bytes | None


@dataclass
class OfflineResult:
    """What the logic produced: latest outcome per interaction, latest aggregate per window, counts."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    joined: int = 0
    edit_ops: int = 0
    dead_letters: int = 0
    bytes_out: int = 0


class OfflinePipeline:
    """Both processing stages in one process, fed message by message."""

    def __init__(self, pipeline: PipelineSettings, partitions: int = 4, batch: int = 2000) -> None:
        self.pipeline = pipeline
        self.partitions = partitions
        self.batch = batch
        self.states = {p: PartitionState(p, pipeline) for p in range(partitions)}
        self.watermarks = {
            p: Watermark(int(pipeline.allowed_lateness_s * 1000), 10**12) for p in range(partitions)
        }
        for watermark in self.watermarks.values():
            watermark.register(INTERACTIONS, FEEDBACK)
            watermark.set_caught_up(INTERACTIONS, False)
            watermark.set_caught_up(FEEDBACK, False)
        window_ms = pipeline.metrics_window_s * 1000
        self.windows = {
            p: WindowState(p, window_ms, int(pipeline.metrics_retention_s * 1000)) for p in range(partitions)
        }
        self.result = OfflineResult()
        self._pending = 0
        self._now_ms = 0

    def run(self, messages: Iterable[RawMessage]) -> OfflineResult:
        """Feed every message, then let event time run out so everything settles."""
        for message in messages:
            self.feed(message)
        self.finish()
        return self.result

    def feed(self, message: RawMessage) -> None:
        """One input message (routed to a partition by its key)."""
        partition = zlib.crc32(message.key or b"") % self.partitions
        try:
            event = decode_input(message.is_interaction, message.key, message.value)
        except InvalidInputError:
            self.result.dead_letters += 1
            return
        created_ms = to_epoch_ms(event.created_at)
        # No wall clock here: the newest event time read stands in for it (a replay at full speed).
        self._now_ms = max(self._now_ms, created_ms)
        self.watermarks[partition].observe(
            INTERACTIONS if message.is_interaction else FEEDBACK, created_ms, 0
        )
        self._emit(apply_event(self.states[partition], event, created_ms, -1))
        self._pending += 1
        if self._pending >= self.batch:
            self._end_batch(None)

    def finish(self) -> None:
        """Advance every partition past every window (as the idle wall-clock advance does)."""
        latest = max((s.watermark_ms for s in self.states.values()), default=0)
        self._end_batch(latest + 10 * 24 * 3600 * 1000)

    def _end_batch(self, watermark_ms: int | None) -> None:
        self._pending = 0
        for partition, state in self.states.items():
            wm = watermark_ms if watermark_ms is not None else self.watermarks[partition].advance(0)
            now = self._now_ms if watermark_ms is None else watermark_ms
            self._emit(state.advance(wm, now, inputs_read=watermark_ms is not None))
            upserts, _ = state.take_changes()
            self.result.bytes_out += sum(len(v) for v in upserts.values())
        for window_state in self.windows.values():
            for window, aggregate in window_state.emissions():
                self.result.windows[window] = aggregate
                self.result.bytes_out += len(orjson.dumps(aggregate))
            window_state.take_changes()

    def _emit(self, items: list[Emit | LostEvent]) -> None:
        result = self.result
        for item in items:
            if isinstance(item, LostEvent):
                result.dead_letters += 1
                continue
            if item.kind != "contribution":
                result.bytes_out += len(orjson.dumps(item.value))
            if item.kind == "outcome":
                interaction_id = str(item.value["interaction_id"])
                current = result.outcomes.get(interaction_id)
                if current is None or current["version"] < item.value["version"]:
                    result.outcomes[interaction_id] = item.value
            elif item.kind == "edit_ops":
                result.edit_ops += 1
            elif item.kind == "contribution":
                # Like the real stage, the window sees the contribution as it comes off the wire.
                contribution = orjson.loads(orjson.dumps(item.value))
                self.windows[zlib.crc32(item.key.encode()) % self.partitions].apply(item.key, contribution)
            else:
                result.joined += 1
