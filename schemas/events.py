"""The events applications publish: one interaction per AI call, one feedback per user action.

These models are the contract every stage shares. They are frozen, reject unknown fields and
do not coerce types (``"12"`` is not an int). JSON on the wire is UTF-8; the message key is
``session_id``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal, Self
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1


_MINUTE_PREFIX: dict[int, str] = {}


def format_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC text with milliseconds, e.g. ``2026-11-26T10:00:00.123Z``, of epoch milliseconds."""
    minutes, millis = divmod(epoch_ms, 60_000)
    prefix = _MINUTE_PREFIX.get(minutes)
    if prefix is None:
        # Events of one minute share the prefix; strftime per call was a tenth of a worker's time.
        if len(_MINUTE_PREFIX) >= 65_536:
            _MINUTE_PREFIX.clear()
        t = time.gmtime(minutes * 60)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        _MINUTE_PREFIX[minutes] = prefix
    seconds, millis = divmod(millis, 1000)
    return f"{prefix}{seconds:02d}.{millis:03d}Z"


_MINUTE_MS: dict[str, int] = {}
_CANONICAL_MINUTE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):")
_ASCII_DIGITS = frozenset("0123456789")


def parse_canonical_ms(text: str) -> int | None:
    """Epoch milliseconds of a timestamp in the form :func:`format_ms` writes
    (``2026-11-26T10:00:00.123Z``) within the contract's bounds, else None (not that form: let the
    model parse it). Its inverse; what the models accept in that form they accept unchanged."""
    if len(text) != 24 or text[19] != "." or text[23] != "Z":
        return None
    seconds, millis = text[17:19], text[20:23]
    if not _ASCII_DIGITS.issuperset(seconds) or not _ASCII_DIGITS.issuperset(millis) or seconds > "59":
        return None
    prefix = text[:17]
    minute_ms = _MINUTE_MS.get(prefix)
    if minute_ms is None:
        match = _CANONICAL_MINUTE.fullmatch(prefix)
        if match is None or not match.group(0).isascii():
            return None
        try:
            year, month, day, hour, minute = (int(g) for g in match.groups())
            moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
        except ValueError:  # 2026-02-30 and the like
            return None
        minute_ms = round(moment.timestamp() * 1000)
        if len(_MINUTE_MS) >= 65_536:
            _MINUTE_MS.clear()
        _MINUTE_MS[prefix] = minute_ms
    epoch_ms = minute_ms + int(seconds) * 1000 + int(millis)
    if not EVENT_TIME_FLOOR_MS <= epoch_ms <= EVENT_TIME_CEILING_MS:
        return None
    return epoch_ms


def to_epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime (rounded: floats are not exact)."""
    return round(value.timestamp() * 1000)


def format_timestamp(value: datetime) -> str:
    """Render a timestamp as RFC 3339 in UTC with millisecond precision, e.g. ``2026-11-26T10:00:00.123Z``."""
    return format_ms(to_epoch_ms(value))


#: A timezone-aware timestamp, kept at millisecond precision and written as RFC 3339 UTC.
Timestamp = Annotated[AwareDatetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]
Identifier = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]
Label = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(strict=True)]

#: The longest duration the contract takes as plausible (24 h in ms): a latency or a dwell above it
#: is a unit or clock bug of the sender, and would skew every average it entered.
MAX_DURATION_MS = 24 * 3600 * 1000
#: The most characters a copy can plausibly take (far above any response an app shows).
MAX_COPIED_CHARS = 10_000_000


def _truncate_to_ms(value: datetime) -> datetime:
    extra = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - extra) if extra else value


#: The earliest event time the contract accepts (2000-01-01T00:00:00Z): anything older is a broken or
#: forged clock, and would only open empty partitions and windows downstream.
EVENT_TIME_FLOOR_MS: Final = 946_684_800_000
#: The latest event time the contract can write and read back (9999-12-31T23:59:59.999Z).
EVENT_TIME_CEILING_MS: Final = 253_402_300_799_999


def event_time_error(created_ms: int, now_ms: int, max_future_skew_ms: int) -> str | None:
    """Why an event created at ``created_ms`` must be refused at wall-clock time ``now_ms``, or None.

    The one rule the SDK, the collector and the processors share for the upper bound: an event dated
    more than ``max_future_skew_ms`` ahead of the wall clock is a forged or broken clock, and is never
    allowed to move event time (watermarks, windows, the evaluator's clock). The lower bound
    (:data:`EVENT_TIME_FLOOR_MS`) is checked by the models themselves.
    """
    ahead = created_ms - now_ms
    if ahead > max_future_skew_ms:
        return (
            f"created_at {format_ms(created_ms)} is {ahead / 1000:.0f}s ahead of the wall clock "
            f"({format_ms(now_ms)}); at most {max_future_skew_ms / 1000:.0f}s of clock skew is accepted "
            "(FEEDBACKLOOP_PIPELINE__MAX_FUTURE_SKEW_S)"
        )
    return None


class _EventBase(BaseModel):
    """What every event an application publishes shares: its schema version, its id, and the rules of
    its ``created_at`` (subclasses declare that field where their field order wants it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this event's schema.")
    event_id: UUID = Field(description="Unique per event; a redelivered event keeps its id.")

    @field_validator("created_at", mode="before", check_fields=False)
    @classmethod
    def _text_only(cls, value: object) -> object:
        # A bare number is ambiguous (seconds or milliseconds?) and not RFC 3339: refuse it.
        if isinstance(value, int | float):
            raise ValueError("created_at must be an RFC 3339 string with a zone, not a number")
        return value

    @field_validator("created_at", check_fields=False)
    @classmethod
    def _ms_precision(cls, value: datetime) -> datetime:
        value = _truncate_to_ms(value)
        epoch_ms = to_epoch_ms(value)
        if epoch_ms < EVENT_TIME_FLOOR_MS:
            raise ValueError(
                f"created_at {value.isoformat()} is before 2000-01-01T00:00:00Z, the earliest accepted"
            )
        if epoch_ms > EVENT_TIME_CEILING_MS:
            raise ValueError(
                f"created_at {value.isoformat()} is after 9999-12-31, the latest that can be written"
            )
        return value


class _Event(_EventBase):
    interaction_id: UUID = Field(description="The AI call this event is about.")
    user_id: Identifier = Field(description="The end user, as the application identifies them.")
    session_id: Identifier = Field(description="The user's session; also the Kafka message key.")
    created_at: Timestamp = Field(description="When it happened, RFC 3339 with zone, ms precision.")


class InteractionEvent(_Event):
    """One AI call: what was asked, with which prompt version and model, and what came back."""

    prompt: Text = Field(description="The user's input as sent to the model (after templating is fine).")
    prompt_version: Label = Field(description="Version label of the prompt template, e.g. 'v1.1'.")
    model: Label = Field(description="Model name, e.g. 'gpt-4o-mini'.")
    response: Text = Field(description="The model's output as shown to the user.")
    response_time_ms: StrictInt = Field(
        ge=0, le=MAX_DURATION_MS, description="Latency of the AI call in milliseconds."
    )
    regenerated_from: UUID | None = Field(
        None, description="Set when this call answers a regenerate of that earlier interaction."
    )
    input_category: Label | None = Field(None, description="The app's label of the input type.")
    experiment_id: Label | None = Field(None, description="A/B experiment this call took part in.")
    variant: Label | None = Field(None, description="Variant of that experiment the user was assigned to.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Free-form string labels.")

    @model_validator(mode="after")
    def _not_own_regeneration(self) -> Self:
        if self.regenerated_from == self.interaction_id:
            raise ValueError("regenerated_from must name an earlier interaction, not this one")
        if (self.experiment_id is None) != (self.variant is None):
            raise ValueError("experiment_id and variant are given together or not at all")
        return self


class FeedbackType(StrEnum):
    """What the user did with a response."""

    REGENERATE = "regenerate"
    EDIT = "edit"
    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    COPY = "copy"
    ACCEPT = "accept"
    VIEW_END = "view_end"


#: The field each feedback type requires; no other type may carry it.
_REQUIRED_FIELD: dict[FeedbackType, str] = {
    FeedbackType.EDIT: "corrected_output",
    FeedbackType.COPY: "copied_chars",
    FeedbackType.VIEW_END: "dwell_ms",
}


class FeedbackEvent(_Event):
    """One user action on a response. The type decides which optional field is required."""

    feedback_type: FeedbackType = Field(
        description="regenerate | edit | thumbs_up | thumbs_down | copy | ..."
    )
    corrected_output: Text | None = Field(None, description="The user's corrected text (edit only).")
    copied_chars: StrictInt | None = Field(
        None, ge=0, le=MAX_COPIED_CHARS, description="Characters of the response copied (copy only)."
    )
    dwell_ms: StrictInt | None = Field(
        None, ge=0, le=MAX_DURATION_MS, description="How long the response was on screen (view_end only)."
    )
    comment: str | None = Field(None, max_length=10_000, description="Optional free text from the user.")

    @model_validator(mode="after")
    def _fields_match_type(self) -> Self:
        required = _REQUIRED_FIELD.get(self.feedback_type)
        if required is not None and getattr(self, required) is None:
            raise ValueError(f"{required} is required when feedback_type is '{self.feedback_type}'")
        for feedback_type, field in _REQUIRED_FIELD.items():
            if field != required and getattr(self, field) is not None:
                raise ValueError(f"{field} is only allowed when feedback_type is '{feedback_type}'")
        return self
