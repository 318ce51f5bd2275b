"""The Sender on its own, in this process (in the SDK it runs in the sender process): record frames
in, the spool or librdkafka out, its state in a status block."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from producers.sender.ipc import Slot, StatusBlock, record_frame, topic_prefix
from producers.sender.loop import Mode, Sender, SenderConfig
from tests.unit.test_producer_sdk import closed_port, spooled_values, wait_for

TOPIC = topic_prefix("unit.feedback.interactions")


def frames(start: int, stop: int) -> list[bytes]:
    return [record_frame(TOPIC, b"s", json.dumps({"seq": i}).encode()) for i in range(start, stop)]


@pytest.fixture
def config(tmp_path: Path) -> SenderConfig:
    return SenderConfig(
        kafka_config={"bootstrap.servers": f"127.0.0.1:{closed_port()}"},
        spool_dir=str(tmp_path / "spool"),
        close_timeout_s=0.2,
        spool_fsync_interval_s=0.0,
    )


@pytest.fixture
def buffer() -> collections.deque[bytes]:
    return collections.deque()


@pytest.fixture
def sender(config: SenderConfig, buffer: collections.deque[bytes]) -> Iterator[Sender]:
    s = Sender(config, buffer, StatusBlock())
    yield s
    s.close(0.2)


def test_frames_reach_the_spool_byte_for_byte(sender: Sender, buffer: collections.deque[bytes]) -> None:
    sent = frames(0, 300)
    buffer.extend(sent)
    sender.notify()
    wait_for(lambda: sender.counts["spooled"] + sender.in_flight >= 300)
    sender.close(0.2)
    assert [v["seq"] for v in spooled_values(sender.spool_dir)] == list(range(300))
    segment = b"".join(p.read_bytes()[8:] for p in sorted(sender.spool_dir.glob("*.seg")))
    assert b"".join(sent) in segment  # the frames the app built are the records on disk


def test_state_is_published_in_the_status_block(sender: Sender, buffer: collections.deque[bytes]) -> None:
    buffer.extend(frames(0, 50))
    sender.notify()
    wait_for(lambda: sender.status[Slot.SPOOLED] + sender.status[Slot.IN_FLIGHT] >= 50)
    wait_for(lambda: sender.status[Slot.RECORDS] == 50)
    wait_for(lambda: sender.mode is Mode.SPOOL and sender.status[Slot.SPOOLING] == 1)
    assert sender.status[Slot.SPOOL_BYTES] > 0
    assert sender.status[Slot.BUFFERED] == 0


def test_flush_is_only_satisfied_by_acknowledgements(
    sender: Sender, buffer: collections.deque[bytes]
) -> None:
    buffer.extend(frames(0, 10))
    sender.request_flush(1)
    assert sender.flush(0.3) is False  # no broker: nothing is ever acknowledged
    assert sender.flushed == 0
    assert sender.status[Slot.FLUSHED] == 0


def test_an_idle_sender_satisfies_flushes_at_once(sender: Sender) -> None:
    sender.request_flush(5)
    wait_for(lambda: sender.status[Slot.FLUSHED] == 5)
    assert sender.flush(5.0) is True


def test_a_fatal_producer_error_recreates_the_producer_without_loss(
    config: SenderConfig, buffer: collections.deque[bytes]
) -> None:
    sender = Sender(config, buffer)
    buffer.extend(frames(0, 50))
    sender.notify()
    wait_for(lambda: sender.counts["spooled"] + sender.in_flight >= 50)
    old_producer = sender._producer
    sender._on_error(KafkaError(KafkaError._FATAL, "simulated fatal idempotence error", fatal=True))
    wait_for(lambda: sender._producer is not old_producer and sender._fatal_error is None)
    buffer.extend(frames(50, 100))
    sender.notify()
    sender.close(0.2)
    assert [v["seq"] for v in spooled_values(sender.spool_dir)] == list(range(100))
