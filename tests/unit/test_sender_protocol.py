"""The app ↔ sender-process protocol: frames are spool records, control frames, messages, status."""

from __future__ import annotations

import mmap

import pytest

from producers.sender.ipc import (
    MAX_MESSAGE_BYTES,
    STATUS_BYTES,
    ProtocolError,
    Slot,
    StatusBlock,
    control_frame,
    encode_message,
    is_control,
    record_frame,
    split_frames,
    split_messages,
    topic_prefix,
)
from producers.sender.spool import decode_record, encode_record, scan


@pytest.mark.parametrize(
    ("topic", "key", "value"),
    [("ns.feedback", b"session-1", b'{"a": 1}'), ("tø", None, b""), ("t", b"", b"\x00" * 70_000)],
)
def test_a_record_frame_is_the_spool_record(topic: str, key: bytes | None, value: bytes) -> None:
    frame = record_frame(topic_prefix(topic), key, value)
    assert frame == encode_record(topic, key, value)
    assert decode_record(frame) == (topic, key, value)
    assert not is_control(frame)


def test_empty_topics_are_reserved_for_control_frames() -> None:
    with pytest.raises(ValueError, match="empty"):
        topic_prefix("")
    frame = control_frame({"op": "flush", "id": 3})
    assert is_control(frame)
    # A control frame is a valid spool record too (CRC and all), so one parser serves both.
    assert len(scan(frame, 0, 10).records) == 1


def test_frames_split_in_order_whatever_the_cut() -> None:
    frames = [
        control_frame({"op": "config", "sender": {}}),
        record_frame(topic_prefix("t"), b"k", b"one"),
        control_frame({"op": "flush", "id": 1}),
        record_frame(topic_prefix("t"), None, b"two" * 100),
        control_frame({"op": "close", "timeout_s": 0.5}),
    ]
    data = b"".join(frames)
    expected = [
        {"op": "config", "sender": {}},
        frames[1],
        {"op": "flush", "id": 1},
        frames[3],
        {"op": "close", "timeout_s": 0.5},
    ]
    for cut in range(len(data) + 1):
        first, used = split_frames(data[:cut])
        second, used_rest = split_frames(data[used:])
        assert first + second == expected
        assert used + used_rest == len(data)


def test_a_broken_stream_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        split_frames(b"\x00\x00\x00\x01" + b"\x00" * 20)  # shorter than any body
    frame = bytearray(control_frame({"op": "flush", "id": 1}))
    frame[-2] ^= 0xFF
    with pytest.raises(ProtocolError, match="CRC"):
        split_frames(bytes(frame))
    no_op = record_frame(b"\x00\x00", None, b'{"id": 1}')
    with pytest.raises(ProtocolError, match="op"):
        split_frames(no_op)


def test_messages_round_trip_and_stay_atomic() -> None:
    messages: list[dict[str, object]] = [
        {"kind": "ready", "spool_dir": "/x"},
        {"kind": "log", "msg": "ü" * 500, "level": 30},
    ]
    data = b"".join(encode_message(m) for m in messages)
    for cut in range(len(data) + 1):
        first, used = split_messages(data[:cut])
        second, _ = split_messages(data[used:])
        assert first + second == messages
    with pytest.raises(ValueError, match="too large"):
        encode_message({"msg": "x" * MAX_MESSAGE_BYTES})


def test_status_block_over_shared_memory() -> None:
    shared = mmap.mmap(-1, STATUS_BYTES)
    writer, reader = StatusBlock(shared), StatusBlock(shared)
    writer[Slot.RECORDS] = 7
    writer[Slot.CONTROLS] = 2
    writer[Slot.SPOOL_BYTES] = 1 << 40
    assert reader.consumed() == 9
    assert reader[Slot.SPOOL_BYTES] == 1 << 40
    assert reader.snapshot()[Slot.SENT] == 0
    assert StatusBlock().consumed() == 0
