"""Publish contract events to Kafka, safely by default.

Idempotent producer, ``acks=all``, message key = ``session_id`` and the murmur2 partitioner
(the Java client's, so every producer of a session's events picks the same partition and the
stream processors see whole sessions). Delivery reports are counted; ``flush()`` on close.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from infra.kafka import client_config
from infra.settings import KafkaSettings
from producers.sender.loop import SAFE_PRODUCER_CONFIG
from schemas import FeedbackEvent, InteractionEvent, topics

__all__ = ["SAFE_PRODUCER_CONFIG", "DeliveryError", "DeliveryStats", "EventPublisher"]


class DeliveryError(RuntimeError):
    """The broker refused or lost a message for good."""


@dataclass
class DeliveryStats:
    """Delivery reports seen so far."""

    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        """Delivery callback for librdkafka (runs inside ``poll``/``flush``)."""
        with self._lock:
            if error is None:
                self.delivered += 1
            else:
                self.failed += 1
                self.last_error = str(error)


class EventPublisher:
    """Publish interaction and feedback events to their topics.

    Use as a context manager, or call :meth:`close`. ``publish`` only enqueues; delivery
    happens in librdkafka's background thread and is counted in :attr:`stats`.
    """

    def __init__(self, kafka: KafkaSettings, *, linger_ms: int = 5, **extra_config: Any) -> None:
        config = client_config(kafka, **{"linger.ms": linger_ms, **extra_config})
        config.update(SAFE_PRODUCER_CONFIG)
        self._producer = Producer(config)
        self._interactions = topics.topic_name(topics.INTERACTIONS, kafka.topic_namespace)
        self._feedback = topics.topic_name(topics.FEEDBACK, kafka.topic_namespace)
        self.stats = DeliveryStats()

    def publish(self, event: InteractionEvent | FeedbackEvent) -> None:
        """Enqueue one event on its topic, keyed by its ``session_id``."""
        topic = self._interactions if isinstance(event, InteractionEvent) else self._feedback
        self.publish_raw(topic, event.session_id.encode(), event.model_dump_json().encode())

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Enqueue raw bytes on a topic (for tools and tests that need exact bytes)."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self.stats.on_delivery)
                break
            except BufferError:
                # librdkafka's queue is full: let deliveries drain, then retry.
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every enqueued message is delivered; raise :class:`DeliveryError` otherwise."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} messages still undelivered after {timeout_s}s")
        if self.stats.failed:
            raise DeliveryError(f"{self.stats.failed} messages failed: {self.stats.last_error}")

    def close(self) -> None:
        """Flush and release the producer."""
        self.flush()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
