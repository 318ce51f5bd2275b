"""The protocol between a :class:`~producers.FeedbackClient` (the app's process) and its sender process.

Kept free of pydantic, schemas and the settings, so the sender process starts quickly and small.

**App → sender: one pipe** (the sender's stdin) carrying *frames*, which are spool records
(:func:`producers.sender.spool.encode_record`: mark, length, CRC-32, topic, key, value) back to back. The
sender writes a record frame to the spool as it is, without decoding or re-encoding it. A frame
whose topic is empty (no Kafka topic can be empty) is a *control frame*; its value is a JSON
object:

* ``{"op": "config", "sender": {...}}`` — always the first frame: the sender's configuration,
  secrets included (a pipe, unlike argv or the environment, is not visible to other users);
* ``{"op": "flush", "id": n}`` — report ``n`` in :attr:`Slot.FLUSHED` once everything written
  before it is acknowledged by the broker;
* ``{"op": "close", "timeout_s": t}`` — the last frame: deliver within ``t``, spool the rest, exit.

End of file without ``close`` means the app died: the sender still delivers or spools every
frame it read, then exits.

**Sender → app: a status block** in shared memory (:class:`StatusBlock`: int64 slots the sender
overwrites, the app reads at any time, with no message and no thread in the app), and **a
message pipe** for the rare rest (:func:`encode_message`): ``{"kind": "ready", "spool_dir": ...}``
once the spool is open and ``{"kind": "log", ...}`` for the sender's log records, which the app
re-emits through its own ``logging`` configuration.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from enum import IntEnum
from typing import Any, Final

import orjson

from producers.sender.spool import MAX_RECORD_BYTES, RECORD_MARK

_HEADER: Final = struct.Struct(">4sII")
_KEY_LEN: Final = struct.Struct(">i")
_MESSAGE_LEN: Final = struct.Struct(">I")
_TOPIC_LEN: Final = struct.Struct(">H")
_MIN_BODY: Final = _TOPIC_LEN.size + _KEY_LEN.size
_NO_KEY: Final = _KEY_LEN.pack(-1)
_CONTROL_PREFIX: Final = _TOPIC_LEN.pack(0)

#: The largest message on the sender → app pipe; smaller than PIPE_BUF, so a write is atomic.
MAX_MESSAGE_BYTES: Final = 4000


class ProtocolError(RuntimeError):
    """The byte stream does not follow the protocol (a bug, never a condition to handle)."""


def topic_prefix(topic: str) -> bytes:
    """The first bytes of the body of every record for ``topic`` (computed once per topic)."""
    if not topic:
        raise ValueError("a Kafka topic name cannot be empty")
    encoded = topic.encode()
    return _TOPIC_LEN.pack(len(encoded)) + encoded


def record_frame(prefix: bytes, key: bytes | None, value: bytes) -> bytes:
    """``encode_record(topic, key, value)`` for the topic of ``prefix`` (see :func:`topic_prefix`).

    This runs on the caller's thread for every event: one join, one CRC, two small packs
    (chaining the CRC over the parts to save the body's copy measured slower).
    """
    body = b"".join((prefix, _KEY_LEN.pack(-1 if key is None else len(key)), key or b"", value))
    return _HEADER.pack(RECORD_MARK, len(body), zlib.crc32(body)) + body


def control_frame(message: dict[str, Any]) -> bytes:
    """A control frame carrying ``message`` (see the module docstring)."""
    body = _CONTROL_PREFIX + _NO_KEY + orjson.dumps(message)
    return _HEADER.pack(RECORD_MARK, len(body), zlib.crc32(body)) + body


def is_control(frame: bytes) -> bool:
    """Whether ``frame`` (one whole frame) is a control frame."""
    return frame[_HEADER.size : _HEADER.size + _TOPIC_LEN.size] == _CONTROL_PREFIX


def split_frames(data: bytes) -> tuple[list[bytes | dict[str, Any]], int]:
    """Cut ``data`` into whole frames, in order: record frames as bytes, control frames decoded.

    Returns them and how many bytes of ``data`` they used; the rest is the start of a frame still
    being written. Record frames are not checked further (the sender trusts its own app, and the
    spool's reader checks every CRC); control frames are.
    """
    out: list[bytes | dict[str, Any]] = []
    pos = 0
    end_of_data = len(data)
    header = _HEADER.size
    unpack = _HEADER.unpack_from
    while pos + header <= end_of_data:
        mark, length, crc = unpack(data, pos)
        if mark != RECORD_MARK or length < _MIN_BODY or length > MAX_RECORD_BYTES:
            raise ProtocolError(f"no frame at offset {pos} (mark {mark.hex()}, length {length})")
        end = pos + header + length
        if end > end_of_data:
            break
        if not (data[pos + header] or data[pos + header + 1]):  # topic length 0: control
            body = data[pos + header : end]
            if zlib.crc32(body) != crc:
                raise ProtocolError(f"control frame at offset {pos} fails its CRC")
            message = orjson.loads(body[_MIN_BODY:])
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                raise ProtocolError(f"control frame without an op: {message!r}")
            out.append(message)
        else:
            out.append(data[pos:end])
        pos = end
    return out, pos


def encode_message(message: dict[str, Any]) -> bytes:
    """One sender → app message: u32 BE length, then JSON (at most :data:`MAX_MESSAGE_BYTES`)."""
    payload = orjson.dumps(message)
    if len(payload) > MAX_MESSAGE_BYTES - _MESSAGE_LEN.size:
        raise ValueError(f"message of {len(payload)} bytes is too large for one atomic pipe write")
    return _MESSAGE_LEN.pack(len(payload)) + payload


def split_messages(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Whole messages at the start of ``data`` and how many bytes they used."""
    out: list[dict[str, Any]] = []
    pos = 0
    while pos + _MESSAGE_LEN.size <= len(data):
        (length,) = _MESSAGE_LEN.unpack_from(data, pos)
        end = pos + _MESSAGE_LEN.size + length
        if length > MAX_MESSAGE_BYTES or end > len(data):
            if length > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"message of {length} bytes")
            break
        message = orjson.loads(data[pos + _MESSAGE_LEN.size : end])
        if not isinstance(message, dict):
            raise ProtocolError(f"message is not an object: {message!r}")
        out.append(message)
        pos = end
    return out, pos


class Slot(IntEnum):
    """The int64 slots of the status block. Only the sender process writes them."""

    PID = 0
    STATE = 1  # State below
    RECORDS = 2  # record frames taken off the pipe and handed on (to librdkafka, the spool, or dropped)
    CONTROLS = 3  # control frames taken off the pipe (config excluded)
    SENT = 4
    FAILED = 5
    SPOOLED = 6
    DROPPED = 7
    REPLAYED = 8
    BUFFERED = 9  # records read from the pipe, not yet handed on
    IN_FLIGHT = 10
    SPOOL_BYTES = 11
    SPOOL_PENDING_BYTES = 12
    SPOOLING = 13  # 1 in spool mode
    FLUSHED = 14  # the highest flush id whose events are all acknowledged
    # Bytes of record frames the sender no longer needs spool room for (acknowledged, failed,
    # dropped, or written to the spool) minus the spool's size. What the app reserves against
    # producer.spool_max_bytes is the bytes of the frames it accepted minus this: one slot, so
    # one aligned read sees both parts at the same moment.
    RELEASED = 15
    FAULT = 16  # 0, or the errno of why the spool takes no record now: the app refuses events
    WRITE_ERRORS = 17  # spool writes that failed
    SKIPPED = 18  # damaged or torn spool records the reader skipped


class State(IntEnum):
    """Slot.STATE values."""

    STARTING = 0
    RUNNING = 1
    CLOSED = 2  # shut down cleanly: everything delivered or spooled


#: Counters in the status block, by their name in ``FeedbackClient.metrics()``.
COUNTER_SLOTS: Final = {
    "sent": Slot.SENT,
    "failed": Slot.FAILED,
    "spooled": Slot.SPOOLED,
    "dropped": Slot.DROPPED,
    "replayed": Slot.REPLAYED,
    "spool_write_errors": Slot.WRITE_ERRORS,
    "spool_skipped": Slot.SKIPPED,
}

STATUS_BYTES: Final = 4096


class StatusBlock:
    """Named int64 slots over shared memory (or any writable buffer of :data:`STATUS_BYTES`).

    One process writes, the other reads; each slot is an aligned 8-byte word, so a read never
    sees half of a write. Slots are independent: a reader may see one updated before another.
    """

    def __init__(self, buffer: bytearray | mmap.mmap | None = None) -> None:
        self._buffer = buffer if buffer is not None else bytearray(STATUS_BYTES)
        self._slots = memoryview(self._buffer).cast("q")

    @property
    def slots(self) -> memoryview:
        """The int64 slots themselves, indexed by ``int(Slot.X)`` (for a hot path: no call)."""
        return self._slots

    def __getitem__(self, slot: Slot) -> int:
        return int(self._slots[slot])

    def __setitem__(self, slot: Slot, value: int) -> None:
        self._slots[slot] = value

    def consumed(self) -> int:
        """Frames the sender has taken off the pipe (records and controls)."""
        slots = self._slots
        return int(slots[Slot.RECORDS] + slots[Slot.CONTROLS])

    def snapshot(self) -> dict[Slot, int]:
        """Every slot's current value."""
        slots = self._slots
        return {slot: int(slots[slot]) for slot in Slot}


__all__ = [
    "COUNTER_SLOTS",
    "MAX_MESSAGE_BYTES",
    "STATUS_BYTES",
    "ProtocolError",
    "Slot",
    "State",
    "StatusBlock",
    "control_frame",
    "encode_message",
    "is_control",
    "record_frame",
    "split_frames",
    "split_messages",
    "topic_prefix",
]
