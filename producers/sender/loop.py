"""The sender: from the in-memory buffer to librdkafka, or through the spool.

It runs in the sender process (:mod:`producers.sender.main`), never in the app's: the buffer
holds record frames (encoded spool records) read from the app's pipe.

* **direct** mode (broker healthy, spool empty): events go to librdkafka (idempotent, ``acks=all``,
  no local timeout, so a message librdkafka holds is retried with its original sequence number
  and never duplicated by us).
* **spool** mode, entered when the broker looks unwell (all brokers down, an event unacknowledged
  for ``spool_after_s``, ``max_in_flight`` reached, librdkafka's queue full): first the messages
  librdkafka still holds are copied to the spool (so a crash cannot take them), then every new
  event is appended to it. The spool is replayed into librdkafka in order, at most
  ``max_in_flight`` at a time; a record is committed once acknowledged. When everything spooled
  has been handed over and the broker answers again, direct mode resumes.

When the spool cannot take records (a write fails: disk full, read-only, permissions; or its
bound is reached), nothing is dropped: the records stay at the front of the buffer, in memory,
and the write is tried again every ``_RETRY_WRITE_S``. A failed write raises
:attr:`~producers.sender.ipc.Slot.FAULT` at once, so the app refuses new events until a write
succeeds again; once everything the spool holds has been handed to librdkafka, the held records
go to it directly (which also probes whether the broker is back).

The order of ``produce`` calls is therefore the order events were accepted in, across modes and
restarts, and librdkafka keeps that order per partition: a session's events (key = session_id)
arrive in order.

Everything here runs on the one sender thread (librdkafka's callbacks run inside its ``poll``),
except the few methods documented as safe for other threads. Its state is published after every
round in a :class:`~producers.sender.ipc.StatusBlock`, which the app reads from shared memory.
"""

from __future__ import annotations

import collections
import errno
import logging
import re
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.sender.ipc import COUNTER_SLOTS, Slot, StatusBlock
from producers.sender.spool import Position, decode_record, open_spool

log = logging.getLogger("producers.sdk")

#: Producer settings no caller may weaken: they are what makes publishing safe.
SAFE_PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
}

_BATCH: Final = 2048  # items per round: bounds the work between two looks at the broker
_PROBE: Final = 1
_IDLE_WAIT_S: Final = 0.1
_BUSY_WAIT_S: Final = 0.005
_LOG_EVERY_S: Final = 5.0
_PURGED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_RETRY_WRITE_S: Final = 0.5  # how often a spool that refused a write is tried again
_FAILED_ROUNDS_FAULT: Final = 3  # consecutive rounds ending in an exception: refuse events


class Mode(StrEnum):
    """Where the sender thread sends new events."""

    DIRECT = "direct"
    SPOOL = "spool"


@dataclass(frozen=True)
class SenderConfig:
    """What the sender needs, as plain values: it is sent to the sender process as JSON, and that
    process does not import the settings (pydantic would double its start-up time)."""

    kafka_config: dict[str, Any] = field(repr=False)  # librdkafka: bootstrap servers, security, secrets
    spool_dir: str
    client_id: str = "feedbackloop-sdk"
    max_in_flight: int = 10_000
    spool_after_s: float = 1.0
    linger_ms: int = 5
    sender_linger_ms: float = 20.0
    compression: str = "none"
    close_timeout_s: float = 10.0
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = 16 << 20
    spool_fsync_interval_s: float = 0.2
    max_message_bytes: int = 1_000_000  # librdkafka's message.max.bytes
    log_level: int = logging.WARNING  # the app's level for "producers": the sender forwards no less
    parent_pid: int = 0
    #: Test seam: while this file exists, spool writes fail with the errno named in it (e.g.
    #: ``ENOSPC``), as on a full disk. Never set by the settings.
    spool_fault_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (secrets included: send them only down a private pipe). A ``logger``
        in ``kafka_config`` stays behind: the sender process logs librdkafka its own way."""
        values = asdict(replace(self, kafka_config={}))
        values["kafka_config"] = {k: v for k, v in self.kafka_config.items() if k != "logger"}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SenderConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(**values)


class _State:
    PENDING = 0  # handed to librdkafka, no report yet
    DONE = 1  # delivered or failed for good: never to be sent again
    RETRY = 2  # purged (close) or lost to a fatal producer error: still owed, from the spool


class _Pending:
    """One message handed to librdkafka; ``log_end`` is set once it is also in the spool.

    ``record`` is its encoded frame while it exists only in librdkafka (to copy it to the spool
    if the broker turns unwell), empty once it is in the spool.
    """

    __slots__ = ("log_end", "produced_at", "record", "state")

    def __init__(self, record: bytes, produced_at: float, log_end: Position | None) -> None:
        self.record = record
        self.produced_at = produced_at
        self.log_end = log_end
        self.state = _State.PENDING


# The same lines as infra.kafka.librdkafka_transient (a test keeps the two alike); this process
# does not import infra, to start lean.
_TRANSIENT = re.compile(
    r"connection refused|connect to .* failed|disconnected|brokers are down|broker transport failure"
    r"|timed out|connection reset|receive failed|send failed|failed to resolve|name or service not known"
    r"|coordinator load in progress|not coordinator|leader not available|retrying|purging",
    re.IGNORECASE,
)


class _LibrdkafkaLog:
    """librdkafka's log lines, capped at WARNING: a refused connect during an outage is not an
    error of the app (real failures arrive as delivery reports and are logged as errors). Lines
    that only say the broker is unreachable right now go to DEBUG: the sender says "broker
    unwell, spooling" once for the outage, where librdkafka would say it every second."""

    _logger = logging.getLogger("producers.librdkafka")

    def log(self, level: int, msg: str, *args: Any) -> None:
        text = str(args[-1]) if args else msg
        if level < logging.WARNING or _TRANSIENT.search(text):
            level = logging.DEBUG
        self._logger.log(min(level, logging.WARNING), msg, *args)


class Sender:
    """Owns the spool, the librdkafka producer and the thread that moves records between them.

    ``buffer`` holds record frames (:func:`producers.sender.spool.encode_record`); whoever fills it
    calls :meth:`notify`. ``status`` receives the counters and gauges after every round.
    """

    def __init__(
        self, config: SenderConfig, buffer: collections.deque[bytes], status: StatusBlock | None = None
    ) -> None:
        self.settings = config
        self._buffer = buffer
        self.status = status if status is not None else StatusBlock()
        self._spool = open_spool(
            Path(config.spool_dir),
            max_bytes=config.spool_max_bytes,
            segment_bytes=config.spool_segment_bytes,
            fsync_interval_s=config.spool_fsync_interval_s,
            fault_file=Path(config.spool_fault_file) if config.spool_fault_file else None,
        )
        self._linger_s = config.sender_linger_ms / 1000
        # Thread-safe signals.
        self._wake = threading.Event()  # new records (set by the pipe reader)
        self._urgent = threading.Event()  # someone waits (flush, close): skip the linger
        self._flush_lock = threading.Lock()
        self._flush_requests: collections.deque[tuple[int, int]] = collections.deque()  # (id, round)
        self.flushed = 0  # the highest flush id satisfied
        self._next_flush_id = 0
        self._closing = False
        self._close_deadline = 0.0
        # Sender-thread state.
        self._producer = self._new_producer()
        self._mode = Mode.DIRECT if self._spool.empty else Mode.SPOOL
        self._unhealthy = False
        self._fatal_error: KafkaError | None = None
        self._direct: collections.deque[_Pending] = collections.deque()
        self._log_pending: collections.deque[_Pending] = collections.deque()
        self._skip_on_replay: set[Position] = set()
        self._holding = False  # the spool refused records: they wait at the buffer's front
        self._retry_at = 0.0  # when to try the spool again
        self._failed_rounds = 0
        self._lost_at_close = 0
        # Bytes of record frames settled: acknowledged, failed for good, dropped or spooled.
        self._released = 0
        self._in_flight = 0
        self.counts = dict.fromkeys(COUNTER_SLOTS, 0)
        self._taken = 0  # records taken from the buffer
        self._round_no = 0
        self._quiet_round = -1
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        # Read by other threads: plain values, replaced whole after every round.
        self.spool_bytes = self._spool.size_bytes
        self.spool_pending_bytes = self._spool.pending_bytes
        self._publish_status()
        self._thread = threading.Thread(target=self._run, name="feedbackloop-sender", daemon=True)
        self._thread.start()

    # -- safe from any thread --------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """Where new events currently go."""
        return self._mode

    @property
    def in_flight(self) -> int:
        """Messages handed to librdkafka without a delivery report yet."""
        return self._in_flight

    @property
    def spool_dir(self) -> Path:
        """The spool slot this sender holds."""
        return self._spool.directory

    def notify(self) -> None:
        """Tell the sender there are new events (cheap when it already knows)."""
        if not self._wake.is_set():
            self._wake.set()

    def request_flush(self, flush_id: int) -> None:
        """Set :attr:`flushed` to ``flush_id`` once every record now in the buffer is acknowledged.

        Ids must grow. Nothing waits here: the pipe reader calls this between records.
        """
        with self._flush_lock:
            # A round that starts after this line sees every record buffered before the call.
            self._flush_requests.append((flush_id, self._round_no + 1))
            self._urgent.set()
        self._wake.set()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every record buffered before the call is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._flush_lock:
            self._next_flush_id += 1
            flush_id = self._next_flush_id
        self.request_flush(flush_id)
        while time.monotonic() < deadline:
            if self.flushed >= flush_id:
                return True
            if not self._thread.is_alive():
                return False
            time.sleep(0.005)
        return False

    def close(self, timeout_s: float) -> None:
        """Deliver what the broker takes within ``timeout_s``, spool the rest, stop the thread."""
        self._close_deadline = time.monotonic() + timeout_s
        self._closing = True
        self._urgent.set()
        self._wake.set()
        self._thread.join()

    # -- the thread ------------------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        config = {
            **self.settings.kafka_config,
            "client.id": self.settings.client_id,
            "linger.ms": self.settings.linger_ms,
            "compression.type": self.settings.compression,
            # Never expire a message locally: an expired message may still be written by the
            # broker, and re-sending it from the spool would duplicate it.
            "message.timeout.ms": 0,
            "queue.buffering.max.messages": max(100_000, 2 * self.settings.max_in_flight),
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            "logger": _LibrdkafkaLog(),
            "message.max.bytes": self.settings.max_message_bytes,
            **SAFE_PRODUCER_CONFIG,
        }
        return Producer(config)

    def _run(self) -> None:
        while True:
            try:
                busy, quiet = self._round()
                self._failed_rounds = 0
                if self._closing and (quiet or time.monotonic() >= self._close_deadline):
                    break
                self._wait(busy)
            except Exception:
                # A round that keeps failing must neither flood the log nor pass for healthy
                # (the app refuses events while FAULT is set), and must not hold up close().
                self._failed_rounds += 1
                self._log_loudly("round", "unexpected error; continuing", exc_info=True)
                self._publish_status()
                if self._closing and time.monotonic() >= self._close_deadline:
                    break
                time.sleep(0.1)
        try:
            self._shutdown()
        except Exception:
            log.exception("feedbackloop sender: shutdown failed; the spool keeps what it holds")
        self._publish_status()

    def _wait(self, busy: bool) -> None:
        if busy:
            # Under load, let records gather (unless a backlog waits already): fewer, larger rounds
            # (one poll, one spool write, one status update each) leave more CPU to the reader.
            if self._linger_s > 0 and len(self._buffer) < _BATCH:
                self._urgent.wait(self._linger_s)
        elif self._closing:
            time.sleep(_BUSY_WAIT_S)
        else:
            self._wake.wait(_BUSY_WAIT_S if self._in_flight else _IDLE_WAIT_S)

    def _round(self) -> tuple[bool, bool]:
        """One pass; returns (did work, everything accepted so far is acknowledged)."""
        self._round_no += 1
        self._wake.clear()
        self._producer.poll(0)
        if self._fatal_error is not None:
            self._reset_producer()
        if self._mode is Mode.DIRECT and not self._direct_ok(time.monotonic()) and self._direct:
            # The broker went away with messages in librdkafka's memory: put them on disk now,
            # not when the next event happens to arrive.
            self._enter_spool_mode()
        busy = self._drain_buffer()
        busy |= self._replay()
        self._advance_cursor()
        self._spool.maintain()
        if self._spool.write_error is not None and not self._buffer:
            self._probe_spool()
        self.spool_bytes = self._spool.size_bytes
        self.spool_pending_bytes = self._spool.pending_bytes
        quiet = not self._buffer and self._in_flight == 0 and self._spool.empty
        if quiet:
            self._quiet_round = self._round_no
            self._settle_flushes()
        self._publish_status()
        return busy, quiet

    def _settle_flushes(self) -> None:
        with self._flush_lock:
            requests = self._flush_requests
            while requests and requests[0][1] <= self._quiet_round:
                self.flushed = max(self.flushed, requests.popleft()[0])
            if not requests and not self._closing:
                self._urgent.clear()

    def _publish_status(self) -> None:
        status = self.status
        self.counts["spool_write_errors"] = self._spool.write_errors
        self.counts["spool_skipped"] = self._spool.skipped_records
        for name, slot in COUNTER_SLOTS.items():
            status[slot] = self.counts[name]
        status[Slot.RECORDS] = self._taken
        status[Slot.BUFFERED] = len(self._buffer)
        status[Slot.IN_FLIGHT] = self._in_flight
        status[Slot.SPOOL_BYTES] = self.spool_bytes
        status[Slot.SPOOL_PENDING_BYTES] = self.spool_pending_bytes
        status[Slot.SPOOLING] = int(self._mode is Mode.SPOOL)
        status[Slot.FLUSHED] = self.flushed
        status[Slot.RELEASED] = self._released - self.spool_bytes
        status[Slot.FAULT] = self.fault

    @property
    def fault(self) -> int:
        """0, or the errno of why the spool takes no record now (the app refuses events meanwhile)."""
        error = self._spool.write_error
        if error is not None:
            return error.errno or errno.EIO
        return errno.EIO if self._failed_rounds >= _FAILED_ROUNDS_FAULT else 0

    def _probe_spool(self) -> None:
        """With nothing held to retry, find out whether the spool takes writes again."""
        now = time.monotonic()
        if now >= self._retry_at:
            self._retry_at = now + _RETRY_WRITE_S
            if self._spool.probe():
                log.warning("feedbackloop producer: the spool %s takes writes again", self._spool.directory)

    def _drain_buffer(self) -> bool:
        buffer = self._buffer
        if self._holding and self._mode is Mode.SPOOL and time.monotonic() < self._retry_at:
            return False
        records = [buffer.popleft() for _ in range(min(_BATCH, len(buffer)))]
        if not records:
            return False
        self._taken += len(records)
        if self._mode is Mode.SPOOL:
            self._append_to_spool(records)
            return True
        now = time.monotonic()
        for i, record in enumerate(records):
            if not self._direct_ok(now):
                self._enter_spool_mode()
                self._append_to_spool(records[i:])
                break
            try:
                topic, key, value = decode_record(record)
            except (ValueError, struct.error, UnicodeDecodeError) as exc:  # a bug of the app side
                self.counts["failed"] += 1
                self._released += len(record)
                self._log_loudly("failed", "malformed record from the app dropped: %s", exc)
                continue
            try:
                pending = self._produce(topic, key, value, record, None, now)
            except BufferError:
                self._unhealthy = True
                self._enter_spool_mode()
                self._append_to_spool(records[i:])
                break
            if pending is not None:
                self._direct.append(pending)
        return True

    def _direct_ok(self, now: float) -> bool:
        direct = self._direct
        while direct and direct[0].state == _State.DONE:
            direct.popleft()
        if self._unhealthy:
            return False
        if self._in_flight >= self.settings.max_in_flight or (
            direct and now - direct[0].produced_at > self.settings.spool_after_s
        ):
            self._unhealthy = True
            return False
        return True

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        record: bytes,
        log_end: Position | None,
        now: float,
    ) -> _Pending | None:
        pending = _Pending(record, now, log_end)
        try:
            self._producer.produce(
                topic, value=value, key=key, on_delivery=partial(self._on_delivery, pending)
            )
        except KafkaException as exc:
            # Refused locally for good (too large, bad topic name): no retry can fix it.
            pending.state = _State.DONE
            self.counts["failed"] += 1
            self._released += len(record)
            self._log_loudly("failed", "event refused by the Kafka client for good: %s", exc)
            return pending if log_end is not None else None
        self._in_flight += 1
        return pending

    def _on_delivery(self, pending: _Pending, error: KafkaError | None, _message: Message) -> None:
        self._in_flight -= 1
        if error is None:
            pending.state = _State.DONE
            self.counts["sent"] += 1
            self._settle(pending)
            self._unhealthy = False
            return
        code = error.code()
        if code in _PURGED or self._fatal_error is not None or code == KafkaError._FATAL:
            pending.state = _State.RETRY
            if pending.log_end is None and self._closing:
                # Shutdown copies held messages to the spool first: this one did not fit.
                self.counts["dropped"] += 1
                self._lost_at_close += 1
                self._settle(pending)
            return
        pending.state = _State.DONE
        self.counts["failed"] += 1
        self._settle(pending)
        self._log_loudly("failed", "event rejected by the broker for good: %s", error)

    def _settle(self, pending: _Pending) -> None:
        """A record only librdkafka held (not in the spool) is done with: release its bytes, once."""
        self._released += len(pending.record)
        pending.record = b""

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() == KafkaError._FATAL:
            self._fatal_error = error
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            # Also said when the broker merely closed idle connections: then the next event
            # takes a short detour through the spool, whose probe finds the broker well.
            self._unhealthy = True
        log.debug("kafka client error: %s", error)

    def _enter_spool_mode(self) -> None:
        """Copy what librdkafka still holds to the spool; then send every new event through it."""
        if self._mode is Mode.SPOOL:
            return
        self._copy_direct_to_spool()
        self._mode = Mode.SPOOL
        log.warning("feedbackloop producer: broker unwell, spooling to %s", self._spool.directory)

    def _copy_direct_to_spool(self) -> list[_Pending]:
        """Copy the records only librdkafka holds to the spool; return those it did not take
        (they stay in librdkafka, and in ``record``)."""
        held = [p for p in self._direct if p.state != _State.DONE and p.record]
        self._direct.clear()
        if not held:
            return []
        fully_read = self._spool.fully_read
        positions = self._spool.append(p.record for p in held)
        for pending, end in zip(held, positions, strict=False):
            self._settle(pending)
            pending.log_end = end
            self._log_pending.append(pending)
        self.counts["spooled"] += len(positions)
        if fully_read:
            # They are in librdkafka already: replay must start after them.
            self._spool.seek(self._spool.end)
        missing = held[len(positions) :]
        if missing:
            self._log_loudly(
                "hold",
                "the spool took %d of %d events librdkafka holds (%s); the rest stay in memory only",
                len(positions),
                len(held),
                self._spool.write_error or "spool full",
            )
        return missing

    def _append_to_spool(self, records: Sequence[bytes]) -> None:
        written = self._spool.extend(records)
        self.counts["spooled"] += written
        if written == len(records):
            self._released += sum(map(len, records))
            self._holding = False
            return
        self._released += sum(map(len, records[:written]))
        # Nothing accepted is dropped: what the spool did not take waits, in order, at the front
        # of the buffer (the app refuses new events meanwhile: FAULT, or its byte reservation).
        rest = records[written:]
        self._buffer.extendleft(reversed(rest))
        self._taken -= len(rest)
        self._holding = True
        self._retry_at = time.monotonic() + _RETRY_WRITE_S
        error = self._spool.write_error
        if error is not None:
            self._log_loudly(
                "hold",
                "spool write in %s failed (%s): %d events held in memory and retried; new events are "
                "refused until a write succeeds",
                self._spool.directory,
                error,
                len(rest),
            )
        else:
            self._log_loudly(
                "hold",
                "spool full (%d bytes in %s): %d events held in memory until it drains",
                self._spool.size_bytes,
                self._spool.directory,
                len(rest),
            )

    def _replay(self) -> bool:
        if self._mode is not Mode.SPOOL:
            return False
        # While the broker is known to be away, one message in librdkafka is probe enough: its
        # delivery report says when to replay at full speed.
        window = _PROBE if self._unhealthy else self.settings.max_in_flight
        budget = min(window - self._in_flight, _BATCH)
        records = self._spool.read(budget) if budget > 0 else []
        now = time.monotonic()
        for record in records:
            if record.end in self._skip_on_replay:
                # Delivered before a producer reset; committed with its neighbours, not re-sent.
                self._skip_on_replay.discard(record.end)
                done = _Pending(b"", now, record.end)
                done.state = _State.DONE
                self._log_pending.append(done)
                continue
            try:
                pending = self._produce(record.topic, record.key, record.value, b"", record.end, now)
            except BufferError:
                self._spool.seek(record.start)
                break
            if pending is not None:
                self._log_pending.append(pending)
                self.counts["replayed"] += 1
        sent_held = False
        if self._holding and self._spool.fully_read and not self._closing:
            sent_held = self._send_held(window - self._in_flight, now)
        if self._spool.fully_read and not self._unhealthy and not self._closing:
            self._mode = Mode.DIRECT
            self._holding = False
            log.info("feedbackloop producer: spool replayed, sending directly again")
        return bool(records) or sent_held

    def _send_held(self, budget: int, now: float) -> bool:
        """Hand records the spool refused to librdkafka as they are (in order: everything the
        spool held is handed over already). While the broker is away this is the probe that
        tells when it is back; the records live in memory either way."""
        direct = self._direct
        while direct and direct[0].state == _State.DONE:
            direct.popleft()
        sent = 0
        while sent < budget and self._buffer:
            record = self._buffer.popleft()
            self._taken += 1
            try:
                topic, key, value = decode_record(record)
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                self.counts["failed"] += 1
                self._released += len(record)
                self._log_loudly("failed", "malformed record from the app dropped: %s", exc)
                continue
            try:
                pending = self._produce(topic, key, value, record, None, now)
            except BufferError:
                self._buffer.appendleft(record)
                self._taken -= 1
                break
            if pending is not None:
                direct.append(pending)
            sent += 1
        return sent > 0

    def _advance_cursor(self) -> None:
        pending = self._log_pending
        last: _Pending | None = None
        while pending and pending[0].state == _State.DONE:
            last = pending.popleft()
        if not pending:
            self._spool.commit(self._spool.read_position)
        elif last is not None and last.log_end is not None:
            self._spool.commit(last.log_end)

    def _reset_producer(self) -> None:
        """After a fatal producer error: re-send, from the spool, everything not acknowledged."""
        log.error("feedbackloop producer: fatal Kafka error (%s); recreating the producer", self._fatal_error)
        uncopied = self._copy_direct_to_spool()
        self._mode = Mode.SPOOL
        self._producer.purge(in_queue=True, in_flight=True)
        self._drain_reports(5.0)
        # What the spool could not take goes back to the front of the buffer, to be spooled
        # (or held) before anything newer.
        back = [p.record for p in uncopied if p.state == _State.RETRY and p.record]
        for p in uncopied:
            p.record = b""
        self._buffer.extendleft(reversed(back))
        self._taken -= len(back)
        self._skip_on_replay = {p.log_end for p in self._log_pending if p.state == _State.DONE and p.log_end}
        self._log_pending.clear()
        self._in_flight = 0
        self._spool.seek(self._spool.committed)
        self._producer = self._new_producer()
        self._fatal_error = None

    def _drain_reports(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._in_flight > 0 and time.monotonic() < deadline:
            self._producer.poll(0.01)

    def _shutdown(self) -> None:
        """Make whatever is not acknowledged durable: librdkafka's queue and the buffer go to the spool.

        What the spool cannot take then (its bound, or a write that keeps failing) is lost:
        counted in ``dropped`` and logged.
        """
        undelivered = bool(self._buffer) or self._in_flight > 0 or not self._spool.empty
        if undelivered:
            self._copy_direct_to_spool()
            self._mode = Mode.SPOOL
            self._holding = False
            while self._buffer:
                before = len(self._buffer)
                self._drain_buffer()
                if len(self._buffer) >= before:
                    break  # the spool takes no more
            self._producer.purge(in_queue=True, in_flight=True)
            self._drain_reports(2.0)
        if self._buffer:
            lost = list(self._buffer)
            self._buffer.clear()
            self._taken += len(lost)
            self.counts["dropped"] += len(lost)
            self._lost_at_close += len(lost)
            self._released += sum(map(len, lost))
        if self._lost_at_close:
            log.error(
                "feedbackloop producer: %d events lost at close: the broker did not take them and the "
                "spool %s could not (%s)",
                self._lost_at_close,
                self._spool.directory,
                self._spool.write_error or "spool full",
            )
        self._producer.flush(0)
        self._advance_cursor()
        self.spool_bytes = self._spool.size_bytes
        self.spool_pending_bytes = self._spool.pending_bytes
        self._spool.close()
        if undelivered:
            log.warning(
                "feedbackloop producer closed with %d bytes spooled in %s; they are sent on next start",
                self.spool_pending_bytes,
                self._spool.directory,
            )

    def _log_loudly(self, kind: str, message: str, *args: Any, exc_info: bool = False) -> None:
        """logging.error, at most every few seconds per kind, saying how many were suppressed."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -_LOG_EVERY_S) < _LOG_EVERY_S:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_log[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        suffix = f" ({suppressed} similar messages suppressed)" if suppressed else ""
        log.error("feedbackloop producer: " + message + suffix, *args, exc_info=exc_info)
