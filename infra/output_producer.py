"""A producer for pipeline outputs and state changelog records (librdkafka), with an awaitable flush.

aiokafka's producer is pure Python and cost more per message than the rest of a record's
processing; librdkafka takes a message in ~1-2 µs. ``flush`` runs in a thread so the event loop
keeps going while the broker acknowledges, and it raises when any message failed for good: the
caller must then not let its input offsets be committed.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, Message, Producer

from infra.kafka import client_config
from infra.settings import KafkaSettings


class OutputDeliveryError(RuntimeError):
    """An output or state record could not be delivered; processing must stop before committing."""


class OutputProducer:
    """Idempotent, ``acks=all`` producer with an awaitable flush."""

    def __init__(self, kafka: KafkaSettings, *, linger_ms: int = 5) -> None:
        self._producer = Producer(
            client_config(
                kafka,
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": linger_ms,
                    "partitioner": "murmur2_random",
                    "compression.type": "lz4",
                    "queue.buffering.max.messages": 1_000_000,
                    "queue.buffering.max.kbytes": 1_048_576,
                    "batch.size": 1_000_000,
                    # Only failures come back to Python; a callback per delivered message cost ~1 µs.
                    "delivery.report.only.error": True,
                },
            )
        )
        self._produce = self._producer.produce
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self.produced = 0

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            with self._lock:
                self._failures.append(str(error))

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = -1,
        timestamp_ms: int = 0,
    ) -> None:
        """Enqueue one message (``partition`` -1 lets the murmur2 partitioner pick by key;
        ``timestamp_ms`` 0 stamps it now)."""
        while True:
            try:
                self._produce(
                    topic, value, key, partition, on_delivery=self._on_delivery, timestamp=timestamp_ms
                )
                break
            except BufferError:
                # librdkafka's queue is full: serve delivery reports until it has room.
                self._producer.poll(0.01)
        self.produced += 1

    def flush_blocking(self, timeout_s: float = 120.0) -> None:
        """Block until everything produced so far is acknowledged; raise if anything failed."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining:
            raise OutputDeliveryError(f"{remaining} output messages undelivered after {timeout_s}s")
        if failures:
            raise OutputDeliveryError(f"{len(failures)} output messages failed, first: {failures[0]}")

    async def flush(self, timeout_s: float = 120.0) -> None:
        """Wait, off the event loop, until everything produced so far is acknowledged."""
        await asyncio.get_running_loop().run_in_executor(None, self.flush_blocking, timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush what is left (blocking)."""
        self.flush_blocking(timeout_s)
