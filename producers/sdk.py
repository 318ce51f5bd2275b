"""The producer SDK: one client, typed calls for every event, never blocking the host application.

A ``record_*`` call validates the event on the caller's thread (an app bug raises there, not in
the dead-letter queue), checks its size (field caps, the Kafka message limit), serializes it to
the bytes the spool and Kafka take, reserves room for them in the spool's bound, appends them to
a bounded in-memory buffer and returns. Every refusal is an exception the caller sees (the event
was not taken) and a metric; nothing accepted is dropped quietly later. A writer thread moves the
buffer to the client's sender process in large writes (:mod:`producers.sender.process`); that
process (:mod:`producers.sender.loop`) does the rest, on its own interpreter: librdkafka while
the broker is healthy, the on-disk spool (:mod:`producers.sender.spool`) while it is not. The
app's threads never wait for its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self
from uuid import UUID

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from infra.settings import KafkaSettings, PipelineSettings, ProducerSettings, Settings
from producers import assignment as _assignment
from producers.assignment import Assignment
from producers.errors import (
    BufferFullError,
    ClientClosedError,
    EventTimeError,
    EventTooLargeError,
    NotAcceptingError,
)
from producers.limits import (
    KAFKA_OVERHEAD_BYTES,
    event_key,
    message_bytes,
    message_too_large,
    oversized_field,
)
from producers.redaction import Redactor
from producers.sender.ipc import record_frame, topic_prefix
from producers.sender.loop import Mode
from producers.sender.process import SenderProcess, sender_config
from producers.sender.spool import SpoolError, check_spool_root
from producers.signing import InteractionSigner
from producers.wire import event_json, new_id, now_ms
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, SupportTicket, to_epoch_ms, topics
from schemas.events import event_time_error

Event = InteractionEvent | FeedbackEvent | SupportTicket

_validate_interaction = InteractionEvent.model_validate
_validate_feedback = FeedbackEvent.model_validate

__all__ = [
    "BufferFullError",
    "ClientClosedError",
    "Event",
    "EventTooLargeError",
    "FeedbackClient",
    "InteractionLike",
    "InteractionRef",
    "Mode",
    "NotAcceptingError",
    "SpoolError",
    "TimedInteraction",
    "interaction_signer",
]


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


class FeedbackClient:
    """Publish interactions and feedback about AI output; safe to share across threads.

    Build it once per process (``FeedbackClient.from_settings(settings)``), use it as a context
    manager or call :meth:`close`. Every ``record_*`` call is non-blocking and may be called from
    asyncio code directly; :meth:`aclose` / :meth:`aflush` run the blocking parts off the loop.

    With ``producer.redaction`` switched on (or a ``redactor`` given), every event's free text is
    redacted on the caller's thread before it is serialized (see :mod:`producers.redaction`); the
    events the calls return hold the redacted text. With ``producer.interaction_secret`` set,
    :meth:`interaction_token` signs interaction references for web pages.

    The constructor checks that the spool folder can be created and written (raising
    :class:`SpoolError`, which names it, when not), starts the client's sender process and
    returns; events recorded before that process is ready wait in the buffer. A client that is
    garbage-collected unclosed is closed without waiting; one still open at interpreter exit is
    closed then.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        producer: ProducerSettings | None = None,
        *,
        redactor: Redactor | None = None,
        max_future_skew_s: float | None = None,
    ) -> None:
        self.settings = producer or ProducerSettings()
        skew_s = PipelineSettings().max_future_skew_s if max_future_skew_s is None else max_future_skew_s
        self._max_skew_ms = int(skew_s * 1000)
        self._closed = True  # until the sender process is started (__del__ may run on a failed init)
        check_spool_root(self.settings.spool_dir)
        # None when redaction is off: the record_* calls then pay one `is not None` for it.
        self._redactor = redactor or Redactor.from_settings(self.settings.redaction)
        self._signer = interaction_signer(self.settings)
        caps = self.settings.field_caps
        self._caps = caps
        self._prompt_cap, self._response_cap = caps.prompt, caps.response
        self._corrected_cap, self._comment_cap = caps.corrected_output, caps.comment
        self._max_message = self.settings.max_message_bytes
        self._max_payload = self._max_message - KAFKA_OVERHEAD_BYTES  # key and value
        self._close_lock = threading.Lock()
        self._interactions = topic_prefix(topics.topic_name(topics.INTERACTIONS, kafka.topic_namespace))
        self._kafka = kafka  # for experiment(): the record the split is read from
        self._feedback = topic_prefix(topics.topic_name(topics.FEEDBACK, kafka.topic_namespace))
        self._tickets = topic_prefix(topics.topic_name(topics.SUPPORT_TICKETS, kafka.topic_namespace))
        self._link = SenderProcess(sender_config(kafka, self.settings), self.settings.buffer_max_events)
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackClient:
        """A client for the Kafka and producer sections of ``settings``."""
        return cls(settings.kafka, settings.producer, max_future_skew_s=settings.pipeline.max_future_skew_s)

    # -- experiments ---------------------------------------------------------------------------------

    def experiment(self, experiment_id: str, timeout_s: float = 30.0) -> _assignment.Experiment:
        """The assignment of an experiment as its record on ``ai.experiments.v1`` sets it (split included).

        Reads the topic (blocking, up to ``timeout_s``): call it at start-up or cache the result, then
        ``.assign(user_id)`` per request. Raises ``ExperimentNotFoundError`` for an unknown id.
        """
        return _assignment.Experiment.from_record(
            _assignment.read_experiment(self._kafka, experiment_id, timeout_s)
        )

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
        Ids and ``created_at`` (now) are filled in when not given. With redaction on, the prompt,
        response and metadata values are redacted first (the event returned holds the redacted
        text, and ``metadata["redacted.<field>"]`` marks each field that changed). Raises
        ``pydantic.ValidationError`` on invalid input, :class:`EventTooLargeError` for a field over
        its cap (``producer.field_caps``) or an event over ``producer.max_message_bytes``,
        :class:`BufferFullError` when the buffer is full, :class:`NotAcceptingError` when the
        spool could not keep the event (full, or failing to write). In every case the event was
        not taken.
        """
        if assignment is not None:
            if experiment_id is not None or variant is not None:
                raise ValueError("give either assignment or experiment_id/variant, not both")
            experiment_id, variant = assignment.experiment_id, assignment.variant
        created_at_text = None
        if created_at is None:
            created_at, created_at_text = now_ms()
        fields = {
            "event_id": event_id or new_id(),
            "interaction_id": interaction_id or new_id(),
            "user_id": user_id,
            "session_id": session_id,
            "created_at": created_at,
            "prompt": prompt,
            "prompt_version": prompt_version,
            "model": model,
            "response": response,
            "response_time_ms": response_time_ms,
            "regenerated_from": regenerated_from,
            "input_category": input_category,
            "experiment_id": experiment_id,
            "variant": variant,
            "metadata": metadata if metadata is not None else {},
        }
        redacted = self._redactor is not None and self._redactor.redact_interaction(fields)
        # model_validate on a dict: the same validation as keyword construction, ~2 µs less.
        event = _validate_interaction(fields)
        if created_at_text is None:  # the app's own time, not now: it may be from a broken clock
            self._check_time(event)
        # Validated: prompt and response are str. A few comparisons; the full check on a miss.
        if redacted or len(prompt) > self._prompt_cap or len(response) > self._response_cap or metadata:
            self._check_fields(event)
        key = event.session_id.encode()
        value = event_json(event, created_at_text)
        if len(key) + len(value) > self._max_payload:
            raise message_too_large(event.event_id, message_bytes(key, value), self._max_message)
        self._link.put(record_frame(self._interactions, key, value))
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
        """Record any feedback event; the typed calls below are shortcuts for it.

        With redaction on, ``corrected_output`` and ``comment`` are redacted first (the placeholders
        are the mark: feedback events have no metadata).
        """
        created_at_text = None
        if created_at is None:
            created_at, created_at_text = now_ms()
        fields = {
            "event_id": event_id or new_id(),
            "interaction_id": interaction.interaction_id,
            "user_id": interaction.user_id,
            "session_id": interaction.session_id,
            "created_at": created_at,
            "feedback_type": feedback_type,
            "corrected_output": corrected_output,
            "copied_chars": copied_chars,
            "dwell_ms": dwell_ms,
            "comment": comment,
        }
        redacted = self._redactor is not None and self._redactor.redact_feedback(fields)
        event = _validate_feedback(fields)
        if created_at_text is None:
            self._check_time(event)
        if (
            redacted
            or (corrected_output is not None and len(corrected_output) > self._corrected_cap)
            or (comment is not None and len(comment) > self._comment_cap)
        ):
            self._check_fields(event)
        key = event.session_id.encode()
        value = event_json(event, created_at_text)
        if len(key) + len(value) > self._max_payload:
            raise message_too_large(event.event_id, message_bytes(key, value), self._max_message)
        self._link.put(record_frame(self._feedback, key, value))
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

    def record_support_ticket(
        self,
        *,
        user_id: str,
        category: str,
        ai_quality: bool,
        ticket_id: str | None = None,
        interaction_id: UUID | None = None,
        event_id: UUID | None = None,
        created_at: datetime | None = None,
    ) -> SupportTicket:
        """Record a support ticket the user opened (from the app, or a help-desk integration).

        ``ai_quality``: whether it is about the quality of AI output; ``interaction_id``: the AI call it
        is about, when known (it then counts for that interaction's prompt version, if the interaction
        is this user's). ``ticket_id`` is the help desk's id (default: the event id); publishing a ticket
        again with the same id replaces it. ``created_at`` defaults to now; one further ahead of the
        wall clock than the pipeline accepts raises :class:`EventTimeError`. Otherwise raises as
        :meth:`record_interaction` does; in every case the ticket was not taken.
        """
        event_id = event_id or new_id()
        ticket = SupportTicket(
            event_id=event_id,
            ticket_id=ticket_id if ticket_id is not None else str(event_id),
            user_id=user_id,
            created_at=created_at if created_at is not None else now_ms()[0],
            category=category,
            ai_quality=ai_quality,
            interaction_id=interaction_id,
        )
        self._enqueue(ticket)
        return ticket

    # -- signed interaction references ---------------------------------------------------------------

    def interaction_token(self, interaction: InteractionLike) -> str:
        """The token a web page sends with events about ``interaction`` (its ``interaction_token``
        field), so the collector knows the app server vouched for these ids (docs/security.md).

        An HMAC over the interaction id, user id and session id with ``producer.interaction_secret``.
        Takes what ``record_interaction`` returned, a ``TimedInteraction``'s ``.event`` or an
        :class:`InteractionRef` of stored ids; costs ~2 µs, and nothing unless called. Raises
        ``RuntimeError`` when no secret is configured.
        """
        if self._signer is None:
            raise RuntimeError(
                "no producer.interaction_secret is configured (FEEDBACKLOOP_PRODUCER__INTERACTION_SECRET): "
                "interaction tokens need one, the same in the app and the collector"
            )
        return self._signer.token(interaction.interaction_id, interaction.user_id, interaction.session_id)

    # -- pre-built events ----------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Accept one validated contract event (redacted first, as the ``record_*`` calls do);
        raises as they do."""
        self._enqueue(event)

    def publish_many(self, events: Sequence[Event], *, redact: bool = True) -> None:
        """Accept all of ``events`` or none (the collector's path).

        The events are redacted first when redaction is on, unless ``redact`` is False (the
        collector redacts each posted event itself, to answer for each). :class:`EventTooLargeError`
        names the first event over a limit; :class:`BufferFullError` and :class:`NotAcceptingError`
        refuse the whole batch.
        """
        self._link.put_many([self._frame(event, redact) for event in events])

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Accept raw bytes for any topic (tools and tests); no validation and no redaction, but the
        message limit."""
        if (size := message_bytes(key, value)) > self._max_message:
            raise message_too_large(f"of {len(value)} bytes for {topic}", size, self._max_message)
        self._link.put(record_frame(topic_prefix(topic), key, value))

    def _enqueue(self, event: Event) -> None:
        self._link.put(self._frame(event))

    def _frame(self, event: Event, redact: bool = True) -> bytes:
        # Serialized here, on the caller's thread (the record_* calls inline this): bytes cost
        # the app's process nothing more (no GC tracking, one system call for many), and the
        # sender process spools them as they are.
        if isinstance(event, SupportTicket):
            return self._ticket_frame(event)
        self._check_time(event)
        if redact and self._redactor is not None:
            event = self._redactor.redact_event(event)
        self._check_fields(event)
        key = event.session_id.encode()
        value = event_json(event)
        if len(key) + len(value) > self._max_payload:
            raise message_too_large(event.event_id, message_bytes(key, value), self._max_message)
        prefix = self._interactions if isinstance(event, InteractionEvent) else self._feedback
        return record_frame(prefix, key, value)

    def _ticket_frame(self, ticket: SupportTicket) -> bytes:
        """A ticket's frame: on its own topic, keyed by ``user_id`` (a ticket has no session)."""
        self._check_time(ticket)
        key = event_key(ticket)
        value = event_json(ticket)
        if len(key) + len(value) > self._max_payload:
            raise message_too_large(ticket.event_id, message_bytes(key, value), self._max_message)
        return record_frame(self._tickets, key, value)

    def _check_time(self, event: Event) -> None:
        """Refuse an event dated further ahead of the wall clock than the pipeline accepts."""
        reason = event_time_error(
            to_epoch_ms(event.created_at), time.time_ns() // 1_000_000, self._max_skew_ms
        )
        if reason is not None:
            raise EventTimeError(reason)

    def _check_fields(self, event: Event) -> None:
        if (error := oversized_field(event, self._caps)) is not None:
            raise error

    # -- state for callers ---------------------------------------------------------------------------

    @property
    def redactor(self) -> Redactor | None:
        """What redacts this client's events (None: redaction is off)."""
        return self._redactor

    @property
    def mode(self) -> Mode:
        """Where new events currently go."""
        return self._link.mode

    @property
    def spool_dir(self) -> Path:
        """The spool slot this client's sender process holds (waits until it has opened it)."""
        return self._link.spool_dir()

    @property
    def sender_pid(self) -> int | None:
        """The process id of the client's sender process (None before it started, after it exited)."""
        return self._link.sender_pid

    @property
    def spool_has_room(self) -> bool:
        """False while the spool's bound is (nearly) taken by what is spooled plus what may still
        need spooling (everything accepted and not yet acknowledged): new events are refused then."""
        link = self._link
        return link.reserved_bytes < link.budget - min(64 << 10, link.budget // 10)

    @property
    def accepting(self) -> bool:
        """Whether a new event would be accepted and could be kept (open, buffer and spool have
        room, the spool takes writes, the sender process runs). ``/healthz`` of the collector."""
        link = self._link
        return (
            not link.closing
            and link.healthy
            and link.fault == 0
            and link.buffered < self.settings.buffer_max_events
            and self.spool_has_room
        )

    def not_accepting_reason(self) -> str:
        """Why events are refused now ("" when they are not), for an operator or an HTTP answer."""
        reason = self._link.not_accepting_reason()
        if not reason and not self.spool_has_room:
            reason = "the spool's bound is nearly reached (producer.spool_max_bytes)"
        if not reason and self._link.buffered >= self.settings.buffer_max_events:
            reason = "the buffer is full (producer.buffer_max_events)"
        return reason

    def metrics(self) -> dict[str, int]:
        """Counters and gauges: sent, failed, spooled, dropped, replayed, rejected, refused, buffered, ...

        ``sent``/``failed``: delivery reports (success / permanent failure); ``spooled``: records
        written to the spool; ``replayed``: records handed from the spool to librdkafka;
        ``dropped``: accepted and lost (with a sender process that died, or at close when neither
        the broker nor the spool took them); ``rejected``: refused at the call site because the
        buffer was full (BufferFullError); ``refused``: refused at the call site because they
        could not be kept (NotAcceptingError); ``spool_write_errors``: failed spool writes;
        ``spool_skipped``: damaged or torn spool records skipped on replay. Gauges: ``buffered``
        (in this process, the pipe and the sender process, not yet handed to librdkafka or the
        spool), ``unwritten`` (of those, still in this process: what a SIGKILL of the app would
        lose), ``in_flight``, ``spool_bytes``, ``spool_pending_bytes``, ``spooling`` (1 in spool
        mode), ``reserved_bytes`` (held against ``spool_max_bytes``), ``spool_fault`` (errno of a
        failing spool, 0 when fine), ``accepting`` (1 while events are accepted). The sender
        process's values come from shared memory: reading them costs no message.
        """
        values = self._link.metrics()
        values["accepting"] = int(self.accepting)
        return values

    def prometheus_collector(self) -> Collector:
        """A Prometheus collector of :meth:`metrics`, read at scrape time (no cost per event)."""
        return _MetricsCollector(self)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Expose :meth:`metrics` in ``registry`` (e.g. ``prometheus_client.REGISTRY``)."""
        registry.register(self.prometheus_collector())

    # -- flush and close -----------------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every event accepted before the call is acknowledged by the broker; False on timeout.

        On False nothing is lost: what is not acknowledged is on its way to the sender process,
        in librdkafka or in the spool.
        """
        return self._link.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting, deliver what the broker takes within ``timeout_s``, spool the rest.

        Returns once the sender process has exited.
        """
        with self._close_lock:
            if self._closed:
                return
            self._link.close(self.settings.close_timeout_s if timeout_s is None else timeout_s)
            self._closed = True

    def __del__(self) -> None:
        # Best effort, never blocking, taking no lock (the garbage collector may run this in any
        # thread, at any allocation): the writer thread sends what is buffered and the close,
        # and reaps the sender process.
        with contextlib.suppress(Exception):
            if not self._closed:
                self._link.close_soon(self.settings.close_timeout_s)

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


def interaction_signer(settings: ProducerSettings) -> InteractionSigner | None:
    """The signer of ``producer.interaction_secret`` (and the previous secrets), None without one."""
    if settings.interaction_secret is None:
        return None
    return InteractionSigner(
        settings.interaction_secret.get_secret_value().encode(),
        [secret.get_secret_value().encode() for secret in settings.interaction_previous_secrets],
    )


_COUNTERS: Final = {
    "sent": "Events acknowledged by the broker.",
    "failed": "Events the broker or client refused for good.",
    "spooled": "Events written to the on-disk spool.",
    "replayed": "Spooled events handed to the Kafka client again.",
    "dropped": "Accepted events lost: with a sender process that died, or at close when neither the "
    "broker nor the spool took them.",
    "rejected": "Events refused at the call site because the buffer was full.",
    "refused": "Events refused at the call site because they could not be kept (spool bound reached, "
    "spool failing to write, sender process not running).",
    "spool_write_errors": "Spool writes that failed (disk full, read-only, permissions).",
    "spool_skipped": "Damaged or torn spool records skipped when reading the spool back.",
}
_GAUGES: Final = {
    "buffered": "Events accepted and not yet handed to the Kafka client or the spool.",
    "unwritten": "Events still in the app's process, not yet written to the sender process: "
    "what killing the app (SIGKILL) would lose.",
    "in_flight": "Events handed to the Kafka client and not yet acknowledged.",
    "spool_bytes": "Bytes of the spool's segment files.",
    "spool_pending_bytes": "Bytes of spooled events not yet acknowledged.",
    "spooling": "1 while new events go through the spool (broker unwell or spool not drained).",
    "reserved_bytes": "Bytes held against the spool bound: spooled, or accepted and not yet settled.",
    "spool_fault": "The errno of why the spool takes no writes now (0 when it does).",
    "accepting": "1 while new events are accepted and could be kept.",
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
