"""``schemas.partition_for`` predicts where librdkafka's murmur2 partitioner puts each key on a real topic."""

from __future__ import annotations

import contextlib
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from infra.kafka import client_config, delete_topics, ensure_topics
from infra.output_producer import OutputProducer
from infra.settings import KafkaSettings
from schemas import partition_for

PARTITIONS = 7  # not the default 4, and prime: a wrong modulus or sign cannot pass by luck


def _keys() -> list[bytes]:
    keys = [f"session-{i}".encode() for i in range(600)]
    keys += [uuid.uuid4().hex.encode()[: i % 33] for i in range(200)]  # lengths 1..32
    keys += [f"sëssïon-{i}-ünïcødé".encode() for i in range(100)]
    keys += [bytes([(i * 37 + j) % 256 for j in range(i % 11 + 1)]) for i in range(100)]  # bytes >= 0x80
    # Not the zero-length key: a client may send it as no key, which murmur2_random places at random.
    return [k for k in keys if k]


def _read_back(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[tuple[bytes, int]]:
    consumer = Consumer(
        client_config(kafka, **{"group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        positions = dict.fromkeys(range(PARTITIONS), 0)
        out: list[tuple[bytes, int]] = []
        deadline = time.monotonic() + timeout_s
        while any(positions[p] < ends[p] for p in positions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            key, partition, offset = message.key(), message.partition(), message.offset()
            assert key is not None
            assert partition is not None
            assert offset is not None
            out.append((key, partition))
            positions[partition] = offset + 1
        return out
    finally:
        consumer.close()


def test_every_key_lands_on_the_partition_partition_for_predicts(kafka: KafkaSettings) -> None:
    topic = f"{kafka.topic_namespace}.partitioning-check"
    ensure_topics(kafka, [topic], partitions=PARTITIONS)
    try:
        keys = _keys()
        half = len(keys) // 2
        # What an outside client configured as the README says sends ...
        producer = Producer(client_config(kafka, partitioner="murmur2_random", acks="all"))
        for key in keys[:half]:
            producer.produce(topic, b"x", key)
        assert producer.flush(30) == 0
        # ... and what the processors' own producer sends when the core leaves the partition open.
        output = OutputProducer(kafka)
        for key in keys[half:]:
            output.produce(topic, key, b"x")
        output.close()

        landed = _read_back(kafka, topic)
        assert sorted(k for k, _ in landed) == sorted(keys)
        wrong = [(key, partition, partition_for(key, PARTITIONS)) for key, partition in landed
                 if partition != partition_for(key, PARTITIONS)]  # fmt: skip
        assert wrong == []
        assert {partition for _, partition in landed} == set(range(PARTITIONS))
    finally:
        with contextlib.suppress(Exception):
            delete_topics(kafka, [topic])
