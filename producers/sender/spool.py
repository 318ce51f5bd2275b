"""An append-only spool of Kafka records on local disk that survives crashes, torn writes and damage.

Layout of a spool directory (one process at a time holds it, by ``flock`` on ``lock``; the
directory is 0700 and every file in it 0600, since records hold prompts and responses)::

    lock                          held while a client owns the spool
    cursor.json                   {"segment": N, "offset": O}: everything before it was delivered
    00000000000000000007.seg      segments, read in id order; the newest one is written to

A segment starts with the 8-byte magic ``FLSPOOL2`` and holds records back to back::

    4 bytes the record mark FE 46 4C FF (``RECORD_MARK``)
    u32 BE  length L of the body
    u32 BE  CRC-32 (IEEE, zlib.crc32) of the body
    body:   u16 BE topic length T, T bytes topic (UTF-8),
            i32 BE key length K (-1: no key), K bytes key,
            the value (the remaining L - 2 - T - 4 - K bytes)

The mark lets a reader find the next record after a damaged one: its bytes FE and FF never occur
in UTF-8, so neither a topic, a key nor a JSON value can contain it, and a candidate is only
taken when its CRC matches. A damaged byte therefore costs the record it is in (counted in
:attr:`Spool.skipped_records` and logged once with the segment and offset), not the rest of the
segment. A torn tail left by a crash is skipped the same way; a writer never appends to a
segment it did not create, so that tail cannot swallow records written after the restart.

Segments of the previous format (magic ``FLSPOOL1``: the same records without the mark) are
still read; in them a damaged record still ends its segment, since nothing marks where the next
one starts. New segments are always written in the current format.
"""

from __future__ import annotations

import contextlib
import errno
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
from typing import BinaryIO, Final, NamedTuple

log = logging.getLogger(__name__)

MAGIC: Final = b"FLSPOOL2"
#: Segments written before records carried a mark: read, never written.
MAGIC_V1: Final = b"FLSPOOL1"
SEGMENT_START: Final = len(MAGIC)
#: The first bytes of every record (see the module docstring).
RECORD_MARK: Final = b"\xfeFL\xff"
_HEADER = struct.Struct(">4sII")
_HEADER_V1 = struct.Struct(">II")
#: Bytes before a record's body.
HEADER_BYTES: Final = _HEADER.size
_TOPIC_LEN = struct.Struct(">H")
_KEY_LEN = struct.Struct(">i")
_MIN_BODY = _TOPIC_LEN.size + _KEY_LEN.size
#: A length field above this is corruption, not a record (Kafka's own limit is far below).
MAX_RECORD_BYTES = 64 << 20
_READ_CHUNK = 1 << 20
_SLOTS = 256
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600


class SpoolError(RuntimeError):
    """The spool cannot be used (locked by another process, unwritable directory, ...)."""


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
    return _HEADER.pack(RECORD_MARK, len(body), zlib.crc32(body)) + body


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
    (topic_len,) = _TOPIC_LEN.unpack_from(record, HEADER_BYTES)
    start = HEADER_BYTES + _TOPIC_LEN.size
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


def scan(data: bytes | memoryview, base: int, max_records: int, *, version: int = 2) -> ScanResult:
    """Decode records from ``data`` (whose first byte is at file offset ``base``).

    Stops at the first record that is incomplete (``partial``) or fails its checks (``bad``).
    ``version`` 1 reads segments of the previous format (no record mark). Pure function: the
    torn-record logic lives here and is unit-tested byte by byte.
    """
    view = memoryview(data)
    records: list[tuple[int, int, str, bytes | None, bytes]] = []
    marked = version >= 2
    header = _HEADER if marked else _HEADER_V1
    size = header.size
    pos = 0
    while len(records) < max_records:
        if pos == len(view):
            return ScanResult(records, base + pos, "clean")
        if pos + size > len(view):
            return ScanResult(records, base + pos, "partial")
        if marked:
            mark, length, crc = _HEADER.unpack_from(view, pos)
            if mark != RECORD_MARK:
                return ScanResult(records, base + pos, "bad")
        else:
            length, crc = _HEADER_V1.unpack_from(view, pos)
        if length < _MIN_BODY or length > MAX_RECORD_BYTES:
            return ScanResult(records, base + pos, "bad")
        end = pos + size + length
        if end > len(view):
            return ScanResult(records, base + pos, "partial")
        body = bytes(view[pos + size : end])
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


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` (0700) if needed; narrow an existing one we own to 0700."""
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        try:
            os.chmod(directory, _DIR_MODE)
        except OSError as exc:
            log.warning("spool folder %s is readable by others and cannot be narrowed: %s", directory, exc)


def check_spool_root(root: Path) -> None:
    """Create the spool root ``root`` if needed and prove it writable (a probe file, removed again).

    Raises :class:`SpoolError` naming the folder and the reason. Cheap enough to call when a
    client starts: a missing or read-only folder should stop an app at start, not lose its events.
    """
    try:
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            os.write(fd, b"feedbackloop")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpoolError(
            f"the spool folder {root.absolute()} cannot be created or written ({reason}); "
            "set producer.spool_dir (FEEDBACKLOOP_PRODUCER__SPOOL_DIR) to a writable folder"
        ) from exc


class Spool:
    """A bounded, append-only, crash-safe queue of Kafka records in one directory.

    Not thread-safe: the sender thread (in the SDK's sender process) is its only user.
    ``append`` writes, ``read`` returns records not yet read, ``commit`` marks everything before
    a position as delivered (whole segments behind it are deleted; the cursor is persisted at
    most every ``fsync_interval_s`` and on ``close``, so a crash can replay, never skip, a
    delivered record).

    A write that fails (disk full, read-only file system, permissions) is never half-kept:
    :meth:`append` returns what was written before it, :attr:`write_error` holds the error until
    a write succeeds again. ``fault_file`` is a test seam: while that file exists, every write
    fails with the errno named in it (``ENOSPC`` when empty), as a full disk would.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync_interval_s: float,
        fault_file: Path | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.fault_file = fault_file
        #: The last write's error, None once a write succeeded.
        self.write_error: OSError | None = None
        #: Writes that failed, since this object was opened.
        self.write_errors = 0
        #: Damaged or torn records the reader skipped, since this object was opened.
        self.skipped_records = 0
        _make_private_dir(directory)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, f"spool folder {directory} is not writable", str(directory))
        self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {directory} is in use by another process") from exc
        self._sizes: dict[int, int] = {}
        self._versions: dict[int, int | None] = {}
        self._reported: set[tuple[int, int]] = set()  # damage already logged and counted
        self._failing_deletes: set[int] = set()
        self._cursor_failing = False
        for path in directory.iterdir():
            if path.suffix == ".seg":
                with contextlib.suppress(ValueError):
                    self._sizes[int(path.stem)] = path.stat().st_size
            if path.is_file() and path.stat().st_mode & 0o077:
                with contextlib.suppress(OSError):  # written by an older version: narrow it
                    os.chmod(path, _FILE_MODE)
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
        self._read = self._committed

    # -- positions -------------------------------------------------------------------------------

    def _saved_cursor(self) -> Position | None:
        path = self.directory / "cursor.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("spool cursor %s is unreadable (%s); replaying the spool from its start", path, exc)
            return None
        segment, offset = (raw.get("segment"), raw.get("offset")) if isinstance(raw, dict) else (None, None)
        if type(segment) is not int or type(offset) is not int or segment < 0:
            log.warning("spool cursor %s holds %r, not a position; replaying the spool", path, raw)
            return None
        return Position(segment, offset)

    def _start(self, saved: Position | None) -> Position:
        """Where reading starts: the saved cursor when it is consistent with the segments on disk,
        else the oldest record (replay, never skip: the pipeline folds duplicates by event_id)."""
        oldest = Position(min(self._sizes, default=self._next_id), SEGMENT_START)
        if saved is None:
            return oldest
        older = [s for s in self._sizes if s < saved.segment]
        if older:
            # Segments behind the cursor are deleted before the cursor moves past them: one
            # still there means the cursor is not what this spool wrote.
            self._bad_cursor(saved, f"segment {min(older)} is older and was never committed", oldest)
            return oldest
        if saved.segment not in self._sizes:
            # Its segment was deleted after the cursor moved past it: start at the next one.
            later = [s for s in self._sizes if s > saved.segment]
            return Position(min(later, default=self._next_id), SEGMENT_START)
        if not self._boundary(saved):
            start = Position(saved.segment, SEGMENT_START)
            self._bad_cursor(saved, "no record starts at that offset", start)
            return start
        return saved

    def _bad_cursor(self, saved: Position, reason: str, start: Position) -> None:
        log.warning(
            "spool cursor %s names segment %d offset %d, but %s; reading from segment %d offset %d "
            "instead (records may be sent twice; the pipeline folds them by event_id)",
            self.directory / "cursor.json",
            saved.segment,
            saved.offset,
            reason,
            start.segment,
            start.offset,
        )

    def _boundary(self, pos: Position) -> bool:
        """Whether a record starts at ``pos``, or ``pos`` is the end of its segment."""
        size = self._sizes[pos.segment]
        if pos.offset == size:
            return True
        if not SEGMENT_START <= pos.offset < size:
            return False
        try:
            with open(self.directory / _segment_name(pos.segment), "rb") as file:
                version = self._version(pos.segment, file)
                return version is not None and self._record_at(file, pos.offset, size, version)
        except OSError:
            return False

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

    def _inject_fault(self) -> None:
        if self.fault_file is None:
            return
        try:
            name = self.fault_file.read_text().strip()
        except FileNotFoundError:
            return
        code = getattr(errno, name, errno.EIO) if name else errno.ENOSPC
        raise OSError(code, f"{os.strerror(code)} (injected while {self.fault_file} exists)")

    def _open_segment(self) -> int:
        segment = self._next_id
        # Ids only grow, even past a segment that could not be created: a half-created file
        # must not block every later try.
        self._next_id = segment + 1
        path = self.directory / _segment_name(segment)
        self._inject_fault()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, _FILE_MODE)
        try:
            if os.write(fd, MAGIC) != SEGMENT_START:
                raise OSError(errno.ENOSPC, "short write of the segment header")
            self._fsync_dir()
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._write_id, self._write_fd = segment, fd
        self._sizes[segment] = SEGMENT_START
        self._versions[segment] = 2
        return fd

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _seal(self) -> None:
        fd = self._write_fd
        self._write_fd = self._write_id = None
        self._dirty = False
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _failed(self, exc: OSError) -> None:
        self.write_error = exc
        self.write_errors += 1

    def append(self, records: Iterable[bytes]) -> list[Position]:
        """Append encoded records (see :func:`encode_record`) in order; return each one's end position.

        Stops at the first record that would take the spool past ``max_bytes``, or at a write
        that fails (then :attr:`write_error` says why, and nothing of the failed write is kept):
        the caller learns how many were written from the length of the result and still holds
        the rest. One ``write`` per segment touched; fsync follows ``fsync_interval_s``.
        """
        positions: list[Position] = []
        batch: list[bytes] = []
        kept = 0  # positions whose records are written
        total = self.size_bytes
        fd = self._write_fd
        size = self._sizes[self._write_id] if self._write_id is not None else 0
        try:
            for record in records:
                new_segment = fd is None or size >= self.segment_bytes
                if total + len(record) + (SEGMENT_START if new_segment else 0) > self.max_bytes:
                    break
                if new_segment:
                    if batch:
                        self._write(batch)
                        batch, kept = [], len(positions)
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
                kept = len(positions)
            if positions and self.fsync_interval_s == 0:
                self.sync()
        except OSError as exc:
            self._failed(exc)
            return positions[:kept]
        if positions:
            self.write_error = None
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
        try:
            self._write(list(records))
        except OSError as exc:
            self._failed(exc)
            return 0
        self.write_error = None
        if self.fsync_interval_s == 0:
            try:
                self.sync()
            except OSError as exc:  # written, maybe not durable: the disk is failing all the same
                self._failed(exc)
        return len(records)

    def _write(self, batch: list[bytes]) -> None:
        fd, segment = self._write_fd, self._write_id
        assert fd is not None
        assert segment is not None
        data = b"".join(batch)
        before = self._sizes[segment]
        try:
            self._inject_fault()
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
        except OSError:
            # Leave no torn record behind in a segment we keep appending to; if it cannot be
            # cut off, stop appending to that segment (the reader skips the torn record).
            try:
                os.ftruncate(fd, before)
            except OSError:
                with contextlib.suppress(OSError):
                    self._sizes[segment] = os.fstat(fd).st_size
                self._write_fd = self._write_id = None
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        self._sizes[segment] = before + len(data)
        self._dirty = True

    def sync(self) -> None:
        """fsync the segment being written (the sender process calls this, never the app's)."""
        if self._dirty and self._write_fd is not None:
            os.fsync(self._write_fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def probe(self) -> bool:
        """Write, fsync and remove a small file, to learn whether the spool takes writes again;
        clears :attr:`write_error` when it does (returns True then)."""
        path = self.directory / "probe.tmp"
        try:
            self._inject_fault()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            try:
                if os.write(fd, MAGIC) != len(MAGIC):
                    raise OSError(errno.ENOSPC, "short write of the probe")
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
        except OSError as exc:
            self.write_error = exc
            return False
        self.write_error = None
        return True

    # -- reading ---------------------------------------------------------------------------------

    def read(self, max_records: int) -> list[SpoolRecord]:
        """Up to ``max_records`` records from the read position on, in spool order.

        Damaged records are skipped (see the module docstring); a segment file that vanished is
        skipped as a whole. Both are logged and counted in :attr:`skipped_records`.
        """
        out: list[SpoolRecord] = []
        while len(out) < max_records:
            pos = self._read = self._normalize(self._read)
            limit = self._limit(pos.segment)
            if pos.segment not in self._sizes or pos.offset >= limit:
                break
            out.extend(self._read_segment(pos, limit, max_records - len(out)))
        return out

    def _version(self, segment: int, file: BinaryIO) -> int | None:
        """The format of a segment (2, or 1 for the previous one), None if it has no header."""
        if segment not in self._versions:
            file.seek(0)
            magic = file.read(SEGMENT_START)
            self._versions[segment] = 2 if magic == MAGIC else 1 if magic == MAGIC_V1 else None
        return self._versions[segment]

    def _read_segment(self, pos: Position, limit: int, max_records: int) -> Iterator[SpoolRecord]:
        path = self.directory / _segment_name(pos.segment)
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below, in a generator
        except FileNotFoundError:
            self._report(pos.segment, pos.offset, limit, 1, "the segment file is gone")
            self._read = Position(pos.segment, limit)
            return
        with file:
            version = self._version(pos.segment, file)
            if version is None:
                self._report(pos.segment, SEGMENT_START, limit, 1, "the segment has no spool header")
                self._read = Position(pos.segment, limit)
                return
            offset = max(pos.offset, SEGMENT_START)
            while max_records > 0 and offset < limit:
                file.seek(offset)
                data = file.read(min(limit - offset, _READ_CHUNK))
                header = _HEADER if version >= 2 else _HEADER_V1
                if len(data) >= header.size:
                    need = header.size + header.unpack_from(data, 0)[-2]
                    if len(data) < need <= limit - offset:  # one record larger than a chunk
                        data += file.read(need - len(data))
                result = scan(data, offset, max_records, version=version)
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
                if result.status == "clean":
                    return
                offset = self._skip_damage(file, pos.segment, result.stop, limit, version)
                self._read = Position(pos.segment, offset)

    def _skip_damage(self, file: BinaryIO, segment: int, bad_at: int, limit: int, version: int) -> int:
        """Where reading goes on after a record at ``bad_at`` that is damaged or torn."""
        if version < 2:
            self._report(segment, bad_at, limit, 1, "a damaged record (old format: rest of segment lost)")
            return limit
        failed = 0
        search = bad_at + 1
        while search < limit:
            file.seek(search)
            chunk = file.read(min(_READ_CHUNK, limit - search))
            if not chunk:
                break
            found = chunk.find(RECORD_MARK)
            if found < 0:
                # Step back a little: a mark may straddle two chunks.
                search += max(1, len(chunk) - len(RECORD_MARK) + 1)
                continue
            candidate = search + found
            if self._record_at(file, candidate, limit, version):
                self._report(segment, bad_at, candidate, 1 + failed, "a damaged record")
                return candidate
            failed += 1
            search = candidate + 1
        torn = segment != self._write_id and failed == 0
        self._report(segment, bad_at, limit, 1 + failed, "a torn record" if torn else "a damaged record")
        return limit

    def _record_at(self, file: BinaryIO, offset: int, limit: int, version: int) -> bool:
        """Whether a whole, intact record starts at ``offset`` (and ends by ``limit``)."""
        header = _HEADER if version >= 2 else _HEADER_V1
        file.seek(offset)
        head = file.read(header.size)
        if len(head) < header.size:
            return False
        length = header.unpack(head)[-2]
        if length < _MIN_BODY or length > MAX_RECORD_BYTES or offset + header.size + length > limit:
            return False
        return bool(scan(head + file.read(length), offset, 1, version=version).records)

    def _report(self, segment: int, offset: int, resumed_at: int, records: int, what: str) -> None:
        """Count and log a skipped stretch once (a re-read after a seek finds it again)."""
        if (segment, offset) in self._reported:
            return
        self._reported.add((segment, offset))
        self.skipped_records += records
        path = self.directory / _segment_name(segment)
        log.log(
            logging.WARNING if what == "a torn record" else logging.ERROR,
            "spool segment %s: %s at offset %d; skipped %d bytes (about %d record%s), read on from %d",
            path,
            what,
            offset,
            resumed_at - offset,
            records,
            "" if records == 1 else "s",
            resumed_at,
        )

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
            try:
                self._seal()
            except OSError as exc:
                self._failed(exc)
            self._delete(segment)
            self._committed = self._normalize(pos)
        self._read = max(self._read, self._committed)

    def _delete(self, segment: int) -> None:
        try:
            (self.directory / _segment_name(segment)).unlink(missing_ok=True)
        except OSError as exc:
            # Kept in the accounting (it still takes disk space) and tried again at the next
            # commit; a restart replays it, which is safe.
            if segment not in self._failing_deletes:
                self._failing_deletes.add(segment)
                log.error("spool segment %s is delivered but cannot be deleted: %s", segment, exc)
            return
        self._failing_deletes.discard(segment)
        self._sizes.pop(segment, None)
        self._versions.pop(segment, None)
        self._reported = {r for r in self._reported if r[0] != segment}

    def _write_cursor(self) -> None:
        tmp = self.directory / "cursor.json.tmp"
        data = json.dumps({"segment": self._committed.segment, "offset": self._committed.offset}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            self._inject_fault()
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write of the cursor")
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "cursor.json")
        self._cursor_dirty = False
        self._last_cursor_write = time.monotonic()

    def maintain(self) -> None:
        """fsync and persist the cursor when their interval has passed (called by the sender thread).

        Failures are recorded (:attr:`write_error`) and logged once per streak, never raised: a
        cursor that could not be saved only means a replay after a crash.
        """
        now = time.monotonic()
        if self._dirty and now - self._last_sync >= self.fsync_interval_s:
            try:
                self.sync()
            except OSError as exc:
                self._failed(exc)
                self._last_sync = now
        if self._cursor_dirty and now - self._last_cursor_write >= max(self.fsync_interval_s, 0.05):
            try:
                self._write_cursor()
            except OSError as exc:
                self._last_cursor_write = now
                if not self._cursor_failing:
                    log.error("spool cursor of %s cannot be saved: %s (retrying)", self.directory, exc)
                self._cursor_failing = True
            else:
                self._cursor_failing = False

    def close(self) -> None:
        """fsync, persist the cursor and release the directory.

        A failure is logged, not raised: what was written stays (a cursor not saved means a
        replay), and the directory is released all the same.
        """
        if self._lock_fd < 0:
            return
        try:
            self.sync()
            self._seal()
            self._write_cursor()
        except OSError as exc:
            self._failed(exc)
            log.error(
                "spool %s: closing it failed (%s); what was written stays and is replayed",
                self.directory,
                exc,
            )
        finally:
            os.close(self._lock_fd)
            self._lock_fd = -1


def open_spool(
    root: Path,
    *,
    max_bytes: int,
    segment_bytes: int,
    fsync_interval_s: float,
    fault_file: Path | None = None,
) -> Spool:
    """Open the first free slot ``root/slot-N`` (several processes may share ``root``).

    A restarted process takes the lowest free slot, so it replays what the previous holder
    of that slot left behind.
    """
    _make_private_dir(root)
    for slot in range(_SLOTS):
        try:
            return Spool(
                root / f"slot-{slot}",
                max_bytes=max_bytes,
                segment_bytes=segment_bytes,
                fsync_interval_s=fsync_interval_s,
                fault_file=fault_file,
            )
        except SpoolError:
            continue
    raise SpoolError(f"all {_SLOTS} spool slots under {root} are in use")
