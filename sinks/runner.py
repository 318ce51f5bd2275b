"""The ClickHouse sink stage: consume the output topics, insert in batches, commit after inserting.

Offsets are committed only after every row read so far is in ClickHouse, so a crash replays
rows rather than losing them, and the tables fold the replays. chdb calls block, which is fine
here: the sink is a plain consumer loop in a process of its own (one process per chdb directory).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from infra.clickhouse import connect
from infra.groups import sink_group_id
from infra.kafka import client_config
from infra.output_producer import OutputProducer
from infra.settings import Settings
from schemas import DeadLetter, topics
from sinks.clickhouse import migrate
from sinks.clickhouse.writer import Pending, TableWriter
from sinks.rows import TABLES, TableSpec

log = logging.getLogger(__name__)


def sink_topics(settings: Settings) -> list[str]:
    """Real names of the topics the sink reads."""
    return [topics.topic_name(spec.topic, settings.kafka.topic_namespace) for spec in TABLES]


@dataclass
class SinkStats:
    """What the sink did so far, and how long rows took from publish to visible (ms, sampled)."""

    consumed: int = 0
    skipped_invalid_input: int = 0
    dead_lettered: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, list[int]] = field(default_factory=dict)
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

    def summary(self) -> dict[str, Any]:
        """JSON-ready counters and p50/p99 latency per table."""
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
            "consumed": self.consumed,
            "skipped_invalid_input": self.skipped_invalid_input,
            "dead_lettered": self.dead_lettered,
            "inserted": self.inserted,
            "latency": latency,
        }


class ClickHouseSink:
    """Consume, buffer, insert, commit — until :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self._stop = threading.Event()
        ch = settings.clickhouse
        self.database = ch.database
        self.client = connect(ch)
        migrate(self.client, ch.database)
        ns = settings.kafka.topic_namespace
        self._specs: dict[str, TableSpec] = {topics.topic_name(s.topic, ns): s for s in TABLES}
        self._raw_input = topics.topic_name(topics.INTERACTIONS, ns)
        self._deadletter_topic = topics.topic_name(topics.DEADLETTER, ns)
        self._producer = OutputProducer(settings.kafka)
        self.writers = {
            spec.table: TableWriter(
                self.client,
                f"{ch.database}.{spec.table}",
                spec.columns,
                self._dead_letter_refused,
                max_retries=ch.max_retries,
            )
            for spec in TABLES
        }
        self._consumer = Consumer(
            client_config(
                settings.kafka,
                **{
                    "group.id": sink_group_id(settings),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "max.partition.fetch.bytes": settings.pipeline.fetch_max_bytes,
                    "session.timeout.ms": int(settings.pipeline.session_timeout_s * 1000),
                    "isolation.level": "read_committed",
                },
            )
        )

    def stop(self) -> None:
        """Ask the loop to finish: it flushes, commits and returns."""
        self._stop.set()

    def run(self) -> SinkStats:
        """Consume until stopped; always flush and commit what was read before returning."""
        ch = self.settings.clickhouse
        self._consumer.subscribe(list(self._specs), on_revoke=self._on_revoke)
        last_flush = time.monotonic()
        last_log = last_flush
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(num_messages=10_000, timeout=0.1):
                    self._take(message)
                buffered = sum(len(w) for w in self.writers.values())
                now = time.monotonic()
                if buffered and (buffered >= ch.insert_batch_rows or now - last_flush >= ch.flush_interval_s):
                    self._flush_and_commit()
                    last_flush = now
                if now - last_log >= 10:
                    self._report()
                    last_log = now
        finally:
            self._flush_and_commit()
            self._consumer.close()
            self._producer.close()
            self._report("sink stopped")
        return self.stats

    def _report(self, what: str = "sink") -> None:
        summary = self.stats.summary()
        log.info("%s: %s", what, summary)
        path = self.settings.pipeline.sink_stats_file
        if path is not None:
            path.write_text(json.dumps(summary, indent=2))

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"sink consumer failed: {error}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("sink consumer: %s", error)
            return
        self.stats.consumed += 1
        topic = message.topic()
        assert topic is not None
        spec = self._specs[topic]
        value = message.value()
        try:
            if value is None:
                raise ValueError("no value")
            row = spec.to_row(value)
        except (ValidationError, ValueError) as exc:
            if topic == self._raw_input:
                # The processor dead-letters invalid input with the full reason; counting is enough here.
                self.stats.skipped_invalid_input += 1
                return
            self._send_dead_letter(message, f"{spec.table}: {exc}", "validation_error")
            return
        self.writers[spec.table].add(row, message)

    def _flush_and_commit(self) -> None:
        for table, writer in self.writers.items():
            published = [m.timestamp()[1] for m in writer.sources()]
            count = writer.flush()
            self.stats.inserted[table] = self.stats.inserted.get(table, 0) + count
            visible = int(time.time() * 1000)
            self.stats.record_latency(table, [visible - t for t in published if t > 0])
        self._producer.flush_blocking(60.0)  # dead letters are durable before their offsets commit
        try:
            self._consumer.commit(asynchronous=False)
        except Exception as exc:  # nothing to commit, or a rebalance: the next commit covers it
            log.debug("commit skipped: %s", exc)

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._flush_and_commit()

    def _dead_letter_refused(self, pending: Pending, error: str) -> None:
        message = pending.source
        if message.topic() == self._deadletter_topic:
            log.error("dead letter refused by ClickHouse, not re-queued (it would loop): %s", error)
            return
        self._send_dead_letter(message, f"ClickHouse refused the row: {error}", "insert_error")

    def _send_dead_letter(self, message: Message, reason: str, error_type: str) -> None:
        self.stats.dead_lettered += 1
        letter = DeadLetter.of(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            reason=reason,
            error_type=error_type,
            stage="sink",
        )
        self._producer.produce(self._deadletter_topic, message.key(), letter.model_dump_json().encode())
