"""Faust wiring of the stream processors: topics and tables registered, batches handed to the core.

Two stages run in one Faust app (one consumer group, so N worker processes share the work); what
they do is :class:`~stream_processors.core.ProcessingCore`'s. This module only connects it:

* the batch handlers of the input topics and of the contributions topic call the core and
  deliver what it returns — the outputs, then (once the broker acknowledged them) the changelog
  records; consumer offsets are committed by Faust, after our producer is flushed again
  (``stream_processors.faust_transport``), so only after both;
* a one-second timer lets quiet partitions' event time follow the wall clock;
* Faust's tables recover the changelogs on every assignment and the core restores a partition's
  state from them the first time it needs it; revoked partitions are forgotten;
* erased users (``ai.erasures.v1``) are read whole before the first batch, then followed by the
  timer: the core drops their events and forgets their state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import faust
from faust.types import TP
from faust.types.auth import CredentialsT

from infra.erasures import ErasureLog
from infra.groups import app_id
from infra.kafka import ssl_context
from infra.output_producer import OutputProducer
from infra.settings import KafkaSettings, Settings
from stream_processors.core import (
    RECORDS,
    WINDOWS,
    ProcessingCore,
    ReadToEnd,
    Step,
    Store,
    TopicNames,
    input_read_to_end,
)
from stream_processors.faust_transport import FastApp, FastConsumer

log = logging.getLogger(__name__)
#: How often the worker logs where each partition's event time stands.
_STATUS_EVERY_MS = 30_000

__all__ = ["Pipeline", "TopicNames", "create_app"]


class TableStores:
    """The in-memory stores of the Faust tables, as the core's :class:`ChangelogRecovery`."""

    def __init__(self) -> None:
        self.stores: dict[Store, Any] = {}

    def recovered(self, store: Store) -> list[tuple[str, bytes]]:
        """Every record Faust recovered into ``store`` and the core has not taken yet."""
        # Faust recovers the changelog into its in-memory store before it hands us events of a
        # partition: from the earliest offset when the partition is new to this worker, else from
        # where its last recovery stopped, on top of what the store holds (hence hand_back).
        data = self.stores.get(store)
        if data is None:
            return []
        return [(key.decode() if isinstance(key, bytes) else key, value) for key, value in list(data.items())]

    def release(self, store: Store, keys: Iterable[str]) -> None:
        """Drop Faust's copies of records the core holds now."""
        data = self.stores.get(store)
        if data is None:
            return
        for key in keys:
            data.pop(key.encode(), None)
            data.pop(key, None)

    def hand_back(self, store: Store, records: Mapping[str, bytes]) -> None:
        """Put the records of a revoked partition back into Faust's store (see the core's forget)."""
        data = self.stores.get(store)
        if data is None:
            return
        for key, value in records.items():
            data[key.encode()] = value


class Pipeline:
    """The core, driven by Faust's batch handlers and timer, delivering through one output producer."""

    def __init__(self, settings: Settings, names: TopicNames, output: OutputProducer) -> None:
        self.names = names
        self.output = output
        self.tables = TableStores()
        #: Erased users, read whole before the first batch and followed by the timer (see ``tick``).
        self.erasures = ErasureLog(settings.kafka)
        self.core = ProcessingCore(settings.pipeline, names, self.tables, self.erasures.users)
        self.lock = asyncio.Lock()
        self.changelogs: dict[Store, str] = {}
        self.consumer: FastConsumer | None = None
        # Whether Faust has recovered the tables of the current assignment and no rebalance is
        # under way: from then on every assigned input partition gets its state, even one that
        # no event comes to.
        self.recovered: Callable[[], bool] = lambda: False
        self._last_status_ms = 0

    async def process_events(self, messages: Sequence[Any]) -> None:
        """One batch of input messages (Faust messages): through the core, then delivered."""
        async with self.lock:
            await self._follow_erasures()
            await self._deliver(self.core.process_events(messages, _now_ms(), self._read_to_end))

    async def process_contributions(self, messages: Sequence[Any]) -> None:
        """One batch of metric contributions: through the core, then delivered."""
        async with self.lock:
            await self._deliver(self.core.process_contributions(messages, _now_ms()))

    async def tick(self) -> None:
        """Let quiet partitions' watermarks follow the wall clock (settles the last interactions)."""
        consumer = self.consumer
        if consumer is None:
            return
        async with self.lock:
            await self._follow_erasures()
            if self.recovered():
                self.core.open_partitions(
                    (tp.partition for tp in consumer.assignment() if tp.topic == self.names.interactions),
                    _now_ms(),
                )
            if not self.core.partitions:
                return
            now_ms = _now_ms()
            step = Step([], [])
            for partition in list(self.core.partitions):
                done: dict[str, bool] = {}
                for topic in (self.names.interactions, self.names.feedback):
                    at_end = self._read_to_end(topic, partition)
                    if at_end is None:  # nothing handed over in this run: ask where the consumer stands
                        at_end = await self._position_at_end(TP(topic, partition))
                    done[topic] = at_end
                # Advanced right after its own answers: while we wait on the broker for the next
                # partition, this one may receive messages, and a stale "read to the end" would let
                # its watermark jump to the wall clock past them.
                ticked = self.core.tick(now_ms, _answered(done), [partition])
                step.pending += ticked.pending
                step.changelog += ticked.changelog
            await self._deliver(step)
            if now_ms - self._last_status_ms >= _STATUS_EVERY_MS:
                self._last_status_ms = now_ms
                log.info(
                    "partitions: %s; inputs (high, handed, processed): %s",
                    self.core.describe(now_ms),
                    self._offsets(),
                )

    async def _follow_erasures(self) -> None:
        """Before any state is opened or event applied, every erasure so far (read off the event loop):
        a replay must find the users erased. Then, before each batch and tick, the new requests: their
        users' state is forgotten at once (what they sent later is dropped by the core)."""
        if not self.erasures.loaded:
            await asyncio.get_running_loop().run_in_executor(None, self.erasures.load)
        if erased := self.erasures.poll():
            log.info("forgetting %d erased users' state", len(erased))
            await self._deliver(self.core.erase(erased))

    def forget(self, revoked: Iterable[TP]) -> None:
        """Drop the state of partitions this worker no longer owns (the changelog has it)."""
        self.core.forget(revoked)

    async def _deliver(self, step: Step) -> None:
        produce = self.output.produce
        for topic, key, value, partition, timestamp_ms in step.messages():
            produce(topic, key, value, -1 if partition is None else partition, timestamp_ms)
        # Outputs first, acknowledged; only then the state that says they were sent.
        await self.output.flush()
        changelogs = self.changelogs
        for store, partition, key, record in step.changelog:
            produce(changelogs[store], key, record, partition)

    def _offsets(self) -> str:
        """Per input partition, what :meth:`_read_to_end` decides from: for the log, so a partition
        whose event time does not advance can be told apart from one with nothing to read."""
        consumer = self.consumer
        if consumer is None:
            return "-"
        parts = []
        for partition in sorted(self.core.partitions):
            for name, topic in (("i", self.names.interactions), ("f", self.names.feedback)):
                tp = TP(topic, partition)
                try:
                    high = consumer.highwater(tp)
                except AssertionError:
                    high = None
                handed, processed = consumer.handed_offset(tp), self.core.processed_offset(topic, partition)
                parts.append(f"{name}{partition} {high}/{handed}/{processed}")
        return " ".join(parts)

    def _read_to_end(self, topic: str, partition: int) -> bool | None:
        """Whether everything the broker has of the partition went through the core (None: unknown)."""
        consumer = self.consumer
        if consumer is None:
            return None
        tp = TP(topic, partition)
        try:
            high = consumer.highwater(tp)
        except AssertionError:  # not assigned (a rebalance is under way)
            return False
        return input_read_to_end(
            high, consumer.handed_offset(tp), self.core.processed_offset(topic, partition)
        )

    async def _position_at_end(self, tp: TP) -> bool:
        assert self.consumer is not None
        try:
            position = await self.consumer.position(tp)
            high = self.consumer.highwater(tp)
        except AssertionError:
            return False
        return position is not None and high is not None and position >= high


def _now_ms() -> int:
    return int(time.time() * 1000)


def _answered(done: dict[str, bool]) -> ReadToEnd:
    """One partition's answers, already obtained, in the form the core asks for them."""
    return lambda topic, _partition: done[topic]


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's credentials for ``kafka``'s security settings, so its aiokafka consumer and producer
    authenticate and encrypt like every confluent-kafka client (``infra.kafka.client_config``)."""
    context = ssl_context(kafka)
    if kafka.uses_sasl:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password is not None else None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=(kafka.sasl_mechanism or "PLAIN").upper(),
        )
    return faust.SSLCredentials(context) if context is not None else None


def create_app(settings: Settings) -> tuple[faust.App, Pipeline]:
    """The Faust app running both processing stages, and the pipeline behind its batch agents."""
    pipeline_cfg = settings.pipeline
    names = TopicNames.of(settings)
    partitions = settings.kafka.partitions
    app = FastApp(
        app_id(settings),
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings.kafka),
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
    tables = {
        store: app.Table(store, key_type=bytes, value_type=bytes, partitions=partitions)
        for store in (RECORDS, WINDOWS)
    }
    for store, table in tables.items():
        pipeline.changelogs[store] = table.changelog_topic.get_topic_name()
        pipeline.tables.stores[store] = table.data
    consumer = app.consumer
    if not isinstance(consumer, FastConsumer):
        raise TypeError(f"the processors need the batch-agent consumer, Faust built {type(consumer)!r}")
    pipeline.consumer = consumer
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
