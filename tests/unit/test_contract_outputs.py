"""Everything the processors' pure state emits is a valid message of its topic's contract model.

The state hands out plain dicts for speed; only the sink validates them in production. This test
drives ``PartitionState`` and ``WindowState`` over a generated workload (with orphan feedback and a
reused interaction id added) and validates every emission, as its bytes on the wire, against the
model of its topic: exactly the model's fields, no coercion, nothing missing.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from infra.settings import PipelineSettings
from producers.synthetic import WorkloadSpec, generate
from schemas import (
    DeadLetter,
    EditOperations,
    FeedbackEvent,
    FeedbackJoined,
    InteractionEvent,
    InteractionOutcome,
    MetricContribution,
    PromptVersionMetrics,
    to_epoch_ms,
    topics,
)
from stream_processors.signals.outcome import Feedback, Interaction
from stream_processors.state import Emit, LostEvent, PartitionState
from stream_processors.windows import WindowState

PARTITIONS = 3
PIPELINE = PipelineSettings()
#: The contract model of each kind of message: the partition state's kinds, and the window stage's.
MODEL_OF: dict[str, type[BaseModel]] = {
    "joined": FeedbackJoined,
    "outcome": InteractionOutcome,
    "contribution": MetricContribution,
    "edit_ops": EditOperations,
    "metrics": PromptVersionMetrics,
}


def _as_on_the_wire(model: type[BaseModel], value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as the transport writes it, checked against ``model``; returns what a consumer reads."""
    raw = orjson.dumps(value)
    wire: dict[str, Any] = orjson.loads(raw)
    assert set(wire) == set(model.model_fields), f"{model.__name__}: fields differ from the contract"
    parsed = model.model_validate_json(raw)
    # Nothing coerced on the way: the model writes back exactly what the processor sent.
    assert orjson.loads(parsed.model_dump_json()) == wire, model.__name__
    return wire


def _events() -> list[InteractionEvent | FeedbackEvent]:
    events = list(generate(WorkloadSpec(interactions=1500, users=60, seed=19)).events)
    first = next(n for n, e in enumerate(events) if isinstance(e, InteractionEvent))
    feedback = next(e for e in events if isinstance(e, FeedbackEvent))
    # Feedback on an interaction that never comes, and an interaction id used by a second event.
    orphan = feedback.model_copy(update={"event_id": uuid.uuid4(), "interaction_id": uuid.uuid4()})
    reused = events[first].model_copy(update={"event_id": uuid.uuid4()})
    return [*events[: first + 50], orphan, reused, *events[first + 50 :]]


Emitted = tuple[list[tuple[str, dict[str, Any]]], list[tuple[LostEvent, bytes | None]]]


def _run() -> Emitted:
    """Drive the state like the transport does: every message it would publish (topic kind, value),
    and every lost event with the raw input it came from."""
    states = {p: PartitionState(p, PIPELINE) for p in range(PARTITIONS)}
    windows = {p: WindowState(p, PIPELINE.metrics_window_s * 1000, 3_600_000) for p in range(PARTITIONS)}
    messages: list[tuple[str, dict[str, Any]]] = []
    lost: list[tuple[LostEvent, bytes | None]] = []

    def take(items: list[Emit | LostEvent], raw: bytes | None = None) -> None:
        for item in items:
            if isinstance(item, LostEvent):
                lost.append((item, raw))
                continue
            messages.append((item.kind, item.value))
            if item.kind == "contribution":
                # The window stage reads the contribution off the wire.
                window = windows[zlib.crc32(item.key.encode()) % PARTITIONS]
                window.apply(item.key, orjson.loads(orjson.dumps(item.value)))

    def advance(watermark_ms: int) -> None:
        for state in states.values():
            take(state.advance(watermark_ms))
        for window in windows.values():
            messages.extend(("metrics", aggregate) for _, aggregate in window.emissions())

    latest = 0
    for n, event in enumerate(_events()):
        created_ms = to_epoch_ms(event.created_at)
        state = states[zlib.crc32(event.session_id.encode()) % PARTITIONS]
        if isinstance(event, InteractionEvent):
            take(state.apply_interaction(Interaction.of(event, created_ms)), event.model_dump_json().encode())
        else:
            take(state.apply_feedback(Feedback.of(event, created_ms)))
        latest = max(latest, created_ms)
        if n % 400 == 399:
            advance(latest - 5_000)
    advance(latest + 10 * 24 * 3_600_000)
    return messages, lost


@pytest.fixture(scope="module")
def emitted() -> Emitted:
    return _run()


def test_every_output_topic_was_exercised(emitted: Emitted) -> None:
    messages, lost = emitted
    assert {kind for kind, _ in messages} == set(MODEL_OF)
    assert len(lost) == 2  # the orphan feedback and the reused interaction id


def test_every_emission_is_a_valid_message_of_its_topic(emitted: Emitted) -> None:
    messages, _ = emitted
    for kind, value in messages:
        _as_on_the_wire(MODEL_OF[kind], value)


def test_lost_events_become_dead_letters_that_keep_the_original_event(emitted: Emitted) -> None:
    _, lost = emitted
    for item, raw in lost:
        value: bytes | None
        if item.feedback is not None:
            # A feedback is lost after the fact: its message is rebuilt from the state.
            topic, value = topics.FEEDBACK, orjson.dumps(item.feedback.to_event())
            FeedbackEvent.model_validate_json(value)
        else:
            topic, value = topics.INTERACTIONS, raw
        letter = DeadLetter.of(
            topic=topic,
            partition=item.partition,
            offset=0,
            key=b"s",
            value=value,
            reason=item.reason,
            error_type=item.error_type,
            stage="processor",
        )
        _as_on_the_wire(DeadLetter, orjson.loads(letter.model_dump_json()))
        assert letter.original_value() == value
    assert {item.error_type for item, _ in lost} == {"orphan_feedback", "duplicate_interaction_id"}


def test_a_lost_feedback_is_rebuilt_as_the_event_it_was() -> None:
    event = next(e for e in _events() if isinstance(e, FeedbackEvent) and e.feedback_type == "edit")
    rebuilt = FeedbackEvent.model_validate_json(
        orjson.dumps(Feedback.of(event, to_epoch_ms(event.created_at)).to_event())
    )
    assert rebuilt == event
