"""How large an event may be: the free-text field caps and the Kafka message limit.

Pure functions over contract events and settings values (no broker, no client): the SDK applies
them on the caller's thread, the collector to each posted event, so an event the pipeline would
refuse later (librdkafka's ``MSG_SIZE_TOO_LARGE``, after it was acknowledged to the app) is
refused where it is recorded, with an error that names the event and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from infra.settings import FieldCaps
from producers.errors import EventTooLargeError
from producers.wire import event_json
from schemas import FeedbackEvent, InteractionEvent, SupportTicket

#: Bytes librdkafka counts on a message besides its key and value (it counts 36; headroom kept).
KAFKA_OVERHEAD_BYTES: Final = 100

Event = InteractionEvent | FeedbackEvent | SupportTicket

#: The capped fields each event type has, in FieldCaps order (declared once, in FieldCaps).
CAPPED_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {
    model: tuple(name for name in FieldCaps.model_fields if name in model.model_fields)
    for model in (InteractionEvent, FeedbackEvent, SupportTicket)
}


def event_key(event: Event) -> bytes:
    """The Kafka message key of an event: its ``session_id``; a support ticket's ``user_id``."""
    return (event.user_id if isinstance(event, SupportTicket) else event.session_id).encode()


def field_size(value: str | Mapping[str, str] | None) -> int:
    """Characters of a text field, or of a mapping's keys and values together (0 for None)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    return sum(len(k) + len(v) for k, v in value.items())


def oversized_field(
    event: Event, caps: FieldCaps, setting: str = "producer.field_caps"
) -> EventTooLargeError | None:
    """The error for the first field of ``event`` over its cap, or None when all fit."""
    for name in CAPPED_FIELDS[type(event)]:
        size, limit = field_size(getattr(event, name)), getattr(caps, name)
        if size > limit:
            return EventTooLargeError(
                f"event {event.event_id}: {name} has {size:,} characters; the cap is {limit:,} "
                f"({setting}.{name})",
                field=name,
                size=size,
                limit=limit,
            )
    return None


def message_too_large(event_id: object, size: int, max_message_bytes: int) -> EventTooLargeError:
    """The error for a message of ``size`` bytes (key, value and overhead) over the limit."""
    return EventTooLargeError(
        f"event {event_id} is {size:,} bytes as a Kafka message; the limit is {max_message_bytes:,} "
        "(producer.max_message_bytes, as the broker's message.max.bytes): the broker would refuse it",
        field=None,
        size=size,
        limit=max_message_bytes,
    )


def message_bytes(key: bytes | None, value: bytes) -> int:
    """What a message counts against ``max_message_bytes``."""
    return (len(key) if key else 0) + len(value) + KAFKA_OVERHEAD_BYTES


@dataclass(frozen=True)
class EventLimits:
    """The limits one ingest path applies: the message limit and one or more sets of field caps
    (the collector may cap tighter than the producer), each with the setting it comes from."""

    max_message_bytes: int
    caps: tuple[tuple[FieldCaps, str], ...] = ()

    def check(self, event: Event) -> None:
        """Raise :class:`EventTooLargeError` when ``event`` is over a field cap or the message limit."""
        for caps, setting in self.caps:
            if (error := oversized_field(event, caps, setting)) is not None:
                raise error
        size = message_bytes(event_key(event), event_json(event))
        if size > self.max_message_bytes:
            raise message_too_large(event.event_id, size, self.max_message_bytes)


__all__ = [
    "CAPPED_FIELDS",
    "KAFKA_OVERHEAD_BYTES",
    "EventLimits",
    "event_key",
    "field_size",
    "message_bytes",
    "message_too_large",
    "oversized_field",
]
