"""Erased users, as every stage needs them: recorded on ``ai.erasures.v1``, read whole at start, then
followed.

``feedbackloop forget`` records a request per user (:func:`request_erasure`). The processors and the
sink each keep an :class:`ErasureLog`: it reads the topic from its beginning before they handle their
first message, so a replay of older events finds the user erased, and then follows it for new
requests. Every partition of the topic is read by every process (no consumer group): a user's
events can be on any partition of the inputs, so every worker must know every erased user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from infra.kafka import call_with_retries, client_config, ensure_compacted, ensure_topics, watermark_offsets
from infra.output_producer import OutputProducer
from infra.settings import KafkaSettings
from schemas import ErasureRequest, topics

log = logging.getLogger(__name__)


def erasure_topic(kafka: KafkaSettings) -> str:
    """The real name of the erasure topic under the configured namespace."""
    return topics.topic_name(topics.ERASURES, kafka.topic_namespace)


def ensure_erasure_topic(kafka: KafkaSettings) -> str:
    """Create the erasure topic if it is missing, compacted (also one created before it had to be);
    return its name."""
    name = erasure_topic(kafka)
    ensure_topics(kafka, [name])
    ensure_compacted(kafka, [name])
    return name


def request_erasure(
    kafka: KafkaSettings, user_ids: Iterable[str], requested_by: str = ""
) -> list[ErasureRequest]:
    """Record one erasure request per user (key = user id) and wait until the broker has them all;
    return the requests. Raises what the broker refused."""
    requests = [ErasureRequest.now(user_id, requested_by) for user_id in dict.fromkeys(user_ids)]
    name = ensure_erasure_topic(kafka)
    producer = OutputProducer(kafka, linger_ms=0)
    for request in requests:
        producer.produce(name, request.user_id.encode(), request.model_dump_json().encode())
    producer.close()
    return requests


class ErasureLog:
    """The users erased so far: :meth:`load` reads the erasure topic whole, :meth:`poll` takes what
    came since. :attr:`users` is the live set (hand it to whatever checks events against it)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.topic = erasure_topic(kafka)
        self.users: set[str] = set()
        self._consumer: Consumer | None = None

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has read the topic to its end."""
        return self._consumer is not None

    def load(self, timeout_s: float = 60.0) -> set[str]:
        """Read every request from the beginning of the topic to its end as of now (creating the topic
        if it is missing); return the users. Then :meth:`poll` follows the topic from there. Raises
        :class:`TimeoutError` when the end is not reached in ``timeout_s``."""
        ensure_erasure_topic(self.kafka)
        consumer = Consumer(
            client_config(
                self.kafka,
                **{
                    "group.id": "feedbackloop-erasures",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        try:
            meta = call_with_retries(
                lambda: consumer.list_topics(self.topic, timeout=10), f"metadata of {self.topic}"
            )
            partitions = sorted(meta.topics[self.topic].partitions)
            remaining: dict[int, int] = {}
            for partition in partitions:
                low, high = watermark_offsets(consumer, TopicPartition(self.topic, partition))
                if high > low:
                    remaining[partition] = high
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            deadline = time.monotonic() + timeout_s
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read {self.topic} to its end within {timeout_s}s")
                for message in consumer.consume(num_messages=1000, timeout=0.2):
                    self._take(message)
                    partition, offset = message.partition(), message.offset()
                    if partition in remaining and offset is not None and offset + 1 >= remaining[partition]:
                        del remaining[partition]
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        log.info("%d erased users read from %s", len(self.users), self.topic)
        return set(self.users)

    def poll(self) -> list[str]:
        """Users erased since the last call (never waits; nothing before :meth:`load`)."""
        if self._consumer is None:
            return []
        before = set(self.users)
        for message in self._consumer.consume(num_messages=1000, timeout=0):
            self._take(message)
        return sorted(self.users - before)

    def close(self) -> None:
        """Stop following the topic."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            return
        value = message.value()
        if value is None:  # a tombstone: erasures are never taken back (see schemas.erasure)
            return
        try:
            request = ErasureRequest.model_validate_json(value)
        except ValidationError as exc:
            log.warning(
                "not an erasure request at %s [%s] %s: %s",
                self.topic,
                message.partition(),
                message.offset(),
                exc,
            )
            return
        self.users.add(request.user_id)


__all__ = ["ErasureLog", "ensure_erasure_topic", "erasure_topic", "request_erasure"]
