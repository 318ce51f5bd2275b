"""The processors' core on a list of messages, without Kafka.

Drives the same :class:`~stream_processors.core.ProcessingCore` as the Faust worker: messages are
routed to partitions by Kafka's murmur2 partitioner (as every real producer does), given offsets,
and handed over in batches; the metric contributions the core publishes come back to it as the
windows stage's input, routed the same way. Nothing is read to its end while messages flow (as in
a backlog), and at the end the wall clock jumps far ahead with every input read, as the idle
advance does in a quiet worker, so everything settles. The benchmark uses it as the compute
ceiling of a worker; tests use it to check the logic on generated workloads in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from infra.settings import PipelineSettings
from schemas import partition_for
from stream_processors.core import InputRecord, ProcessingCore, Step, TopicNames

#: Topic names of the offline run (nothing is published; they only tell the outputs apart).
OFFLINE_TOPICS = TopicNames(
    interactions="interactions",
    feedback="feedback",
    joined="joined",
    outcomes="outcomes",
    metrics="metrics",
    deadletter="deadletter",
    contributions="contributions",
    edit_operations="edit_operations",
)

_new = tuple.__new__  # as in the core: a NamedTuple's own __new__ costs a Python call per message

#: How far the wall clock jumps past the latest event time at the end: beyond every window.
_SETTLE_ALL_MS = 10 * 24 * 3600 * 1000


@dataclass(frozen=True)
class RawMessage:
    """An input message as a producer sends it (before the partitioner places it)."""

    is_interaction: bool
    key: bytes | None
    value: bytes | None


@dataclass
class OfflineResult:
    """What the core published: the latest outcome per interaction and aggregate per window, as the
    values it serialized (UUIDs still UUIDs), and counts of the rest."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    joined: int = 0
    edit_ops: int = 0
    dead_letters: int = 0


def _never(_topic: str, _partition: int) -> bool:
    return False


def _always(_topic: str, _partition: int) -> bool:
    return True


class OfflinePipeline:
    """Both processing stages in one process, fed message by message, in batches of ``batch``."""

    def __init__(self, pipeline: PipelineSettings, partitions: int = 4, batch: int = 2000) -> None:
        self.pipeline = pipeline
        self.partitions = partitions
        self.batch = batch
        self.names = OFFLINE_TOPICS
        self.core = ProcessingCore(pipeline, self.names)
        self.result = OfflineResult()
        self._pending: list[InputRecord] = []
        self._next_offset: dict[tuple[str, int], int] = {}
        self._partition_of: dict[bytes, int] = {}

    def run(self, messages: Iterable[RawMessage]) -> OfflineResult:
        """Feed every message, then let event time run out so everything settles."""
        for message in messages:
            self.feed(message)
        self.finish()
        return self.result

    def feed(self, message: RawMessage) -> None:
        """One input message, placed on its topic's partition by its key."""
        topic = self.names.interactions if message.is_interaction else self.names.feedback
        self._pending.append(self._consumed(topic, message.key, message.value))
        if len(self._pending) >= self.batch:
            self._process_pending()

    def flush(self) -> None:
        """Process what is pending (a partial batch)."""
        self._process_pending()

    def finish(self) -> None:
        """Process what is pending, then jump the wall clock past every window with all inputs read."""
        self._process_pending()
        latest = max((state.watermark_ms for state in self.core.partitions.values()), default=0)
        wall_ms = latest + _SETTLE_ALL_MS + int(self.pipeline.allowed_lateness_s * 1000)
        self._take(self.core.tick(wall_ms, _always))

    def _process_pending(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            # The wall clock stays at 0: nothing is read to its end, so it is never consulted.
            self._take(self.core.process_events(batch, 0, _never))

    def _consumed(self, topic: str, key: bytes | None, value: bytes | None) -> InputRecord:
        partition = self._partition(key)
        tp = (topic, partition)
        offset = self._next_offset.get(tp, 0)
        self._next_offset[tp] = offset + 1
        return _new(InputRecord, (topic, partition, offset, key, value, 0.0))

    def _partition(self, key: bytes | None) -> int:
        if key is None:
            return 0  # librdkafka picks a random partition for a keyless message; any will do
        partition = self._partition_of.get(key)
        if partition is None:
            partition = self._partition_of[key] = partition_for(key, self.partitions)
        return partition

    def _take(self, step: Step) -> None:
        result = self.result
        names = self.names
        contributions: list[InputRecord] = []
        # Every output is serialized, as the worker does on its way to the producer; the results
        # keep the values it came from.
        for (topic, key, value, _, _), message in zip(step.pending, step.messages(), strict=True):
            if topic == names.contributions:
                contributions.append(self._consumed(topic, key, message.value))
            elif topic == names.outcomes:
                assert isinstance(value, dict)
                interaction_id = str(value["interaction_id"])
                current = result.outcomes.get(interaction_id)
                if current is None or current["version"] < value["version"]:
                    result.outcomes[interaction_id] = value
            elif topic == names.metrics:
                assert isinstance(value, dict)
                result.windows[message.key.decode() if message.key else ""] = value
            elif topic == names.joined:
                result.joined += 1
            elif topic == names.edit_operations:
                result.edit_ops += 1
            elif topic == names.deadletter:
                result.dead_letters += 1
        if contributions:
            self._take(self.core.process_contributions(contributions))
