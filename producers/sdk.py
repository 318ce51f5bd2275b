"""The producer SDK: one client, typed calls for every event, never blocking the host application.

A ``record_*`` call validates the event on the caller's thread (an app bug raises there, not in
the dead-letter queue), appends it to a bounded in-memory buffer and returns. The sender thread
(:mod:`producers.sender`) does the rest: librdkafka while the broker is healthy, the on-disk
spool (:mod:`producers.spool`) while it is not.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self
from uuid import UUID

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from feedbackloop.settings import KafkaSettings, ProducerSettings, Settings
from producers.assignment import Assignment
from producers.sender import Event, Item, Mode, Sender
from producers.wire import new_id
from schemas import FeedbackEvent, FeedbackType, InteractionEvent

__all__ = [
    "BufferFullError",
    "ClientClosedError",
    "Event",
    "FeedbackClient",
    "InteractionLike",
    "InteractionRef",
    "Mode",
    "TimedInteraction",
]


class BufferFullError(RuntimeError):
    """The in-memory buffer is full: the sender thread cannot keep up. The event was not accepted."""


class ClientClosedError(RuntimeError):
    """The client was closed; it accepts no more events."""


class InteractionLike(Protocol):
    """What a feedback call needs to know about the interaction it is about.

    An :class:`~schemas.InteractionEvent` (as returned by ``record_interaction``) fits, and so does
    an :class:`InteractionRef` built from ids the app stored.
    """

    @property
    def interaction_id(self) -> UUID: ...

    @property
    def user_id(self) -> str: ...

    @property
    def session_id(self) -> str: ...


@dataclass(frozen=True)
class InteractionRef:
    """The ids of an interaction, for feedback that arrives where the full event is not at hand."""

    interaction_id: UUID
    user_id: str
    session_id: str


# Open clients, held strongly: a client owns a thread and a spool lock, so like a file it lives
# until closed, and a forgotten close() still happens at interpreter exit (buffer -> spool).
_open_clients: set[FeedbackClient] = set()
_open_clients_lock = threading.Lock()


@atexit.register
def _close_open_clients() -> None:
    with _open_clients_lock:
        clients = list(_open_clients)
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()


class FeedbackClient:
    """Publish interactions and feedback about AI output; safe to share across threads.

    Build it once (``FeedbackClient.from_settings(settings)``), use it as a context manager
    or call :meth:`close`. Every ``record_*`` call is non-blocking and may be called from
    asyncio code directly; :meth:`aclose` / :meth:`aflush` run the blocking parts off the loop.
    """

    def __init__(self, kafka: KafkaSettings, producer: ProducerSettings | None = None) -> None:
        self.settings = producer or ProducerSettings()
        self._buffer: collections.deque[Item] = collections.deque()
        self._buffer_max = self.settings.buffer_max_events
        self._closing = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._rejected = 0
        self._accept_lock = threading.Lock()
        self._sender = Sender(kafka, self.settings, self._buffer)
        with _open_clients_lock:
            _open_clients.add(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackClient:
        """A client for the Kafka and producer sections of ``settings``."""
        return cls(settings.kafka, settings.producer)

    # -- typed calls ---------------------------------------------------------------------------------

    def record_interaction(
        self,
        *,
        user_id: str,
        session_id: str,
        prompt: str,
        response: str,
        prompt_version: str,
        model: str,
        response_time_ms: int,
        regenerated_from: UUID | None = None,
        input_category: str | None = None,
        assignment: Assignment | None = None,
        experiment_id: str | None = None,
        variant: str | None = None,
        metadata: dict[str, str] | None = None,
        interaction_id: UUID | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> InteractionEvent:
        """Record one AI call and return its event (pass it to the feedback calls).

        ``assignment`` (from :meth:`Experiment.assign`) fills ``experiment_id`` and ``variant``.
        Ids and ``created_at`` (now) are filled in when not given. Raises
        ``pydantic.ValidationError`` on invalid input, :class:`BufferFullError` when the buffer is full.
        """
        if assignment is not None:
            if experiment_id is not None or variant is not None:
                raise ValueError("give either assignment or experiment_id/variant, not both")
            experiment_id, variant = assignment.experiment_id, assignment.variant
        event = InteractionEvent(
            event_id=event_id or new_id(),
            interaction_id=interaction_id or new_id(),
            user_id=user_id,
            session_id=session_id,
            created_at=created_at or datetime.now(UTC),
            prompt=prompt,
            prompt_version=prompt_version,
            model=model,
            response=response,
            response_time_ms=response_time_ms,
            regenerated_from=regenerated_from,
            input_category=input_category,
            experiment_id=experiment_id,
            variant=variant,
            metadata=metadata if metadata is not None else {},
        )
        self._enqueue(event)
        return event

    def time_interaction(
        self,
        *,
        user_id: str,
        session_id: str,
        prompt: str,
        prompt_version: str,
        model: str,
        regenerated_from: UUID | None = None,
        input_category: str | None = None,
        assignment: Assignment | None = None,
        metadata: dict[str, str] | None = None,
    ) -> TimedInteraction:
        """A context manager that times the AI call in its block and records it on exit.

        Set ``.response`` inside the block; ``.interaction_id`` is known before the call.
        Nothing is recorded when the block raises. Works with ``with`` and ``async with``.
        """
        return TimedInteraction(
            self,
            {
                "user_id": user_id,
                "session_id": session_id,
                "prompt": prompt,
                "prompt_version": prompt_version,
                "model": model,
                "regenerated_from": regenerated_from,
                "input_category": input_category,
                "assignment": assignment,
                "metadata": metadata,
            },
        )

    def record_feedback(
        self,
        interaction: InteractionLike,
        feedback_type: FeedbackType,
        *,
        corrected_output: str | None = None,
        copied_chars: int | None = None,
        dwell_ms: int | None = None,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record any feedback event; the typed calls below are shortcuts for it."""
        event = FeedbackEvent(
            event_id=event_id or new_id(),
            interaction_id=interaction.interaction_id,
            user_id=interaction.user_id,
            session_id=interaction.session_id,
            created_at=created_at or datetime.now(UTC),
            feedback_type=feedback_type,
            corrected_output=corrected_output,
            copied_chars=copied_chars,
            dwell_ms=dwell_ms,
            comment=comment,
        )
        self._enqueue(event)
        return event

    def record_regenerate(
        self,
        interaction: InteractionLike,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> UUID:
        """Record that the user asked for another answer; return the id to pass as ``regenerated_from``."""
        self.record_feedback(
            interaction, FeedbackType.REGENERATE, comment=comment, event_id=event_id, created_at=created_at
        )
        return interaction.interaction_id

    def record_edit(
        self,
        interaction: InteractionLike,
        corrected_output: str,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record the user's corrected text (the original is the interaction's response)."""
        return self.record_feedback(
            interaction,
            FeedbackType.EDIT,
            corrected_output=corrected_output,
            comment=comment,
            event_id=event_id,
            created_at=created_at,
        )

    def record_thumbs_up(
        self,
        interaction: InteractionLike,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record a thumbs up, with an optional comment."""
        return self.record_feedback(
            interaction, FeedbackType.THUMBS_UP, comment=comment, event_id=event_id, created_at=created_at
        )

    def record_thumbs_down(
        self,
        interaction: InteractionLike,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record a thumbs down, with an optional comment."""
        return self.record_feedback(
            interaction, FeedbackType.THUMBS_DOWN, comment=comment, event_id=event_id, created_at=created_at
        )

    def record_copy(
        self,
        interaction: InteractionLike,
        copied_chars: int,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record that the user copied ``copied_chars`` characters of the response."""
        return self.record_feedback(
            interaction,
            FeedbackType.COPY,
            copied_chars=copied_chars,
            comment=comment,
            event_id=event_id,
            created_at=created_at,
        )

    def record_accept(
        self,
        interaction: InteractionLike,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record that the user accepted the response as is."""
        return self.record_feedback(
            interaction, FeedbackType.ACCEPT, comment=comment, event_id=event_id, created_at=created_at
        )

    def record_view_end(
        self,
        interaction: InteractionLike,
        dwell_ms: int,
        *,
        comment: str | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> FeedbackEvent:
        """Record that the response left the screen after ``dwell_ms`` milliseconds."""
        return self.record_feedback(
            interaction,
            FeedbackType.VIEW_END,
            dwell_ms=dwell_ms,
            comment=comment,
            event_id=event_id,
            created_at=created_at,
        )

    # -- pre-built events ----------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Accept one validated contract event (the collector's path)."""
        self._enqueue(event)

    def publish_many(self, events: Sequence[Event]) -> None:
        """Accept all of ``events`` or, when the buffer cannot take them all, none (BufferFullError)."""
        with self._accept_lock:
            if self._closing:
                raise ClientClosedError("this FeedbackClient is closed")
            if len(self._buffer) + len(events) > self._buffer_max:
                self._reject(len(events))
            self._buffer.extend(events)
        self._sender.notify()

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Accept raw bytes for any topic (tools and tests); no validation."""
        self._append((topic, key, value))

    def _enqueue(self, event: Event) -> None:
        self._append(event)

    def _append(self, item: Item) -> None:
        # The lock (uncontended: ~0.1 µs) makes "closed" final: no event can slip into the
        # buffer after close() has drained it.
        with self._accept_lock:
            if self._closing:
                raise ClientClosedError("this FeedbackClient is closed")
            if len(self._buffer) >= self._buffer_max:
                self._reject(1)
            self._buffer.append(item)
        self._sender.notify()

    def _reject(self, count: int) -> None:
        self._rejected += count  # under _accept_lock
        raise BufferFullError(
            f"the producer buffer holds {len(self._buffer)} of {self._buffer_max} events; "
            f"{count} more refused (raise producer.buffer_max_events, or the broker/disk is too slow)"
        )

    # -- state for callers ---------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """Where new events currently go."""
        return self._sender.mode

    @property
    def spool_dir(self) -> Path:
        """The spool slot this client holds."""
        return self._sender.spool_dir

    @property
    def spool_has_room(self) -> bool:
        """False while new events go to a spool that is (nearly) full, i.e. would be dropped."""
        max_bytes = self.settings.spool_max_bytes
        room = self._sender.spool_bytes < max_bytes - min(64 << 10, max_bytes // 10)
        return self._sender.mode is Mode.DIRECT or room

    @property
    def accepting(self) -> bool:
        """Whether a new event would be accepted without loss (open, buffer and spool have room)."""
        return not self._closing and len(self._buffer) < self._buffer_max and self.spool_has_room

    def metrics(self) -> dict[str, int]:
        """Counters and gauges: sent, failed, spooled, dropped, replayed, rejected, buffered, ...

        ``sent``/``failed``: delivery reports (success / permanent failure); ``spooled``: records
        written to the spool; ``replayed``: records handed from the spool to librdkafka;
        ``dropped``: lost because the spool was full; ``rejected``: refused at the call site
        (BufferFullError). Gauges: ``buffered``, ``in_flight``, ``spool_bytes``,
        ``spool_pending_bytes``, ``spooling`` (1 in spool mode).
        """
        sender = self._sender
        out = dict(sender.counts)
        out.update(
            rejected=self._rejected,
            buffered=len(self._buffer),
            in_flight=sender.in_flight,
            spool_bytes=sender.spool_bytes,
            spool_pending_bytes=sender.spool_pending_bytes,
            spooling=int(sender.mode is Mode.SPOOL),
        )
        return out

    def prometheus_collector(self) -> Collector:
        """A Prometheus collector of :meth:`metrics`, read at scrape time (no cost per event)."""
        return _MetricsCollector(self)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Expose :meth:`metrics` in ``registry`` (e.g. ``prometheus_client.REGISTRY``)."""
        registry.register(self.prometheus_collector())

    # -- flush and close -----------------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted event is acknowledged by the broker; False on timeout.

        On False nothing is lost: what is not acknowledged is in librdkafka or in the spool.
        """
        return self._sender.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, deliver what the broker takes within ``timeout_s``, spool the rest."""
        with self._close_lock:
            if self._closed:
                return
            with self._accept_lock:
                self._closing = True
            self._sender.close(self.settings.close_timeout_s if timeout_s is None else timeout_s)
            self._closed = True
            with _open_clients_lock:
                _open_clients.discard(self)

    async def aflush(self, timeout_s: float = 30.0) -> bool:
        """:meth:`flush` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class TimedInteraction:
    """Times an AI call and records the interaction when the block exits without an error."""

    def __init__(self, client: FeedbackClient, fields: dict[str, Any]) -> None:
        self._client = client
        self._fields = fields
        self.interaction_id: UUID = new_id()
        self.response: str | None = None
        self.metadata: dict[str, str] = dict(fields.pop("metadata") or {})
        self.event: InteractionEvent | None = None
        self._started = 0.0

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed_ms = int((time.perf_counter() - self._started) * 1000)
        if exc_type is not None:
            return
        if self.response is None:
            raise ValueError("set .response inside the time_interaction block")
        self.event = self._client.record_interaction(
            **self._fields,
            response=self.response,
            response_time_ms=elapsed_ms,
            metadata=self.metadata,
            interaction_id=self.interaction_id,
        )

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


_COUNTERS: Final = {
    "sent": "Events acknowledged by the broker.",
    "failed": "Events the broker or client refused for good.",
    "spooled": "Events written to the on-disk spool.",
    "replayed": "Spooled events handed to the Kafka client again.",
    "dropped": "Events lost because the spool was full.",
    "rejected": "Events refused at the call site because the buffer was full.",
}
_GAUGES: Final = {
    "buffered": "Events in the in-memory buffer.",
    "in_flight": "Events handed to the Kafka client and not yet acknowledged.",
    "spool_bytes": "Bytes of the spool's segment files.",
    "spool_pending_bytes": "Bytes of spooled events not yet acknowledged.",
    "spooling": "1 while new events go through the spool (broker unwell or spool not drained).",
}


class _MetricsCollector(Collector):
    def __init__(self, client: FeedbackClient) -> None:
        self._client = weakref.ref(client)

    def collect(self) -> Iterable[Metric]:
        client = self._client()
        if client is None:
            return []
        values = client.metrics()
        label = [client.settings.client_id]
        out: list[Metric] = []
        for name, doc in _COUNTERS.items():
            counter = CounterMetricFamily(f"feedbackloop_producer_{name}", doc, labels=["client"])
            counter.add_metric(label, values[name])
            out.append(counter)
        for name, doc in _GAUGES.items():
            gauge = GaugeMetricFamily(f"feedbackloop_producer_{name}", doc, labels=["client"])
            gauge.add_metric(label, values[name])
            out.append(gauge)
        return out
