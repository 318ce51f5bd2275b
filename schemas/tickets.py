"""Support tickets: a lagging indicator of AI quality, published by an app or a help-desk integration.

One :class:`SupportTicket` per ticket on ``ai.support_tickets.v1``, key ``user_id`` (tickets are not
joined in the stream: ClickHouse links a ticket to the interaction it names, see
``sinks/clickhouse/migrations/0014_loop_health.sql``). A ticket published again with the same
``ticket_id`` (a help desk re-syncing, a category corrected) replaces the earlier copy.

``created_at`` follows the contract's event-time rules like every other event: RFC 3339 text with a
zone (a bare number is refused), not before 2000-01-01, and — checked where the ticket is recorded
(SDK, collector) and again by the sink — not further ahead of the wall clock than
``pipeline.max_future_skew_s``.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import Field, StrictBool

from schemas.events import Identifier, Label, Timestamp, _EventBase


class SupportTicket(_EventBase):
    """A support ticket a user opened: its category, whether it is about AI quality, and optionally
    the AI call it is about."""

    ticket_id: Identifier = Field(
        description="The help desk's id of the ticket, e.g. 'ZD-48213'; a ticket published again with the "
        "same id replaces the earlier copy."
    )
    user_id: Identifier = Field(
        description="The end user who opened it, as the application identifies them (the same id its "
        "interactions carry); also the Kafka message key."
    )
    created_at: Timestamp = Field(description="When the ticket was opened, RFC 3339 with zone, ms precision.")
    category: Label = Field(description="The help desk's category, e.g. 'wrong answer', 'billing'.")
    ai_quality: StrictBool = Field(
        description="True when the ticket is about the quality of AI output (the indicator counts these)."
    )
    interaction_id: UUID | None = Field(
        None,
        description="The AI call the ticket is about, when known: the ticket then counts for that "
        "interaction's prompt version (only if the interaction is the same user's).",
    )


__all__ = ["SupportTicket"]
