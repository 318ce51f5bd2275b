"""The Sender on its own, in this process (in the SDK it runs in the sender process): record frames
in, the spool or librdkafka out, its state in a status block."""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import time
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


def test_records_the_spool_refuses_are_held_not_dropped(
    config: SenderConfig, buffer: collections.deque[bytes], tmp_path: Path
) -> None:
    fault = tmp_path / "fault"
    sender = Sender(dataclasses.replace(config, spool_fault_file=str(fault)), buffer)
    sent = frames(0, 100)
    buffer.extend(sent[:40])
    sender.notify()
    wait_for(lambda: sender.status[Slot.SPOOLED] == 40)
    fault.write_text("ENOSPC")
    buffer.extend(sent[40:])
    sender.notify()
    wait_for(lambda: sender.status[Slot.FAULT] == errno.ENOSPC)
    time.sleep(0.3)
    assert sender.status[Slot.DROPPED] == 0
    assert sender.status[Slot.BUFFERED] == 60  # held, in order, at the front of the buffer
    assert sender.status[Slot.RECORDS] == 40  # not handed on: the app still counts them buffered
    fault.unlink()
    wait_for(lambda: sender.status[Slot.SPOOLED] == 100)
    assert sender.status[Slot.FAULT] == 0
    assert sender.status[Slot.WRITE_ERRORS] >= 1
    sender.close(0.2)
    assert [v["seq"] for v in spooled_values(sender.spool_dir)] == list(range(100))
    # What the app reserved for these frames is released: all that remains is the spool's size.
    assert sender.status[Slot.RELEASED] == sum(map(len, sent)) - sender.status[Slot.SPOOL_BYTES]


def test_what_the_spool_cannot_take_at_close_is_counted_as_dropped(
    config: SenderConfig, buffer: collections.deque[bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fault = tmp_path / "fault"
    sender = Sender(dataclasses.replace(config, spool_fault_file=str(fault)), buffer)
    fault.write_text("EROFS")
    buffer.extend(frames(0, 10))
    sender.notify()
    wait_for(lambda: sender.status[Slot.FAULT] == errno.EROFS)
    sender.close(0.2)
    assert sender.status[Slot.DROPPED] == 10
    assert sender.status[Slot.RECORDS] == 10
    assert "10 events lost at close" in caplog.text  # one line, with the total


def test_a_round_that_keeps_failing_refuses_events_and_does_not_hold_up_close(
    sender: Sender, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a bad cursor made every round raise: ~10 tracebacks a second, events still
    accepted, and close() never returned (the process was SIGKILLed after 34 s)."""

    def broken() -> bool:
        raise ValueError("simulated: every round fails")

    monkeypatch.setattr(sender, "_replay", broken)
    wait_for(lambda: sender.status[Slot.FAULT] == errno.EIO)
    time.sleep(1.0)
    started = time.monotonic()
    sender.close(0.5)
    assert time.monotonic() - started < 5
    tracebacks = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert 1 <= len(tracebacks) <= 2  # one, then suppressed (counted) for a few seconds
