"""The sink stage: consume the output topics, buffer per table, write in batches, commit what is written.

Backend-neutral: the backend (``sink.backend``, see ``sinks/registry.py``) connects, writes a batch
and says whose fault a failure was; everything else is here, once.

* **Offsets** are committed per partition only up to its first row not yet in the backend (or durably
  dead-lettered: the dead letters are acknowledged by the broker before the commit), see
  ``sinks/offsets.py``. Nothing is committed after an unexpected error, and never in a ``finally``.
* **The backend unavailable** (``Fault.TRANSIENT``: unreachable, overloaded, out of space, a table
  missing, ...) pauses consumption of every assigned partition and retries the write with capped
  exponential backoff for as long as it takes. The loop keeps polling, so the consumer stays in its
  group. One log line when the outage starts, one every ``sink.status_log_interval_s`` while it
  lasts, one when it ends; the status file and the metrics say ``paused`` with the last error.
* **Rows the backend refuses** for what they hold (``Fault.ROW``) are isolated by splitting the
  batch, sent to the dead-letter topic, and the rest of the batch is written.
* **Erased users** (``ai.erasures.v1``, read whole at start and followed): their messages are read
  and skipped, their buffered rows dropped, and their rows deleted from the backend -- at start for
  every erased user that still has rows, then for each new request -- with the retries of a write.
  So a replay of old outputs never brings a user back.
* **A revoke** gets one last write of what is buffered, then exactly the committable offsets of the
  revoked partitions are committed and their unwritten rows forgotten (the next owner reads them
  again). **A stop** (SIGTERM) does the same for every partition, then leaves the group.

chdb calls block, which is fine here: the sink is a plain consumer loop in a process of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry
from pydantic import ValidationError

from infra.erasures import ErasureLog
from infra.groups import sink_group_id
from infra.kafka import GroupLag, KafkaUnavailableError, client_config, group_lag
from infra.output_producer import OutputProducer
from infra.settings import Settings
from schemas import DeadLetter, to_epoch_ms, topics
from schemas.erasure import named_user
from schemas.events import event_time_error
from sinks.batch import Pending, TableBuffer
from sinks.guard import embedded
from sinks.offsets import OffsetLedger, Partition
from sinks.protocol import Fault, SinkBackend
from sinks.registry import create_backend
from sinks.rows import TABLES, TableSpec
from sinks.stats import SinkState, SinkStats

log = logging.getLogger(__name__)

#: How often the counters are logged and written to the stats file while nothing changes.
REPORT_INTERVAL_S = 10.0
#: Exit code of a sink that stopped because its Kafka client was stuck (restart it).
STALL_EXIT_CODE = 4
#: How often a sink that reads nothing asks the broker whether it should have (see SinkStalledError).
STALL_CHECK_INTERVAL_S = 10.0


class SinkStalledError(RuntimeError):
    """The sink's consumer reads nothing although its group is behind on partitions it owns: a Kafka
    client left stuck (seen after a broker restart). The sink exits so that it restarts with new ones."""


def sink_topics(settings: Settings) -> list[str]:
    """Real names of the topics the sink reads."""
    return [topics.topic_name(spec.topic, settings.kafka.topic_namespace) for spec in TABLES]


def _user_reader(spec: TableSpec) -> Callable[[list[Any]], str | None]:
    """How to find the user of a row of ``spec``'s table: its ``user_id`` column, or for a dead letter
    the ``user_id`` of the original message (None: no user, e.g. a window aggregate)."""
    if "user_id" in spec.columns:
        index = spec.columns.index("user_id")
        return lambda row: row[index]
    if "value_text" in spec.columns:
        index = spec.columns.index("value_text")
        return lambda row: named_user(row[index])
    return lambda _row: None


def _of(user_of: Callable[[list[Any]], str | None], users: set[str]) -> Callable[[list[Any]], bool]:
    """Whether a row is of one of ``users``."""
    return lambda row: user_of(row) in users


def _partition(message: Message) -> Partition:
    return (message.topic() or "", message.partition() or 0)


def waiting(owned: set[Partition], lag: GroupLag) -> dict[Partition, int]:
    """Messages past the group's committed offset, per partition of ``owned`` that has any."""
    behind = {tp: end - max(lag.committed.get(tp, 0), 0) for tp, end in lag.end_offsets.items()}
    return {tp: n for tp, n in behind.items() if n > 0 and tp in owned}


class Sink:
    """Consume, buffer, write, commit — until :meth:`stop`."""

    def __init__(self, settings: Settings, backend: SinkBackend | None = None) -> None:
        self.settings = settings
        self.backend = backend if backend is not None else create_backend(settings)
        self.stats = SinkStats(backend=self.backend.name)
        self._stop = threading.Event()
        ns = settings.kafka.topic_namespace
        self._specs: dict[str, TableSpec] = {topics.topic_name(s.topic, ns): s for s in TABLES}
        self._raw_input = topics.topic_name(topics.INTERACTIONS, ns)
        raw_columns = self._specs[self._raw_input].columns
        self._raw_created_at = raw_columns.index("created_at")
        # Support tickets reach the sink straight from apps and help desks: it applies the contract's
        # upper bound on their event time (the processors do it for interactions and feedback).
        self._tickets = topics.topic_name(topics.SUPPORT_TICKETS, ns)
        self._ticket_created_at = self._specs[self._tickets].columns.index("created_at")
        self._compacted = {topics.topic_name(t, ns) for t in topics.COMPACTED_TOPICS}
        self._late_horizon_ms = int(settings.pipeline.late_horizon_s * 1000)
        self._future_skew_ms = int(settings.pipeline.max_future_skew_s * 1000)
        self._deadletter_topic = topics.topic_name(topics.DEADLETTER, ns)
        self._erasures = ErasureLog(settings.kafka)
        self._to_erase: set[str] = set()
        self._user_of = {spec.table: _user_reader(spec) for spec in TABLES}
        self._buffers: dict[str, TableBuffer] = {}
        self._ledger = OffsetLedger()
        self._paused = False
        self._repause = False
        self._closing = False
        self._delay = settings.sink.retry_initial_s
        self._next_attempt = 0.0
        self._last_status_log = 0.0
        self._last_read = self._last_stall_check = time.monotonic()
        self._producer = OutputProducer(settings.kafka)
        self._consumer = Consumer(
            client_config(
                settings.kafka,
                **{
                    "group.id": sink_group_id(settings),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "max.partition.fetch.bytes": settings.pipeline.fetch_max_bytes,
                    "session.timeout.ms": int(settings.pipeline.session_timeout_s * 1000),
                    "isolation.level": "read_committed",
                },
            )
        )

    def stop(self) -> None:
        """Ask the loop to finish: one last write, a commit of what is written, and it returns."""
        self._stop.set()

    @property
    def paused(self) -> bool:
        """Whether consumption is paused because the backend cannot take rows."""
        return self._paused

    def run(self) -> SinkStats:
        """Consume until stopped. Raises what it cannot handle, having committed nothing for it."""
        if self.settings.sink.metrics_port:
            registry = CollectorRegistry()
            registry.register(self.stats.collector())
            # Counts only, no secrets: reachable from a scraper outside the host or container.
            start_http_server(self.settings.sink.metrics_port, addr="0.0.0.0", registry=registry)  # noqa: S104
        failed = True
        try:
            if self._open_backend():
                # Every erasure so far, before the first message: a user erased while no sink ran (or
                # whose rows came back) is deleted again, and none of their messages is written.
                self._to_erase.update(self._erasures.load())
                self._buffers = {
                    spec.table: TableBuffer(spec.table, self.backend.writer(spec), self.backend.classify)
                    for spec in TABLES
                }
                self._consumer.subscribe(
                    list(self._specs),
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
                self.stats.state = SinkState.RUNNING
                self._report("sink running")
                self._loop()
                self._finish()
            failed = False
        finally:
            self._close(failed)
        return self.stats

    # ------------------------------------------------------------------ the loop

    def _open_backend(self) -> bool:
        """Open the backend, retrying while it is unavailable; False if stopped before it opened."""
        sink = self.settings.sink
        delay = sink.retry_initial_s
        while not self._stop.is_set():
            try:
                self.backend.open()
            except Exception as exc:  # the backend decides whose fault it was
                if self.backend.classify(exc) is not Fault.TRANSIENT:
                    raise
                now = time.monotonic()
                if self.stats.failed_attempt(exc, time.time()):
                    log.warning("waiting for the %s backend to open: %s", self.backend.name, exc)
                    self._last_status_log = now
                    self._report()
                elif now - self._last_status_log >= sink.status_log_interval_s:
                    log.warning(
                        "still waiting for the %s backend after %.0fs (%d attempts): %s",
                        *(self.backend.name, self.stats.paused_for(), self.stats.transient_failures, exc),
                    )
                    self._last_status_log = now
                self._stop.wait(delay)
                delay = min(delay * 2, sink.retry_max_s)
                continue
            if self.stats.paused_since is not None:
                lasted = self.stats.recovered(time.time())
                log.warning("the %s backend opened after %.1fs", self.backend.name, lasted)
            return True
        return False

    def _loop(self) -> None:
        last_flush = last_report = time.monotonic()
        while not self._stop.is_set():
            messages = self._consumer.consume(num_messages=10_000, timeout=0.1)
            for message in messages:
                self._take(message)
            self._follow_erasures()
            self._check_not_stalled(bool(messages))
            if self._repause:
                self._repause = False
                if self._paused:
                    self._pause_assignment()
            now = time.monotonic()
            if self._paused:
                if now >= self._next_attempt:
                    self._write_and_commit()
                    last_flush = now
                self._log_still_paused(now)
            else:
                buffered = self._buffered()
                due = now - last_flush >= self.backend.flush_interval_s
                if (
                    self._to_erase
                    or (buffered and (buffered >= self.backend.batch_rows or due))
                    # Messages that became no row (an erased user's, invalid input) still move the
                    # committed offset, or the lag would stay until some row comes to that partition.
                    or (due and not buffered and self._ledger.committable(()))
                ):
                    self._write_and_commit()
                    last_flush = now
            if now - last_report >= REPORT_INTERVAL_S:
                self._report()
                last_report = now

    def _check_not_stalled(self, read: bool) -> None:
        """Raise :class:`SinkStalledError` when nothing was read for ``sink.stall_timeout_s`` although the
        group is behind on a partition this sink owns. Asked with fresh clients (:func:`group_lag`), not
        this consumer's own, which is the one that may be stuck; not while paused, when reading nothing
        is the point, nor when the broker cannot be asked."""
        now = time.monotonic()
        if read or self._paused:
            self._last_read = now
            return
        if now - self._last_read < self.settings.sink.stall_timeout_s:
            return
        if now - self._last_stall_check < STALL_CHECK_INTERVAL_S:
            return
        self._last_stall_check = now
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        # No assignment: normal for one of more sinks than partitions (on a server), but a sink on chdb
        # is alone in its group (sinks/guard.py), so for it everything waiting is its own.
        alone = embedded(self.settings)
        if not owned and not alone:
            return
        try:
            lag = group_lag(self.settings.kafka, sink_group_id(self.settings), self._specs, 10.0)
        except (KafkaUnavailableError, KafkaException) as exc:
            log.info("sink read nothing for %.0f s; no answer why: %s", now - self._last_read, exc)
            return
        if behind := waiting(owned or set(lag.end_offsets), lag):
            where = ", ".join(f"{t}[{p}]: {n}" for (t, p), n in sorted(behind.items())[:8])
            raise SinkStalledError(
                f"the sink read nothing for {now - self._last_read:.0f} s while {sum(behind.values())} "
                f"messages wait on partitions it owns ({where}); exiting so that it restarts with new "
                "Kafka clients (FEEDBACKLOOP_SINK__STALL_TIMEOUT_S)"
            )

    def _finish(self) -> None:
        """On stop: one last write (no waiting for an unavailable backend), then commit what it holds."""
        unavailable = self._write()
        self._commit()
        if unavailable is not None:
            log.warning(
                "sink stopping with %d rows not written (%s): their offsets stay uncommitted, the next "
                "sink writes them",
                *(self._buffered(), unavailable),
            )

    def _close(self, failed: bool) -> None:
        self._closing = True  # the revoke that close() triggers must not write or commit any more
        if failed:
            self.stats.state = SinkState.FAILED
        with contextlib.suppress(Exception):  # leaving the group; it commits nothing (auto-commit is off)
            self._consumer.close()
        with contextlib.suppress(Exception):
            self._erasures.close()
        if failed:
            # Dead letters of rows whose offsets were not committed are sent again on replay; delivering
            # these too only makes duplicates, which the dead_letters table folds.
            with contextlib.suppress(Exception):
                self._producer.close(10.0)
        else:
            self._producer.close()
        self.backend.close()
        if not failed:
            self.stats.state = SinkState.STOPPED
        self._report("sink failed" if failed else "sink stopped")

    # ------------------------------------------------------------------ reading

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"sink consumer failed: {error}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("sink consumer: %s", error)
            return
        self.stats.consumed += 1
        topic = message.topic()
        assert topic is not None
        spec = self._specs[topic]
        value = message.value()
        if value is None and topic in self._compacted:
            # A tombstone deletes a key from a compacted topic; the table keeps the history it saw.
            self._ledger.read(_partition(message), message.offset() or 0)
            return
        try:
            if value is None:
                raise ValueError("no value")
            row = spec.to_row(value)
        except (ValidationError, ValueError) as exc:
            if topic == self._raw_input:
                # The processor dead-letters invalid input with the full reason; counting is enough here.
                self.stats.skipped_invalid_input += 1
            else:
                self._send_dead_letter(message, f"{spec.table}: {exc}", "validation_error")
        else:
            if self._erasures.users and self._user_of[spec.table](row) in self._erasures.users:
                self.stats.skipped_erased += 1  # forgotten: not written, not dead-lettered
            elif topic == self._raw_input and not self._timely(row[self._raw_created_at]):
                # The processors dead-letter it (too late, or from the future); a forged clock must
                # not open ClickHouse partitions either.
                self.stats.skipped_invalid_input += 1
            elif topic == self._tickets and (ahead := self._ahead(row[self._ticket_created_at])):
                self._send_dead_letter(message, f"{spec.table}: {ahead}", "future_event")
            else:
                self._buffers[spec.table].add(row, message)
        self._ledger.read(_partition(message), message.offset() or 0)

    def _timely(self, created_at: datetime | int) -> bool:
        """Whether a raw event's time (a datetime or epoch ms, as its row holds it) is one the
        processors accept (the same bounds, the wall clock)."""
        now_ms = int(time.time() * 1000)
        created_ms = created_at if isinstance(created_at, int) else to_epoch_ms(created_at)
        return now_ms - self._late_horizon_ms <= created_ms <= now_ms + self._future_skew_ms

    def _follow_erasures(self) -> None:
        """Take new erasure requests: drop the users' buffered rows, and delete theirs at the next write."""
        erased = self._erasures.poll()
        if not erased:
            return
        users = set(erased)
        for spec in TABLES:
            self.stats.skipped_erased += self._buffers[spec.table].drop_rows(
                _of(self._user_of[spec.table], users)
            )
        self._to_erase.update(users)
        log.info("erasure of %d users: their rows are deleted with the next write", len(users))

    def _erase(self) -> BaseException | None:
        """Delete the rows of the users erased and not yet deleted; the error if the backend cannot now."""
        try:
            deleted = self.backend.erase(self._to_erase)
        except Exception as exc:  # the backend decides whose fault it was
            if self.backend.classify(exc) is Fault.TRANSIENT:
                return exc
            raise
        for table, rows in deleted.items():
            self.stats.erased_rows[table] = self.stats.erased_rows.get(table, 0) + rows
        if deleted:
            log.info("erased %d users: rows deleted %s", len(self._to_erase), deleted)
        self._to_erase.clear()
        return None

    def _ahead(self, created_at: datetime | int) -> str | None:
        """Why an event dated ``created_at`` (a datetime or epoch ms, as its row holds it) is too far
        ahead of the wall clock, or None."""
        created_ms = created_at if isinstance(created_at, int) else to_epoch_ms(created_at)
        return event_time_error(created_ms, int(time.time() * 1000), self._future_skew_ms)

    def _buffered(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def _buffered_offsets(self) -> Iterator[tuple[Partition, int]]:
        for buffer in self._buffers.values():
            for pending in buffer.pending():
                yield _partition(pending.source), pending.source.offset() or 0

    # ------------------------------------------------------------------ writing and committing

    def _write(self) -> BaseException | None:
        """Write every table's buffer; stop at the first table the backend cannot take (returned)."""
        for table, buffer in self._buffers.items():
            if not len(buffer):
                continue
            result = buffer.flush()
            if result.written:
                self.stats.inserted[table] = self.stats.inserted.get(table, 0) + len(result.written)
                visible = int(time.time() * 1000)
                published = (p.source.timestamp()[1] for p in result.written)
                self.stats.record_latency(table, [visible - t for t in published if t > 0])
            for pending, reason in result.refused:
                self._dead_letter_refused(pending, reason)
            if result.unavailable is not None:
                return result.unavailable
        # After the rows: what this write put in (before the erasure was read) goes with the rest.
        return self._erase() if self._to_erase else None

    def _commit(self, only: Iterable[Partition] | None = None) -> None:
        """Commit the committable offsets (of ``only``, else of every partition read)."""
        self._producer.flush_blocking(60.0)  # dead letters are durable before their offsets commit
        offsets = self._ledger.committable(self._buffered_offsets(), only)
        if not offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:  # e.g. a rebalance under way: the next commit covers these rows
            log.info("commit of %d partitions skipped: %s", len(offsets), exc)
            return
        self._ledger.committed(offsets)

    def _write_and_commit(self, only: Iterable[Partition] | None = None) -> None:
        unavailable = self._write()
        self._commit(only)
        if unavailable is not None:
            self._backend_unavailable(unavailable)
        elif self._paused:
            self._backend_back()

    # ------------------------------------------------------------------ outages

    def _backend_unavailable(self, error: BaseException) -> None:
        sink = self.settings.sink
        if self.stats.failed_attempt(error, time.time()):
            self._paused = True
            self.stats.state = SinkState.PAUSED
            self._pause_assignment()
            self._delay = sink.retry_initial_s
            log.warning(
                "sink paused: the %s backend cannot take rows (%s). Consumption is paused and %d rows "
                "stay buffered with their offsets uncommitted; retrying every %g-%gs until it can",
                *(self.backend.name, error, self._buffered(), sink.retry_initial_s, sink.retry_max_s),
            )
            self._last_status_log = time.monotonic()
            self._report()
        else:
            self._delay = min(self._delay * 2, sink.retry_max_s)
        self._next_attempt = time.monotonic() + self._delay

    def _backend_back(self) -> None:
        attempts = self.stats.transient_failures
        lasted = self.stats.recovered(time.time())
        self._paused = False
        self.stats.state = SinkState.RUNNING
        self._resume_assignment()
        log.warning(
            "sink resumed: the %s backend took the buffered rows after %.1fs (%d failed attempts so far)",
            *(self.backend.name, lasted, attempts),
        )
        self._report()

    def _log_still_paused(self, now: float) -> None:
        if now - self._last_status_log < self.settings.sink.status_log_interval_s:
            return
        self._last_status_log = now
        log.warning(
            "sink still paused after %.0fs (%d failed attempts, %d rows buffered); last error: %s",
            *(
                self.stats.paused_for(),
                self.stats.transient_failures,
                self._buffered(),
                self.stats.last_error,
            ),
        )

    def _pause_assignment(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)

    def _resume_assignment(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.resume(assignment)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._repause = True  # new partitions of a paused sink are paused once the assignment is in place

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            return
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._write_and_commit(only=revoked)  # one attempt: the partitions go now, written or not
        self._forget(revoked, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may own them already, so nothing may be committed for them.
        self._forget({(tp.topic, tp.partition) for tp in partitions}, "lost")

    def _forget(self, partitions: set[Partition], why: str) -> None:
        dropped = sum(b.discard(lambda m: _partition(m) in partitions) for b in self._buffers.values())
        self._ledger.forget(partitions)
        if dropped:
            log.info("%d unwritten rows of %s partitions left to their next owner", dropped, why)

    # ------------------------------------------------------------------ dead letters and status

    def _dead_letter_refused(self, pending: Pending, error: str) -> None:
        message: Message = pending.source
        if message.topic() == self._deadletter_topic:
            log.error(
                "dead letter refused by the %s backend, not re-queued (it would loop): %s",
                self.backend.name,
                error,
            )
            return
        self._send_dead_letter(message, f"{self.backend.name} refused the row: {error}", "insert_error")

    def _send_dead_letter(self, message: Message, reason: str, error_type: str) -> None:
        self.stats.dead_lettered += 1
        letter = DeadLetter.of(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            reason=reason,
            error_type=error_type,
            stage="sink",
        )
        self._producer.produce(self._deadletter_topic, message.key(), letter.model_dump_json().encode())

    def _report(self, what: str = "sink") -> None:
        summary: dict[str, Any] = self.stats.summary()
        log.info("%s: %s", what, summary)
        path = self.settings.pipeline.sink_stats_file
        if path is not None:
            # Replaced whole, so a reader never sees half a file.
            scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            scratch.write_text(json.dumps(summary, indent=2))
            os.replace(scratch, path)
