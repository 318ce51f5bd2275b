"""An append-only spool of Kafka records on local disk that survives crashes and torn writes.

Layout of a spool directory (one process at a time holds it, by ``flock`` on ``lock``)::

    lock                          held while a client owns the spool
    cursor.json                   {"segment": N, "offset": O}: everything before it was delivered
    00000000000000000007.seg      segments, read in id order; the newest one is written to

A segment starts with the 8-byte magic ``FLSPOOL1`` and holds records back to back::

    u32 BE  length L of the body
    u32 BE  CRC-32 (IEEE, zlib.crc32) of the body
    body:   u16 BE topic length T, T bytes topic (UTF-8),
            i32 BE key length K (-1: no key), K bytes key,
            the value (the remaining L - 2 - T - 4 - K bytes)

A record whose length runs past the end of the file, or whose CRC does not match, ends its
segment: the reader logs it and goes on with the next segment. A writer never appends to a
segment it did not create, so the torn tail left by a crash stays the last thing in its segment
and cannot swallow records written after the restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

MAGIC = b"FLSPOOL1"
SEGMENT_START = len(MAGIC)
_HEADER = struct.Struct(">II")
_TOPIC_LEN = struct.Struct(">H")
_KEY_LEN = struct.Struct(">i")
_MIN_BODY = _TOPIC_LEN.size + _KEY_LEN.size
#: A length field above this is corruption, not a record (Kafka's own limit is far below).
MAX_RECORD_BYTES = 64 << 20
_READ_CHUNK = 1 << 20
_SLOTS = 256


class SpoolError(RuntimeError):
    """The spool cannot be used (locked by another process, unreadable directory, ...)."""


class Position(NamedTuple):
    """A place in the spool: segment id and byte offset in that segment's file."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back, with where it starts and where the next one starts."""

    topic: str
    key: bytes | None
    value: bytes
    start: Position
    end: Position


def encode_record(topic: str, key: bytes | None, value: bytes) -> bytes:
    """The on-disk bytes of one record (header and body)."""
    topic_bytes = topic.encode()
    body = b"".join(
        (
            _TOPIC_LEN.pack(len(topic_bytes)),
            topic_bytes,
            _KEY_LEN.pack(-1 if key is None else len(key)),
            key or b"",
            value,
        )
    )
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_body(body: bytes) -> tuple[str, bytes | None, bytes]:
    """Split a record body into topic, key and value; raise ``ValueError`` when it is malformed."""
    if len(body) < _MIN_BODY:
        raise ValueError("record body too short")
    (topic_len,) = _TOPIC_LEN.unpack_from(body, 0)
    pos = _TOPIC_LEN.size + topic_len
    if pos + _KEY_LEN.size > len(body):
        raise ValueError("topic runs past the record")
    topic = body[_TOPIC_LEN.size : pos].decode()
    (key_len,) = _KEY_LEN.unpack_from(body, pos)
    pos += _KEY_LEN.size
    if key_len < -1 or pos + max(key_len, 0) > len(body):
        raise ValueError("key runs past the record")
    key = None if key_len == -1 else body[pos : pos + key_len]
    return topic, key, body[pos + max(key_len, 0) :]


def decode_record(record: bytes) -> tuple[str, bytes | None, bytes]:
    """Topic, key and value of one whole encoded record, without checking its CRC or bounds.

    For records that never touched a disk (the sender's pipe, built by the SDK); :func:`scan`
    checks what is read back from one. Raises ``ValueError`` (or ``struct.error``,
    ``UnicodeDecodeError``) on a record that is cut short.
    """
    (topic_len,) = _TOPIC_LEN.unpack_from(record, _HEADER.size)
    start = _HEADER.size + _TOPIC_LEN.size
    key_at = start + topic_len
    (key_len,) = _KEY_LEN.unpack_from(record, key_at)
    topic = record[start:key_at].decode()
    if key_len < 0:
        return topic, None, record[key_at + _KEY_LEN.size :]
    value_at = key_at + _KEY_LEN.size + key_len
    if value_at > len(record):
        raise ValueError("key runs past the record")
    return topic, record[key_at + _KEY_LEN.size : value_at], record[value_at:]


class ScanResult(NamedTuple):
    """What :func:`scan` found in a buffer: records and how the buffer ended."""

    records: list[tuple[int, int, str, bytes | None, bytes]]  # (start, end, topic, key, value)
    stop: int  # offset just after the last good record
    status: str  # "clean": stopped at a record boundary; "partial": needs more bytes; "bad": corrupt


def scan(data: bytes | memoryview, base: int, max_records: int) -> ScanResult:
    """Decode records from ``data`` (whose first byte is at file offset ``base``).

    Stops at the first record that is incomplete (``partial``) or fails its checks (``bad``).
    Pure function: the torn-record logic lives here and is unit-tested byte by byte.
    """
    view = memoryview(data)
    records: list[tuple[int, int, str, bytes | None, bytes]] = []
    pos = 0
    while len(records) < max_records:
        if pos == len(view):
            return ScanResult(records, base + pos, "clean")
        if pos + _HEADER.size > len(view):
            return ScanResult(records, base + pos, "partial")
        length, crc = _HEADER.unpack_from(view, pos)
        if length < _MIN_BODY or length > MAX_RECORD_BYTES:
            return ScanResult(records, base + pos, "bad")
        end = pos + _HEADER.size + length
        if end > len(view):
            return ScanResult(records, base + pos, "partial")
        body = bytes(view[pos + _HEADER.size : end])
        if zlib.crc32(body) != crc:
            return ScanResult(records, base + pos, "bad")
        try:
            topic, key, value = decode_body(body)
        except (ValueError, UnicodeDecodeError):
            return ScanResult(records, base + pos, "bad")
        records.append((base + pos, base + end, topic, key, value))
        pos = end
    return ScanResult(records, base + pos, "clean")


def _segment_name(segment: int) -> str:
    return f"{segment:020d}.seg"


class Spool:
    """A bounded, append-only, crash-safe queue of Kafka records in one directory.

    Not thread-safe: the sender thread (in the SDK's sender process) is its only user.
    ``append`` writes, ``read`` returns records not yet read, ``commit`` marks everything before
    a position as delivered (whole segments behind it are deleted; the cursor is persisted at
    most every ``fsync_interval_s`` and on ``close``, so a crash can replay, never skip, a
    delivered record).
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync_interval_s: float,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {directory} is in use by another process") from exc
        self._sizes: dict[int, int] = {}
        for path in directory.glob("*.seg"):
            with contextlib.suppress(ValueError):
                self._sizes[int(path.stem)] = path.stat().st_size
        saved = self._saved_cursor()
        # Segment ids only grow, even past segments deleted since: a cursor that outlived its
        # segments must never point beyond new ones (they would be taken for delivered).
        self._next_id = max(max(self._sizes, default=0) + 1, saved.segment if saved else 1)
        self._write_id: int | None = None
        self._write_fd: int | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self._cursor_dirty = False
        self._last_cursor_write = 0.0
        self._committed = self._normalize(self._start(saved))
        for segment in [s for s in self._sizes if s < self._committed.segment]:
            self._delete(segment)
        self._read = self._committed

    # -- positions -------------------------------------------------------------------------------

    def _saved_cursor(self) -> Position | None:
        try:
            raw = json.loads((self.directory / "cursor.json").read_text())
            return Position(int(raw["segment"]), int(raw["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _start(self, saved: Position | None) -> Position:
        """Where reading starts: the saved cursor, else the oldest record (replay, never skip)."""
        if saved is None:
            return Position(min(self._sizes, default=self._next_id), SEGMENT_START)
        if saved.segment not in self._sizes:
            # Its segment was deleted after the cursor moved past it: start at the next one.
            later = [s for s in self._sizes if s > saved.segment]
            return Position(min(later, default=self._next_id), SEGMENT_START)
        return saved

    def _limit(self, segment: int) -> int:
        return self._sizes.get(segment, SEGMENT_START)

    def _normalize(self, pos: Position) -> Position:
        """Move a position at the end of a finished segment to the start of the next one."""
        while pos.segment != self._write_id and pos.offset >= self._limit(pos.segment):
            later = [s for s in self._sizes if s > pos.segment]
            if later:
                pos = Position(min(later), SEGMENT_START)
            elif pos.segment < self._next_id:
                pos = Position(self._next_id, SEGMENT_START)
            else:
                break
        return pos

    @property
    def end(self) -> Position:
        """Where the next appended record will start."""
        if self._write_id is not None:
            return Position(self._write_id, self._sizes[self._write_id])
        return Position(self._next_id, SEGMENT_START)

    @property
    def read_position(self) -> Position:
        """Where the next :meth:`read` starts."""
        return self._read

    @property
    def committed(self) -> Position:
        """Everything before this position has been delivered."""
        return self._committed

    @property
    def fully_read(self) -> bool:
        """Every record in the spool has been returned by :meth:`read`."""
        return self._normalize(self._read) >= self.end

    @property
    def empty(self) -> bool:
        """Every record in the spool has been committed (delivered)."""
        return self._committed >= self.end

    @property
    def size_bytes(self) -> int:
        """Bytes of all segment files (what ``max_bytes`` bounds)."""
        return sum(self._sizes.values())

    @property
    def pending_bytes(self) -> int:
        """Bytes of records not yet committed."""
        return sum(
            size - (self._committed.offset if s == self._committed.segment else SEGMENT_START)
            for s, size in self._sizes.items()
            if s >= self._committed.segment
        )

    # -- writing ---------------------------------------------------------------------------------

    def _open_segment(self) -> int:
        segment = self._next_id
        path = self.directory / _segment_name(segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, MAGIC)
        self._fsync_dir()
        self._write_id, self._write_fd = segment, fd
        self._sizes[segment] = SEGMENT_START
        self._next_id = segment + 1
        return fd

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _seal(self) -> None:
        if self._write_fd is not None:
            os.fsync(self._write_fd)
            os.close(self._write_fd)
        self._write_fd = self._write_id = None
        self._dirty = False

    def append(self, records: Iterable[bytes]) -> list[Position]:
        """Append encoded records (see :func:`encode_record`) in order; return each one's end position.

        Stops at the first record that would take the spool past ``max_bytes``: the caller
        learns how many were written from the length of the result and must count the rest
        as dropped. One ``write`` per call; fsync follows ``fsync_interval_s``.
        """
        positions: list[Position] = []
        batch: list[bytes] = []
        total = self.size_bytes
        fd = self._write_fd
        size = self._sizes[self._write_id] if self._write_id is not None else 0
        for record in records:
            new_segment = fd is None or size >= self.segment_bytes
            if total + len(record) + (SEGMENT_START if new_segment else 0) > self.max_bytes:
                break
            if new_segment:
                if batch:
                    self._write(batch)
                    batch = []
                if fd is not None:
                    self._seal()
                fd = self._open_segment()
                size = SEGMENT_START
                total += SEGMENT_START
            assert self._write_id is not None
            batch.append(record)
            size += len(record)
            total += len(record)
            positions.append(Position(self._write_id, size))
        if batch:
            self._write(batch)
        if positions and self.fsync_interval_s == 0:
            self.sync()
        return positions

    def extend(self, records: Sequence[bytes]) -> int:
        """:meth:`append` for a caller that needs no positions; returns how many were written.

        When the batch fits the segment being written and the bound (the common case), it goes
        out in one write with no Python work per record: the sender's hot path in spool mode.
        """
        if self._write_id is None or not records:
            return len(self.append(records))
        size = self._sizes[self._write_id]
        sizes = list(map(len, records))
        total = sum(sizes)
        # append() rolls before a record once the segment has reached segment_bytes.
        if size + total - sizes[-1] >= self.segment_bytes or self.size_bytes + total > self.max_bytes:
            return len(self.append(records))
        self._write(list(records))
        if self.fsync_interval_s == 0:
            self.sync()
        return len(records)

    def _write(self, batch: list[bytes]) -> None:
        assert self._write_fd is not None
        assert self._write_id is not None
        data = b"".join(batch)
        before = self._sizes[self._write_id]
        try:
            written = os.write(self._write_fd, data)
            if written != len(data):
                raise OSError(f"short write: {written} of {len(data)} bytes")
        except OSError:
            # Leave no torn record behind in a segment we keep appending to.
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, before)
            raise
        self._sizes[self._write_id] = before + len(data)
        self._dirty = True

    def sync(self) -> None:
        """fsync the segment being written (the sender process calls this, never the app's)."""
        if self._dirty and self._write_fd is not None:
            os.fsync(self._write_fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    # -- reading ---------------------------------------------------------------------------------

    def read(self, max_records: int) -> list[SpoolRecord]:
        """Up to ``max_records`` records from the read position on, in spool order."""
        out: list[SpoolRecord] = []
        while len(out) < max_records:
            pos = self._read = self._normalize(self._read)
            limit = self._limit(pos.segment)
            if pos.segment not in self._sizes or pos.offset >= limit:
                break
            out.extend(self._read_segment(pos, limit, max_records - len(out)))
        return out

    def _read_segment(self, pos: Position, limit: int, max_records: int) -> Iterator[SpoolRecord]:
        path = self.directory / _segment_name(pos.segment)
        with open(path, "rb") as file:
            if pos.offset == SEGMENT_START and file.read(SEGMENT_START) != MAGIC:
                log.error("spool segment %s has no spool header; skipping its %d bytes", path, limit)
                self._read = Position(pos.segment, limit)
                return
            offset = pos.offset
            while max_records > 0 and offset < limit:
                file.seek(offset)
                data = file.read(min(limit - offset, _READ_CHUNK))
                if len(data) >= _HEADER.size:
                    need = _HEADER.size + _HEADER.unpack_from(data, 0)[0]
                    if len(data) < need <= limit - offset:  # one record larger than a chunk
                        data += file.read(need - len(data))
                result = scan(data, offset, max_records)
                for start, end, topic, key, value in result.records:
                    yield SpoolRecord(
                        topic, key, value, Position(pos.segment, start), Position(pos.segment, end)
                    )
                max_records -= len(result.records)
                self._read = Position(pos.segment, result.stop)
                chunk_cut = result.status == "partial" and result.records and offset + len(data) < limit
                if (result.status == "clean" and result.stop > offset) or chunk_cut:
                    offset = result.stop
                    continue
                self._skip_tail(path, result, limit)
                return

    def _skip_tail(self, path: Path, result: ScanResult, limit: int) -> None:
        skipped = limit - result.stop
        if result.status == "partial" and self._read.segment != self._write_id:
            log.warning(
                "spool segment %s ends in a torn record (%d bytes, from a crash mid-write); skipped it",
                path,
                skipped,
            )
        else:
            log.error(
                "spool segment %s is corrupt at offset %d; skipped the remaining %d bytes of it",
                path,
                result.stop,
                skipped,
            )
        self._read = Position(self._read.segment, limit)

    def seek(self, pos: Position) -> None:
        """Read from ``pos`` next (used to re-read records a full producer queue did not take)."""
        self._read = pos

    # -- committing ------------------------------------------------------------------------------

    def commit(self, pos: Position) -> None:
        """Mark everything before ``pos`` delivered; delete segments that are wholly behind it."""
        pos = self._normalize(pos)
        if pos <= self._committed:
            return
        self._committed = pos
        self._cursor_dirty = True
        for segment in [s for s in self._sizes if s < pos.segment]:
            self._delete(segment)
        if self._write_id is not None and pos == self.end:
            # Drained: drop the written segment too, so an idle spool holds no bytes.
            segment = self._write_id
            self._seal()
            self._delete(segment)
            self._committed = self._normalize(pos)
        self._read = max(self._read, self._committed)

    def _delete(self, segment: int) -> None:
        (self.directory / _segment_name(segment)).unlink(missing_ok=True)
        self._sizes.pop(segment, None)

    def _write_cursor(self) -> None:
        tmp = self.directory / "cursor.json.tmp"
        tmp.write_text(json.dumps({"segment": self._committed.segment, "offset": self._committed.offset}))
        os.replace(tmp, self.directory / "cursor.json")
        self._cursor_dirty = False
        self._last_cursor_write = time.monotonic()

    def maintain(self) -> None:
        """fsync and persist the cursor when their interval has passed (called by the sender thread)."""
        now = time.monotonic()
        if self._dirty and now - self._last_sync >= self.fsync_interval_s:
            self.sync()
        if self._cursor_dirty and now - self._last_cursor_write >= max(self.fsync_interval_s, 0.05):
            self._write_cursor()

    def close(self) -> None:
        """fsync, persist the cursor and release the directory."""
        if self._lock_fd < 0:
            return
        try:
            self.sync()
            self._seal()
            self._write_cursor()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = -1


def open_spool(root: Path, *, max_bytes: int, segment_bytes: int, fsync_interval_s: float) -> Spool:
    """Open the first free slot ``root/slot-N`` (several processes may share ``root``).

    A restarted process takes the lowest free slot, so it replays what the previous holder
    of that slot left behind.
    """
    for slot in range(_SLOTS):
        try:
            return Spool(
                root / f"slot-{slot}",
                max_bytes=max_bytes,
                segment_bytes=segment_bytes,
                fsync_interval_s=fsync_interval_s,
            )
        except SpoolError:
            continue
    raise SpoolError(f"all {_SLOTS} spool slots under {root} are in use")
