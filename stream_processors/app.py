"""Faust wiring of the stream processors: agents decode, call the pure logic, emit.

Two stages run in one Faust app (one consumer group, so N worker processes share the work):

* ``process_events`` reads ``ai.interactions.v1`` and ``ai.feedback.v1`` (co-partitioned by
  ``session_id``), keeps one :class:`~stream_processors.state.PartitionState` per partition,
  and emits joined feedback, outcomes, metric contributions and dead letters.
* ``aggregate_windows`` reads the contributions (keyed by window) and emits the window
  aggregates to ``ai.metrics.v1``.

Per batch, the order is: send the outputs and wait for the broker's acknowledgement, then send
the changed state records to the changelog; consumer offsets are committed (by Faust, after our
producer is flushed again) only after that. So whatever moment a worker dies at, the state it
recovers from its changelog never claims an output that was not delivered, and the events it
re-reads are recognised by their ids: outputs are re-derived with the same versions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from faust.types import TP

from infra.groups import app_id, contributions_topic
from infra.output_producer import OutputProducer
from infra.settings import Settings
from schemas import DeadLetter, format_ms, to_epoch_ms, topics
from stream_processors.decode import InvalidInputError, apply_event, decode_input
from stream_processors.faust_transport import FastConsumer, FastTransport
from stream_processors.state import Emit, LostEvent, PartitionState
from stream_processors.watermark import Watermark
from stream_processors.windows import WindowState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicNames:
    """Real names of every topic the processors touch."""

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


class _App(faust.App):
    def _new_transport(self) -> Any:
        return FastTransport(self.conf.broker_consumer, self)


class Pipeline:
    """The processors' state and behaviour, independent of how Faust delivers events."""

    def __init__(self, settings: Settings, names: TopicNames, output: OutputProducer) -> None:
        self.settings = settings
        self.pipeline = settings.pipeline
        self.names = names
        self.output = output
        self.lock = asyncio.Lock()
        self.partitions: dict[int, PartitionState] = {}
        self.watermarks: dict[int, Watermark] = {}
        self.windows: dict[int, WindowState] = {}
        self.read_offsets: dict[tuple[str, int], int] = {}
        self.records_changelog = ""
        self.windows_changelog = ""
        self.records_store: Any = None
        self.windows_store: Any = None
        self.consumer: Any = None
        # Whether Faust has recovered the tables of the current assignment and no rebalance is
        # under way: from then on every assigned input partition gets its state, even one that
        # no event comes to.
        self.recovered: Callable[[], bool] = lambda: False
        self.window_ms = self.pipeline.metrics_window_s * 1000
        self._topic_of = {
            "joined": names.joined,
            "outcome": names.outcomes,
            "contribution": names.contributions,
            "edit_ops": names.edit_operations,
        }
        self.invalid = 0

    # ------------------------------------------------------------ state lifecycle

    def _partition(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            state = PartitionState.restore(partition, self.pipeline, self._recovered(self.records_store))
            self._release(self.records_store, [str(i) for i in state.records])
            self.partitions[partition] = state
            watermark = Watermark(
                int(self.pipeline.allowed_lateness_s * 1000), int(self.pipeline.idle_advance_s * 1000)
            )
            watermark.register(self.names.interactions, self.names.feedback)
            self.watermarks[partition] = watermark
            log.info("partition %d: restored %d records", partition, len(state.records))
        return state

    def _window_state(self, partition: int) -> WindowState:
        state = self.windows.get(partition)
        if state is None:
            state = WindowState.restore(
                partition,
                self.window_ms,
                int(self.pipeline.metrics_retention_s * 1000),
                self._recovered(self.windows_store),
            )
            self._release(
                self.windows_store,
                [WindowState.member_key(w, i) for w, members in state.windows.items() for i in members],
            )
            self.windows[partition] = state
        return state

    @staticmethod
    def _recovered(store: Any) -> list[tuple[str, bytes]]:
        # Faust recovers the changelog into its in-memory store before it hands us events of a
        # partition (from the earliest offset, on every assignment).
        if store is None:
            return []
        return [
            (key.decode() if isinstance(key, bytes) else key, value) for key, value in list(store.items())
        ]

    @staticmethod
    def _release(store: Any, keys: Iterable[str]) -> None:
        # From here on the partition's state lives in our objects; keeping Faust's copy would
        # double the memory and go stale (it is rebuilt from the changelog on reassignment).
        if store is None:
            return
        for key in keys:
            store.pop(key.encode(), None)
            store.pop(key, None)

    def forget(self, revoked: Iterable[TP]) -> None:
        """Drop the state of partitions this worker no longer owns (the changelog has it)."""
        for tp in revoked:
            if tp.topic in (self.names.interactions, self.names.feedback):
                self.partitions.pop(tp.partition, None)
                self.watermarks.pop(tp.partition, None)
            elif tp.topic == self.names.contributions:
                self.windows.pop(tp.partition, None)
            self.read_offsets.pop((tp.topic, tp.partition), None)

    # ------------------------------------------------------------ processing

    async def process_events(self, messages: Sequence[Any]) -> None:
        """One batch of input messages (Faust messages): apply, advance time, emit, persist."""
        async with self.lock:
            now_ms = int(time.time() * 1000)
            out: list[Emit | LostEvent] = []
            stamps: dict[int, int] = {}  # id(emit) -> publish time of the message that caused it
            touched: set[int] = set()
            for message in messages:
                partition = message.partition
                state = self._partition(partition)
                touched.add(partition)
                self.read_offsets[(message.topic, partition)] = message.offset
                caused = self._apply(state, message, now_ms)
                if caused and message.timestamp:
                    stamp = int(message.timestamp * 1000)
                    stamps.update((id(item), stamp) for item in caused)
                out.extend(caused)
            for partition in touched:
                watermark = self.watermarks[partition]
                for topic in (self.names.interactions, self.names.feedback):
                    watermark.set_caught_up(topic, self._read_to_end(TP(topic, partition)) is True)
                out.extend(self._advance(partition, now_ms))
            await self._emit_and_persist(out, touched, stamps)

    def _apply(self, state: PartitionState, message: Any, now_ms: int) -> list[Emit | LostEvent]:
        topic = message.topic
        try:
            event = decode_input(topic == self.names.interactions, message.key, message.value)
        except InvalidInputError as exc:
            self.invalid += 1
            self._dead_letter(
                topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                exc.reason,
                exc.error_type,
            )
            return []
        created_ms = to_epoch_ms(event.created_at)
        self.watermarks[state.partition].observe(topic, created_ms, now_ms)
        caused = apply_event(state, event, created_ms, message.offset)
        for lost in caused:
            if isinstance(lost, LostEvent):
                self._dead_letter(
                    topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    lost.reason,
                    lost.error_type,
                )
        return [item for item in caused if isinstance(item, Emit)]

    def _advance(self, partition: int, now_ms: int) -> list[Emit | LostEvent]:
        return self.partitions[partition].advance(self.watermarks[partition].advance(now_ms))

    def _read_to_end(self, tp: TP) -> bool | None:
        """Whether everything the broker has of ``tp`` went through this pipeline (None: unknown)."""
        consumer = self.consumer
        if consumer is None:
            return None
        try:
            high = consumer.highwater(tp)
        except AssertionError:  # not assigned (a rebalance is under way)
            return False
        if high is None:
            return False  # no fetch response yet: nothing is known about its end
        # Faust's read offset is the last offset its fetcher handed over, or, until it hands one
        # over after a seek, the committed position (the next offset to read).
        handed = consumer._read_offset.get(tp)
        processed = self.read_offsets.get((tp.topic, tp.partition))
        if handed is None:
            return None if high > 0 else True
        if processed is None:  # nothing went through yet in this assignment
            return bool(handed >= high)
        return bool(processed == handed and handed + 1 >= high)

    async def _position_at_end(self, tp: TP) -> bool:
        try:
            position = await self.consumer.position(tp)
            high = self.consumer.highwater(tp)
        except AssertionError:
            return False
        return position is not None and high is not None and position >= high

    def _restore_assigned(self) -> None:
        # A partition whose input was all read before a restart gets no event in this run, yet its
        # recovered records may still wait to settle: restore it so the idle watermark reaches them.
        if self.consumer is None or not self.recovered():
            return
        for tp in self.consumer.assignment():
            if tp.topic == self.names.interactions and tp.partition not in self.partitions:
                self._partition(tp.partition)

    async def tick(self) -> None:
        """Let quiet partitions' watermarks follow the wall clock (settles the last interactions)."""
        if self.consumer is None:
            return
        async with self.lock:
            self._restore_assigned()
            if not self.partitions:
                return
            now_ms = int(time.time() * 1000)
            out: list[Emit | LostEvent] = []
            for partition in list(self.partitions):
                watermark = self.watermarks[partition]
                for topic in (self.names.interactions, self.names.feedback):
                    tp = TP(topic, partition)
                    done = self._read_to_end(tp)
                    if done is None:  # nothing handed over in this run: ask where the consumer stands
                        done = await self._position_at_end(tp)
                    watermark.set_caught_up(topic, done)
                out.extend(self._advance(partition, now_ms))
            await self._emit_and_persist(out, set(self.partitions))

    def _dead_letter(
        self, topic: str, partition: int, offset: int, key: Any, value: bytes | None, reason: str, error: str
    ) -> None:
        letter = DeadLetter.of(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key if isinstance(key, bytes) or key is None else str(key).encode(),
            value=value,
            reason=reason,
            error_type=error,
            stage="processor",
        )
        self.output.produce(self.names.deadletter, key, letter.model_dump_json().encode())

    async def _emit_and_persist(
        self, out: list[Emit | LostEvent], partitions: Iterable[int], stamps: dict[int, int] | None = None
    ) -> None:
        produce = self.output.produce
        stamps = stamps or {}
        topic_of = self._topic_of
        for item in out:
            if isinstance(item, Emit):
                topic = topic_of[item.kind]
                # A joined feedback keeps its event's publish time, so latency is measurable end to end.
                value = orjson.dumps(item.value)
                produce(topic, item.key.encode(), value, timestamp_ms=stamps.get(id(item), 0))
            else:
                self._lost(item)
        # Outputs first, acknowledged; only then the state that says they were sent.
        await self.output.flush()
        for partition in partitions:
            state = self.partitions.get(partition)
            if state is None:
                continue
            upserts, deleted = state.take_changes()
            for interaction_id, value in upserts.items():
                produce(self.records_changelog, str(interaction_id).encode(), value, partition)
            for interaction_id in deleted:
                produce(self.records_changelog, str(interaction_id).encode(), None, partition)

    def _lost(self, item: LostEvent) -> None:
        # Only feedback is lost after the fact (its interaction never came); the message is
        # re-serialized from state, with the offset it was read from.
        fb = item.feedback
        if fb is None:
            return
        value = orjson.dumps(
            {
                "schema_version": 1,
                "event_id": fb.event_id,
                "interaction_id": fb.interaction_id,
                "user_id": fb.user_id,
                "session_id": fb.session_id,
                "created_at": format_ms(fb.created_ms),
                "feedback_type": fb.feedback_type,
                "corrected_output": fb.corrected_output,
                "copied_chars": fb.copied_chars,
                "dwell_ms": fb.dwell_ms,
                "comment": fb.comment,
            }
        )
        self._dead_letter(
            self.names.feedback,
            item.partition,
            fb.offset,
            fb.session_id.encode(),
            value,
            item.reason,
            item.error_type,
        )

    async def process_contributions(self, messages: Sequence[Any]) -> None:
        """One batch of metric contributions: update windows, emit their aggregates, persist."""
        async with self.lock:
            touched: set[int] = set()
            for message in messages:
                state = self._window_state(message.partition)
                touched.add(message.partition)
                window = message.key.decode() if isinstance(message.key, bytes) else message.key
                state.apply(window, orjson.loads(message.value))
            for partition in touched:
                state = self.windows[partition]
                for window, aggregate in state.emissions():
                    self.output.produce(self.names.metrics, window.encode(), orjson.dumps(aggregate))
                state.expire()
            await self.output.flush()
            for partition in touched:
                upserts, deleted = self.windows[partition].take_changes()
                for key, value in upserts.items():
                    self.output.produce(self.windows_changelog, key.encode(), value, partition)
                for key in deleted:
                    self.output.produce(self.windows_changelog, key.encode(), None, partition)


def create_app(settings: Settings) -> tuple[faust.App, Pipeline]:
    """The Faust app running both processing stages, and the pipeline behind its batch agents."""
    pipeline_cfg = settings.pipeline
    names = TopicNames.of(settings)
    partitions = settings.kafka.partitions
    app = _App(
        app_id(settings),
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        store="memory://",
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=pipeline_cfg.session_timeout_s,
        broker_heartbeat_interval=max(1.0, pipeline_cfg.session_timeout_s / 5),
        broker_request_timeout=max(90.0, pipeline_cfg.session_timeout_s * 3),
        broker_rebalance_timeout=max(30.0, pipeline_cfg.session_timeout_s * 3),
        broker_commit_interval=pipeline_cfg.commit_interval_s,
        consumer_max_fetch_size=pipeline_cfg.fetch_max_bytes,
        table_standby_replicas=pipeline_cfg.standby_replicas,
        producer_acks=-1,
        web_enabled=False,
        web_port=pipeline_cfg.web_port,
        web_host="127.0.0.1",
        datadir=settings.pipeline.data_dir / app_id(settings),
    )
    output = OutputProducer(settings.kafka)
    pipeline = Pipeline(settings, names, output)

    # The topics are registered with Faust (subscription, co-partitioned assignment, commits) and
    # consumed by batch agents (see stream_processors.faust_transport for why).
    for name in (names.interactions, names.feedback):
        app.topics.add(app.topic(name, key_serializer="raw", value_serializer="raw"))
    app.topics.add(
        app.topic(
            names.contributions,
            partitions=partitions,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
        )
    )
    records = app.Table("records", key_type=bytes, value_type=bytes, partitions=partitions)
    windows = app.Table("windows", key_type=bytes, value_type=bytes, partitions=partitions)
    pipeline.records_changelog = records.changelog_topic.get_topic_name()
    pipeline.windows_changelog = windows.changelog_topic.get_topic_name()
    pipeline.records_store = records.data
    pipeline.windows_store = windows.data
    consumer = app.consumer
    pipeline.consumer = consumer
    if isinstance(consumer, FastConsumer):
        consumer.before_commit = output.flush
        consumer.batch_max = pipeline_cfg.batch_max_events
        consumer.batch_handlers = {
            names.interactions: pipeline.process_events,
            names.feedback: pipeline.process_events,
            names.contributions: pipeline.process_contributions,
        }

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # mode's timer decorator is untyped
    async def idle_watermarks() -> None:
        await pipeline.tick()

    async def on_revoked(_app: Any, *args: Any, signal: Any, **_: Any) -> None:
        revoked: set[TP] = args[0]
        async with pipeline.lock:
            pipeline.forget(revoked)

    # Faust sends on_rebalance_complete once the tables of an assignment are recovered, and clears
    # ``rebalancing`` right after (it stays set if another rebalance began meanwhile).
    completed_generation: list[int] = [-1]

    async def on_recovered(_app: Any, *args: Any, signal: Any, **_: Any) -> None:
        completed_generation[0] = app.consumer_generation_id

    pipeline.recovered = lambda: not app.rebalancing and completed_generation[0] == app.consumer_generation_id
    app.on_partitions_revoked.connect(cast(Any, on_revoked))  # mode types the receiver narrowly
    app.on_rebalance_complete.connect(cast(Any, on_recovered))

    return app, pipeline
