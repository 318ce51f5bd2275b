"""The SDK's sender thread: from the in-memory buffer to librdkafka, or through the spool.

* **direct** mode (broker healthy, spool empty): events go to librdkafka (idempotent, ``acks=all``,
  no local timeout, so a message librdkafka holds is retried with its original sequence number
  and never duplicated by us).
* **spool** mode, entered when the broker looks unwell (all brokers down, an event unacknowledged
  for ``spool_after_s``, ``max_in_flight`` reached, librdkafka's queue full): first the messages
  librdkafka still holds are copied to the spool (so a crash cannot take them), then every new
  event is appended to it. The spool is replayed into librdkafka in order, at most
  ``max_in_flight`` at a time; a record is committed once acknowledged. When everything spooled
  has been handed over and the broker answers again, direct mode resumes.

The order of ``produce`` calls is therefore the order events were accepted in, across modes and
restarts, and librdkafka keeps that order per partition: a session's events (key = session_id)
arrive in order.

Everything here runs on the one sender thread (librdkafka's callbacks run inside its ``poll``),
except the few methods documented as safe for other threads.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from feedbackloop.kafka_io import client_config
from feedbackloop.settings import KafkaSettings, ProducerSettings
from producers.client import SAFE_PRODUCER_CONFIG
from producers.spool import Position, encode_record, open_spool
from producers.wire import event_json
from schemas import FeedbackEvent, InteractionEvent, topics

log = logging.getLogger("producers.sdk")

Event = InteractionEvent | FeedbackEvent
#: (topic, key, value) as librdkafka and the spool take it.
Record = tuple[str, bytes | None, bytes]
#: What callers put in the buffer: a validated event (serialized here, off the caller's thread)
#: or a raw record.
Item = Event | Record

_BATCH: Final = 2048  # items per round: bounds the work between two looks at the broker
_PROBE: Final = 1
_IDLE_WAIT_S: Final = 0.1
_BUSY_WAIT_S: Final = 0.005
_LOG_EVERY_S: Final = 5.0
_PURGED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class Mode(StrEnum):
    """Where the sender thread sends new events."""

    DIRECT = "direct"
    SPOOL = "spool"


class _State:
    PENDING = 0  # handed to librdkafka, no report yet
    DONE = 1  # delivered or failed for good: never to be sent again
    RETRY = 2  # purged (close) or lost to a fatal producer error: still owed, from the spool


class _Pending:
    """One message handed to librdkafka; ``log_end`` is set once it is also in the spool."""

    __slots__ = ("key", "log_end", "produced_at", "state", "topic", "value")

    def __init__(
        self, topic: str, key: bytes | None, value: bytes, produced_at: float, log_end: Position | None
    ) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.produced_at = produced_at
        self.log_end = log_end
        self.state = _State.PENDING


class _LibrdkafkaLog:
    """librdkafka's log lines, capped at WARNING: a refused connect during an outage is not an
    error of the app (real failures arrive as delivery reports and are logged as errors)."""

    _logger = logging.getLogger("producers.librdkafka")

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._logger.log(min(level, logging.WARNING), msg, *args)


class Sender:
    """Owns the spool, the librdkafka producer and the thread that moves events between them."""

    def __init__(
        self, kafka: KafkaSettings, settings: ProducerSettings, buffer: collections.deque[Item]
    ) -> None:
        self.settings = settings
        self._kafka = kafka
        self._buffer = buffer
        self._interactions_topic = topics.topic_name(topics.INTERACTIONS, kafka.topic_namespace)
        self._feedback_topic = topics.topic_name(topics.FEEDBACK, kafka.topic_namespace)
        self._spool = open_spool(
            settings.spool_dir,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
            fsync_interval_s=settings.spool_fsync_interval_s,
        )
        self._linger_s = settings.sender_linger_ms / 1000
        # Thread-safe signals.
        self._wake = threading.Event()  # new events (set by callers)
        self._urgent = threading.Event()  # someone waits (flush, close): skip the linger
        self._flushers = 0
        self._flush_lock = threading.Lock()
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
        self._in_flight = 0
        self.counts = dict.fromkeys(("sent", "failed", "spooled", "dropped", "replayed"), 0)
        self._round_no = 0
        self._quiet_round = -1
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        # Read by other threads: plain values, replaced whole after every round.
        self.spool_bytes = self._spool.size_bytes
        self.spool_pending_bytes = self._spool.pending_bytes
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

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything accepted before the call is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._flush_lock:
            self._flushers += 1
            self._urgent.set()
        try:
            # A round that starts after this line sees every event accepted before the call.
            target = self._round_no + 1
            self._wake.set()
            while time.monotonic() < deadline:
                if self._quiet_round >= target:
                    return True
                if not self._thread.is_alive():
                    return False
                time.sleep(0.005)
            return False
        finally:
            with self._flush_lock:
                self._flushers -= 1
                if self._flushers == 0 and not self._closing:
                    self._urgent.clear()

    def close(self, timeout_s: float) -> None:
        """Deliver what the broker takes within ``timeout_s``, spool the rest, stop the thread."""
        self._close_deadline = time.monotonic() + timeout_s
        self._closing = True
        self._urgent.set()
        self._wake.set()
        self._thread.join()

    # -- the thread ------------------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        config = client_config(
            self._kafka,
            **{
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
            },
        )
        config.update(SAFE_PRODUCER_CONFIG)
        return Producer(config)

    def _run(self) -> None:
        while True:
            try:
                busy, quiet = self._round()
                if self._closing and (quiet or time.monotonic() >= self._close_deadline):
                    break
                self._wait(busy)
            except Exception:
                log.exception("feedbackloop sender: unexpected error; continuing")
                time.sleep(0.1)
        try:
            self._shutdown()
        except Exception:
            log.exception("feedbackloop sender: shutdown failed; the spool keeps what it holds")

    def _wait(self, busy: bool) -> None:
        if busy:
            # Under load, let events gather (unless a backlog waits already): every round takes
            # the GIL from the callers once, so fewer, larger rounds keep record_* calls short.
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
        self.spool_bytes = self._spool.size_bytes
        self.spool_pending_bytes = self._spool.pending_bytes
        quiet = not self._buffer and self._in_flight == 0 and self._spool.empty
        if quiet:
            self._quiet_round = self._round_no
        return busy, quiet

    def _to_record(self, item: Item) -> Record:
        if isinstance(item, tuple):
            return item
        topic = self._interactions_topic if isinstance(item, InteractionEvent) else self._feedback_topic
        return topic, item.session_id.encode(), event_json(item)

    def _drain_buffer(self) -> bool:
        buffer = self._buffer
        items = [buffer.popleft() for _ in range(min(_BATCH, len(buffer)))]
        if not items:
            return False
        records = [self._to_record(item) for item in items]
        if self._mode is Mode.SPOOL:
            self._append_to_spool(records)
            return True
        now = time.monotonic()
        for i, (topic, key, value) in enumerate(records):
            if not self._direct_ok(now):
                self._enter_spool_mode()
                self._append_to_spool(records[i:])
                break
            try:
                pending = self._produce(topic, key, value, None, now)
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
        self, topic: str, key: bytes | None, value: bytes, log_end: Position | None, now: float
    ) -> _Pending | None:
        pending = _Pending(topic, key, value, now, log_end)
        try:
            self._producer.produce(
                topic, value=value, key=key, on_delivery=partial(self._on_delivery, pending)
            )
        except KafkaException as exc:
            # Refused locally for good (too large, bad topic name): no retry can fix it.
            pending.state = _State.DONE
            self.counts["failed"] += 1
            self._log_loudly("failed", "event refused by the Kafka client for good: %s", exc)
            return pending if log_end is not None else None
        self._in_flight += 1
        return pending

    def _on_delivery(self, pending: _Pending, error: KafkaError | None, _message: Message) -> None:
        self._in_flight -= 1
        if error is None:
            pending.state = _State.DONE
            self.counts["sent"] += 1
            self._unhealthy = False
            return
        code = error.code()
        if code in _PURGED or self._fatal_error is not None or code == KafkaError._FATAL:
            pending.state = _State.RETRY
            if pending.log_end is None and self._closing:
                # Shutdown copies held messages to the spool first: this one did not fit.
                self.counts["dropped"] += 1
                self._log_loudly("dropped", "event lost: not delivered and the spool was full")
            return
        pending.state = _State.DONE
        self.counts["failed"] += 1
        self._log_loudly("failed", "event rejected by the broker for good: %s", error)

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
        held = [p for p in self._direct if p.state != _State.DONE]
        self._direct.clear()
        positions = self._spool.append(encode_record(p.topic, p.key, p.value) for p in held)
        for pending, end in zip(held, positions, strict=False):
            pending.log_end = end
            self._log_pending.append(pending)
        self.counts["spooled"] += len(positions)
        # They are in librdkafka already: replay must start after them.
        self._spool.seek(self._spool.end)
        self._mode = Mode.SPOOL
        if len(positions) < len(held):
            missing = len(held) - len(positions)
            self._log_loudly("dropped", "spool full: %d events stay in memory only", missing)
        log.warning("feedbackloop producer: broker unwell, spooling to %s", self._spool.directory)

    def _append_to_spool(self, records: Sequence[Record]) -> None:
        try:
            written = len(self._spool.append(encode_record(*record) for record in records))
        except OSError as exc:
            written = 0
            self._log_loudly("dropped", "spool write failed: %s", exc)
        self.counts["spooled"] += written
        if written < len(records):
            self.counts["dropped"] += len(records) - written
            self._log_loudly(
                "dropped",
                "spool full (%d bytes in %s): %d events dropped, %d in total",
                self._spool.size_bytes,
                self._spool.directory,
                len(records) - written,
                self.counts["dropped"],
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
                done = _Pending(record.topic, record.key, b"", now, record.end)
                done.state = _State.DONE
                self._log_pending.append(done)
                continue
            try:
                pending = self._produce(record.topic, record.key, record.value, record.end, now)
            except BufferError:
                self._spool.seek(record.start)
                break
            if pending is not None:
                self._log_pending.append(pending)
                self.counts["replayed"] += 1
        if self._spool.fully_read and not self._unhealthy and not self._closing:
            self._mode = Mode.DIRECT
            log.info("feedbackloop producer: spool replayed, sending directly again")
        return bool(records)

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
        self._enter_spool_mode()
        self._producer.purge(in_queue=True, in_flight=True)
        self._drain_reports(5.0)
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
        """Make whatever is not acknowledged durable: librdkafka's queue and the buffer go to the spool."""
        undelivered = bool(self._buffer) or self._in_flight > 0 or not self._spool.empty
        if undelivered:
            self._enter_spool_mode()
            while self._buffer:
                self._drain_buffer()
            self._producer.purge(in_queue=True, in_flight=True)
            self._drain_reports(2.0)
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

    def _log_loudly(self, kind: str, message: str, *args: Any) -> None:
        """logging.error, at most every few seconds per kind, saying how many were suppressed."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -_LOG_EVERY_S) < _LOG_EVERY_S:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_log[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        suffix = f" ({suppressed} similar messages suppressed)" if suppressed else ""
        log.error("feedbackloop producer: " + message + suffix, *args)
