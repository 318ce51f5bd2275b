"""From raw input message to the facts the state keeps, or to a clear reason why not.

Messages are validated against the contract (``schemas.InteractionEvent`` / ``FeedbackEvent``). The
common form is decoded by msgspec structs derived from those models (``schemas.codec``), straight
into the facts with string ids and epoch-millisecond times; anything that decoder does not take is
judged by the pydantic model itself, so a message is accepted or refused exactly as the contract
says and a dead letter carries the model's own reasons.
"""

from __future__ import annotations

from pydantic import ValidationError

from schemas import FeedbackEvent, InteractionEvent, to_epoch_ms
from schemas.codec import FastDecoder
from stream_processors.signals.outcome import Feedback, Interaction
from stream_processors.state import Emit, LostEvent, PartitionState

_FAST_INTERACTION = FastDecoder(InteractionEvent).decode
_FAST_FEEDBACK = FastDecoder(FeedbackEvent).decode


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


def _facts(is_interaction: bool, value: bytes, offset: int) -> Interaction | Feedback:
    if is_interaction:
        fast = _FAST_INTERACTION(value)
        if fast is not None:
            e, (created_ms,) = fast
            return Interaction(
                e.interaction_id, e.event_id, e.user_id, e.session_id, created_ms, e.prompt,
                e.prompt_version, e.model, e.response, e.response_time_ms, e.regenerated_from,
                e.input_category, e.experiment_id, e.variant,
            )  # fmt: skip
    else:
        fast = _FAST_FEEDBACK(value)
        if fast is not None:
            f, (created_ms,) = fast
            return Feedback(
                f.event_id, f.interaction_id, f.user_id, f.session_id, created_ms, f.feedback_type,
                f.corrected_output, f.copied_chars, f.dwell_ms, f.comment, offset,
            )  # fmt: skip
    try:
        if is_interaction:
            interaction = InteractionEvent.model_validate_json(value)
            return Interaction.of(interaction, to_epoch_ms(interaction.created_at))
        feedback = FeedbackEvent.model_validate_json(value)
        return Feedback.of(feedback, to_epoch_ms(feedback.created_at), offset)
    except ValidationError as exc:
        raise InvalidInputError(_validation_reason(exc), "validation_error") from exc


def decode_input(
    is_interaction: bool, key: bytes | str | None, value: bytes | None, offset: int = -1
) -> Interaction | Feedback:
    """Validate one input message against the contract and return its facts (``offset``: where it was
    read, kept with feedback); raise :class:`InvalidInputError` if it is not valid."""
    if value is None:
        raise InvalidInputError("the message has no value (a tombstone is not an event)", "invalid_message")
    facts = _facts(is_interaction, value, offset)
    try:
        text_key = key.decode() if isinstance(key, bytes) else key
    except UnicodeDecodeError as exc:
        raise InvalidInputError("the message key is not UTF-8", "invalid_message") from exc
    if text_key != facts.session_id:
        raise InvalidInputError(
            f"the message key must be the session_id ({facts.session_id!r}), got {text_key!r}: "
            "events of one session must share a partition",
            "invalid_message",
        )
    return facts


def apply_facts(
    state: PartitionState, facts: Interaction | Feedback, now_ms: int | None = None
) -> list[Emit | LostEvent]:
    """Hand decoded facts to their partition's state at wall-clock time ``now_ms`` (None or 0: no wall
    clock, e.g. offline); return what they caused."""
    now = now_ms or None
    if isinstance(facts, Feedback):
        return state.apply_feedback(facts, now)
    return state.apply_interaction(facts, now)


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
    if isinstance(event, FeedbackEvent):
        return apply_facts(state, Feedback.of(event, created_ms, offset), now_ms)
    return apply_facts(state, Interaction.of(event, created_ms), now_ms)
