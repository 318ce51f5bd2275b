"""From raw input message to contract event, or to a clear reason why not."""

from __future__ import annotations

from pydantic import ValidationError

from schemas import FeedbackEvent, InteractionEvent
from stream_processors.signals.outcome import Feedback, Interaction
from stream_processors.state import Emit, LostEvent, PartitionState


class InvalidInputError(ValueError):
    """A message that is not a valid event of its topic; it belongs in the dead-letter topic."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def decode_input(
    is_interaction: bool, key: bytes | str | None, value: bytes | None
) -> InteractionEvent | FeedbackEvent:
    """Validate one input message against the contract; raise :class:`InvalidInputError` if it is not."""
    if value is None:
        raise InvalidInputError("the message has no value (a tombstone is not an event)", "invalid_message")
    model = InteractionEvent if is_interaction else FeedbackEvent
    try:
        event = model.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidInputError(_validation_reason(exc), "validation_error") from exc
    try:
        text_key = key.decode() if isinstance(key, bytes) else key
    except UnicodeDecodeError as exc:
        raise InvalidInputError("the message key is not UTF-8", "invalid_message") from exc
    if text_key != event.session_id:
        raise InvalidInputError(
            f"the message key must be the session_id ({event.session_id!r}), got {text_key!r}: "
            "events of one session must share a partition",
            "invalid_message",
        )
    return event


def apply_event(
    state: PartitionState,
    event: InteractionEvent | FeedbackEvent,
    created_ms: int,
    offset: int,
    now_ms: int | None = None,
) -> list[Emit | LostEvent]:
    """Hand a validated event (``created_ms``: its ``created_at`` in epoch ms) to its partition's
    state at wall-clock time ``now_ms`` (None or 0: no wall clock, e.g. offline); return what it
    caused."""
    now = now_ms or None
    if isinstance(event, FeedbackEvent):
        return state.apply_feedback(Feedback.of(event, created_ms, offset), now)
    return state.apply_interaction(Interaction.of(event, created_ms), now)
