"""The stream processors without a transport: batches of consumed messages in, what to publish and
what to persist out.

Two stages share one :class:`ProcessingCore`:

* the events stage takes messages of ``ai.interactions.v1`` and ``ai.feedback.v1`` (co-partitioned
  by ``session_id``), keeps one :class:`~stream_processors.state.PartitionState` and one
  :class:`~stream_processors.watermark.Watermark` per input partition, and emits joined feedback,
  edit operations, outcomes, metric contributions and dead letters;
* the windows stage takes the metric contributions (keyed by window) and emits the window
  aggregates to ``ai.metrics.v1``.

Each call returns a :class:`Step`: the messages to publish and, apart from them, the changelog
writes of the state those messages leave behind. The caller keeps the order of durability that
makes results exact under crashes: publish ``Step.messages()``, wait until the broker acknowledges
all of it, only then write ``Step.changelog``, and only after that let input offsets be committed.
Recovered state then never claims an output that was not delivered, and re-read inputs are
recognised by their ids. If the outputs cannot be delivered the core's state is already ahead of
the broker: the caller must stop (and recover from the changelog), never carry on.

No I/O and no broker client here: the wall clock is an argument, whether an input partition is
read to its end is asked through a callable, and recovered changelog records come through a
:class:`ChangelogRecovery`. ``stream_processors.app`` drives it from Faust;
``stream_processors.offline`` drives it from a list of messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from infra.groups import contributions_topic
from infra.settings import PipelineSettings, Settings
from schemas import DeadLetter, topics
from schemas.erasure import named_user
from schemas.events import event_time_error
from stream_processors.decode import InvalidInputError, apply_facts, decode_input
from stream_processors.state import Emit, LostEvent, PartitionState
from stream_processors.watermark import Watermark
from stream_processors.windows import WindowState

log = logging.getLogger(__name__)

#: The two kinds of persisted state: records of input partitions, members of metric windows.
Store = Literal["records", "windows"]
RECORDS: Store = "records"
WINDOWS: Store = "windows"


@dataclass(frozen=True)
class TopicNames:
    """Real names of every topic the processors read or publish to."""

    interactions: str
    feedback: str
    joined: str
    outcomes: str
    metrics: str
    deadletter: str
    contributions: str
    edit_operations: str

    @classmethod
    def of(cls, settings: Settings) -> TopicNames:
        """Names under the configured namespace."""
        ns = settings.kafka.topic_namespace
        return cls(
            interactions=topics.topic_name(topics.INTERACTIONS, ns),
            feedback=topics.topic_name(topics.FEEDBACK, ns),
            joined=topics.topic_name(topics.FEEDBACK_JOINED, ns),
            outcomes=topics.topic_name(topics.OUTCOMES, ns),
            metrics=topics.topic_name(topics.METRICS, ns),
            deadletter=topics.topic_name(topics.DEADLETTER, ns),
            contributions=contributions_topic(settings),
            edit_operations=topics.topic_name(topics.EDIT_OPERATIONS, ns),
        )


class InputMessage(Protocol):
    """A consumed message as the core reads it (Faust's consumer messages qualify as they are)."""

    @property
    def topic(self) -> str:
        """The topic it was read from."""

    @property
    def partition(self) -> int:
        """Its partition."""

    @property
    def offset(self) -> int:
        """Its offset in the partition."""

    @property
    def key(self) -> bytes | None:
        """The message key, as on the wire."""

    @property
    def value(self) -> bytes | None:
        """The message value, as on the wire (None: a tombstone)."""

    @property
    def timestamp(self) -> float:
        """Its publish time in seconds since the epoch (0: unknown)."""


class InputRecord(NamedTuple):
    """A consumed message built by hand (the offline pipeline, tests); satisfies :class:`InputMessage`.

    A NamedTuple: the offline pipeline builds one per message, and that is 3x cheaper than a frozen
    dataclass."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 0.0


class Publish(NamedTuple):
    """One message to publish."""

    topic: str
    key: bytes | None
    value: bytes
    #: None: the murmur2 partitioner picks by key, as for every other producer of the topic.
    partition: int | None
    #: The message timestamp in epoch ms; 0: the time it is sent.
    timestamp_ms: int


class ChangelogWrite(NamedTuple):
    """One state record to write to the changelog of ``store``, in the partition of its owner."""

    store: Store
    partition: int
    key: bytes
    #: None deletes the record (a tombstone).
    value: bytes | None


# The hot loops build their tuples with tuple.__new__: a NamedTuple's own __new__ is a Python
# function, and calling it costs about as much again per output.
_new = tuple.__new__


#: An output not yet serialized: topic, key, its JSON-ready value (or its bytes), partition, timestamp.
Pending = tuple[str, bytes | None, dict[str, Any] | bytes, int | None, int]


@dataclass(slots=True)
class Step:
    """What one call produced: publish first and wait for the acknowledgement, then write the changelog."""

    #: The outputs in the order they are to be published (see :meth:`messages`).
    pending: list[Pending]
    changelog: list[ChangelogWrite]

    def messages(self) -> Iterator[Publish]:
        """The messages to publish, in order, each serialized when it is reached.

        Hand each one to the producer before taking the next: then a batch's serialized outputs are
        never all alive at once. (Serializing them all up front cost the worker ~3 % in page faults
        and cache misses, measured against serializing on the way out.)"""
        dumps = orjson.dumps
        for topic, key, value, partition, timestamp_ms in self.pending:
            data = value if isinstance(value, bytes) else dumps(value)
            yield _new(Publish, (topic, key, data, partition, timestamp_ms))


#: What :meth:`WindowState.apply` reads from a contribution before it changes anything.
_CONTRIBUTION_KEYS = frozenset({"window_start_ms", "interaction_id", "version"})

#: Whether everything the broker holds of ``(topic, partition)`` went through the core (None: unknown).
ReadToEnd = Callable[[str, int], bool | None]


class ChangelogRecovery(Protocol):
    """The changelog records recovered for the partitions this worker owns."""

    def recovered(self, store: Store) -> Iterable[tuple[str, bytes]]:
        """Every recovered ``(key, value)`` of ``store`` not yet released (any partition)."""

    def release(self, store: Store, keys: Iterable[str]) -> None:
        """The core holds these records now; the source may forget its copies."""

    def hand_back(self, store: Store, records: Mapping[str, bytes]) -> None:
        """The core lets these records go (its partition was revoked): the source keeps them as they
        are, so a recovery that resumes where it stopped (the same worker, reassigned) has them all."""


class NothingRecovered:
    """No changelog to recover from: every partition starts empty."""

    def recovered(self, store: Store) -> Iterable[tuple[str, bytes]]:
        """Nothing."""
        return ()

    def release(self, store: Store, keys: Iterable[str]) -> None:
        """Nothing to forget."""

    def hand_back(self, store: Store, records: Mapping[str, bytes]) -> None:
        """Nowhere to keep them: a reassigned partition starts again from nothing."""


def input_read_to_end(high: int | None, handed: int | None, processed: int | None) -> bool | None:
    """Whether a partition is read to its end, from the broker's high watermark (``high``: the next
    offset to be written, None before the first fetch response), the offset of the last message the
    consumer handed over (``handed``; after a seek and before the first message, the position it
    will read next), and the offset of the last message the core processed (``processed``, None if
    none in this assignment). None: unknown, ask where the consumer stands."""
    if high is None:
        return False  # no fetch response yet: nothing is known about its end
    if handed is None:
        return None if high > 0 else True
    if processed is None:  # nothing went through yet in this assignment
        return handed >= high
    return processed == handed and handed + 1 >= high


class ProcessingCore:
    """Both processing stages' state and behaviour for the partitions this worker owns.

    Not thread-safe and not reentrant: the caller serialises calls (and keeps the lock across the
    delivery of each returned :class:`Step`).
    """

    def __init__(
        self,
        pipeline: PipelineSettings,
        names: TopicNames,
        recovery: ChangelogRecovery | None = None,
        erased: Collection[str] = frozenset(),
    ) -> None:
        self.pipeline = pipeline
        #: Erased users (``feedbackloop forget``; the caller keeps it current): their events are
        #: dropped, their restored records forgotten, and :meth:`erase` forgets what is held.
        self.erased = erased
        self.erased_events = 0
        self.names = names
        self.recovery: ChangelogRecovery = recovery or NothingRecovered()
        self.partitions: dict[int, PartitionState] = {}
        self.watermarks: dict[int, Watermark] = {}
        self.windows: dict[int, WindowState] = {}
        self.window_ms = pipeline.metrics_window_s * 1000
        #: Inputs that failed validation, and those dated in the future (both dead-lettered).
        self.invalid = 0
        self.future = 0
        self._max_skew_ms = int(pipeline.max_future_skew_s * 1000)
        self._processed: dict[tuple[str, int], int] = {}
        self._inputs = (names.interactions, names.feedback)
        self._topic_of = {
            "joined": names.joined,
            "outcome": names.outcomes,
            "contribution": names.contributions,
            "edit_ops": names.edit_operations,
        }

    # ------------------------------------------------------------ state lifecycle

    def _open(self, partition: int, now_ms: int) -> PartitionState:
        state = PartitionState.restore(partition, self.pipeline, self.recovery.recovered(RECORDS), now_ms)
        restored = list(state.records)
        if self.erased:
            state.erase(self.erased)  # recovered from a changelog that has not seen the erasure
        # From here on the partition's state lives in the core; the source's copy would double the
        # memory and go stale (it is recovered again from the changelog on reassignment).
        self.recovery.release(RECORDS, restored)
        self.partitions[partition] = state
        watermark = Watermark(
            int(self.pipeline.allowed_lateness_s * 1000),
            int(self.pipeline.idle_advance_s * 1000),
            created_wall_ms=now_ms,
        )
        watermark.register(*self._inputs)
        self.watermarks[partition] = watermark
        log.info("partition %d: restored %d records", partition, len(state.records))
        return state

    def _open_windows(self, partition: int, now_ms: int) -> WindowState:
        state = WindowState.restore(
            partition,
            self.window_ms,
            int(self.pipeline.metrics_retention_s * 1000),
            self.recovery.recovered(WINDOWS),
            late_horizon_ms=int(self.pipeline.late_horizon_s * 1000),
            linger_ms=int(self.pipeline.retention_s * 1000),
            now_ms=now_ms,
            # Members of a window come as its interactions settle: a late session's up to the settle
            # delay after its last event; then the records' own expiry grace.
            grace_ms=int(self.pipeline.signals.settle_delay_s * 1000)
            + PartitionState.expire_grace(self.pipeline),
        )
        self.recovery.release(
            WINDOWS, [WindowState.member_key(w, i) for w, members in state.windows.items() for i in members]
        )
        self.windows[partition] = state
        return state

    def open_partitions(self, partitions: Iterable[int], now_ms: int) -> None:
        """Restore the state of these input partitions now, if not yet open (a partition whose input
        was all read before a restart gets no event, yet its recovered records may wait to settle)."""
        for partition in partitions:
            if partition not in self.partitions:
                self._open(partition, now_ms)

    def forget(self, revoked: Iterable[tuple[str, int]]) -> None:
        """Drop the state of ``(topic, partition)``s this worker no longer owns (the changelog has it)."""
        for topic, partition in revoked:
            if topic in self._inputs:
                state = self.partitions.pop(partition, None)
                self.watermarks.pop(partition, None)
                if state is not None:
                    # Faust resumes a partition reassigned to this worker from where its recovery
                    # stopped, on top of its store: the records the core took must be back there.
                    self.recovery.hand_back(RECORDS, state.snapshot())
            elif topic == self.names.contributions:
                windows = self.windows.pop(partition, None)
                if windows is not None:
                    self.recovery.hand_back(WINDOWS, windows.snapshot())
            self._processed.pop((topic, partition), None)

    def erase(self, users: Collection[str]) -> Step:
        """Forget the state of ``users`` in every open partition (their later events are dropped as
        long as they are in :attr:`erased`): nothing to publish, the deletions for the changelog."""
        for state in self.partitions.values():
            state.erase(users)
        return Step([], self._record_changes(list(self.partitions)))

    def describe(self, now_ms: int) -> str:
        """One line per open partition for the worker's log: how far event time is behind the wall
        clock, whether its inputs were read to their end, records held, late sessions waiting."""
        parts = []
        for partition in sorted(self.partitions):
            state = self.partitions[partition]
            behind = f"{(now_ms - state.watermark_ms) / 1000:.0f}s" if state.watermark_ms else "-"
            parts.append(
                f"p{partition}: event time {behind} behind, "
                f"read to end {self.watermarks[partition].caught_up()}, "
                f"{len(state.records)} records, {len(state.held_sessions())} late sessions held"
            )
        return "; ".join(parts)

    def processed_offset(self, topic: str, partition: int) -> int | None:
        """Offset of the last message of ``(topic, partition)`` processed in this assignment."""
        return self._processed.get((topic, partition))

    # ------------------------------------------------------------ the events stage

    def process_events(self, messages: Sequence[InputMessage], now_ms: int, read_to_end: ReadToEnd) -> Step:
        """One batch of input messages: apply each to its partition's state, then advance the event
        time of every partition the batch touched (``now_ms``: the wall clock)."""
        publish: list[Pending] = []
        touched: set[int] = set()
        processed = self._processed
        partitions = self.partitions
        for message in messages:
            partition = message.partition
            state = partitions.get(partition)
            if state is None:
                state = self._open(partition, now_ms)
            touched.add(partition)
            processed[(message.topic, partition)] = message.offset
            self._apply(state, message, now_ms, publish)
        for partition in touched:
            self._advance(partition, now_ms, read_to_end, publish)
        return Step(publish, self._record_changes(touched))

    def tick(self, now_ms: int, read_to_end: ReadToEnd, partitions: Iterable[int] | None = None) -> Step:
        """Let the event time of open ``partitions`` (default: all) follow the wall clock where their
        inputs are read to their end (settles the last interactions of a quiet partition).

        ``read_to_end`` is asked right before each partition advances; a caller that must wait to
        find out (ask the broker) should tick one partition at a time, so no answer grows stale
        while it waits for the others."""
        publish: list[Pending] = []
        chosen = (
            list(self.partitions) if partitions is None else [p for p in partitions if p in self.partitions]
        )
        for partition in chosen:
            self._advance(partition, now_ms, read_to_end, publish)
        return Step(publish, self._record_changes(chosen))

    def _apply(
        self, state: PartitionState, message: InputMessage, now_ms: int, publish: list[Pending]
    ) -> None:
        topic = message.topic
        try:
            facts = decode_input(topic == self.names.interactions, message.key, message.value, message.offset)
        except InvalidInputError as exc:
            if self.erased and named_user(message.value) in self.erased:
                self.erased_events += 1  # a dead letter would keep a copy of an erased user's message
                return
            self.invalid += 1
            publish.append(self._dead_letter(message, exc.reason, exc.error_type))
            return
        if facts.user_id in self.erased:
            self.erased_events += 1  # forgotten: no state, no output, no dead letter (no copy of it)
            return
        created_ms = facts.created_ms
        if now_ms > 0 and (forged := event_time_error(created_ms, now_ms, self._max_skew_ms)) is not None:
            # A forged or broken clock never moves event time: no watermark, no window, no outcome.
            self.future += 1
            publish.append(self._dead_letter(message, forged, "future_event_time"))
            return
        self.watermarks[state.partition].observe(topic, created_ms, now_ms)
        caused = apply_facts(state, facts, now_ms)
        if not caused:
            return
        # What an event caused keeps the event's publish time, so latency is measurable end to end.
        stamp = int(message.timestamp * 1000) if message.timestamp else 0
        topic_of = self._topic_of
        for item in caused:
            if isinstance(item, Emit):
                publish.append((topic_of[item.kind], item.key.encode(), item.value, None, stamp))
            elif item.feedback is not None and item.feedback.event_id != facts.event_id:
                # Feedback read earlier that the interaction now disowns: its own message, from state.
                letter = self._lost(item)
                if letter is not None:
                    publish.append(letter)
            else:
                publish.append(self._dead_letter(message, item.reason, item.error_type))

    def _advance(self, partition: int, now_ms: int, read_to_end: ReadToEnd, publish: list[Pending]) -> None:
        watermark = self.watermarks[partition]
        inputs_read = True
        for topic in self._inputs:
            done = read_to_end(topic, partition) is True
            watermark.set_caught_up(topic, done)
            inputs_read = inputs_read and done
        topic_of = self._topic_of
        advanced = watermark.advance(now_ms)
        for item in self.partitions[partition].advance(advanced, now_ms or None, inputs_read):
            if isinstance(item, Emit):
                publish.append((topic_of[item.kind], item.key.encode(), item.value, None, 0))
            else:
                letter = self._lost(item)
                if letter is not None:
                    publish.append(letter)

    def _record_changes(self, partitions: Iterable[int]) -> list[ChangelogWrite]:
        changes: list[ChangelogWrite] = []
        append = changes.append
        for partition in partitions:
            state = self.partitions.get(partition)
            if state is None:
                continue
            upserts, deleted = state.take_changes()
            for interaction_id, value in upserts.items():
                append(_new(ChangelogWrite, (RECORDS, partition, interaction_id.encode(), value)))
            for interaction_id in deleted:
                append(_new(ChangelogWrite, (RECORDS, partition, interaction_id.encode(), None)))
        return changes

    def _dead_letter(self, message: InputMessage, reason: str, error: str) -> Pending:
        return self._letter(
            message.topic, message.partition, message.offset, message.key, message.value, reason, error
        )

    def _letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
    ) -> Pending:
        if key is not None and not isinstance(key, bytes):  # a transport that decoded the key after all
            key = str(key).encode()
        letter = DeadLetter.of(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=reason,
            error_type=error,
            stage="processor",
        )
        return (self.names.deadletter, key, letter.model_dump_json().encode(), None, 0)

    def _lost(self, item: LostEvent) -> Pending | None:
        # Only feedback is lost after the fact (its interaction never came); the message is
        # re-serialized from state, with the offset it was read from.
        fb = item.feedback
        if fb is None:
            return None
        value = orjson.dumps(fb.to_event())
        return self._letter(
            self.names.feedback,
            item.partition,
            fb.offset,
            fb.session_id.encode(),
            value,
            item.reason,
            item.error_type,
        )

    # ------------------------------------------------------------ the windows stage

    def process_contributions(self, messages: Sequence[InputMessage], now_ms: int = 0) -> Step:
        """One batch of metric contributions: update their windows, emit the changed aggregates
        (``now_ms``: the wall clock, which late windows linger by; 0 when there is none)."""
        publish: list[Pending] = []
        touched: set[int] = set()
        windows = self.windows
        for message in messages:
            partition = message.partition
            state = windows.get(partition)
            if state is None:
                state = self._open_windows(partition, now_ms)
            touched.add(partition)
            try:
                window = message.key.decode()  # type: ignore[union-attr]  # None is caught below
                contribution = orjson.loads(message.value)  # type: ignore[arg-type]  # None: likewise
                if not contribution.keys() >= _CONTRIBUTION_KEYS:
                    raise TypeError("a contribution needs window_start_ms, interaction_id and version")
            except (AttributeError, UnicodeDecodeError, orjson.JSONDecodeError, TypeError) as exc:
                # Only this stage writes the topic, so this is corruption or a foreign writer; a crash
                # here would repeat on every restart, and the window's other members are still good.
                publish.append(
                    self._dead_letter(message, f"not a metric contribution: {exc}", "invalid_message")
                )
                continue
            state.apply(window, contribution, now_ms or None)
        metrics = self.names.metrics
        for partition in touched:
            state = windows[partition]
            for window, aggregate in state.emissions():
                publish.append((metrics, window.encode(), aggregate, None, 0))
            state.expire(now_ms or None)
        return Step(publish, self._window_changes(touched))

    def _window_changes(self, partitions: Collection[int]) -> list[ChangelogWrite]:
        changes: list[ChangelogWrite] = []
        append = changes.append
        for partition in partitions:
            upserts, deleted = self.windows[partition].take_changes()
            for key, value in upserts.items():
                append(_new(ChangelogWrite, (WINDOWS, partition, key.encode(), value)))
            for key in deleted:
                append(_new(ChangelogWrite, (WINDOWS, partition, key.encode(), None)))
        return changes
