"""The contract: what validates and what not, its wire format, and that the JSON Schema files match."""

from __future__ import annotations

import json
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import (
    DeadLetter,
    FeedbackEvent,
    FeedbackType,
    InteractionEvent,
    InteractionOutcome,
    format_ms,
    format_timestamp,
    to_epoch_ms,
)
from schemas.export import JSON_DIR, contract_models, json_schemas, render


def interaction(**overrides: Any) -> dict[str, Any]:
    event = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u1",
        "session_id": "s1",
        "prompt": "How do I reverse a list in python?",
        "prompt_version": "v1.0",
        "model": "gpt-4o-mini",
        "response": "Use reversed() or slicing.",
        "response_time_ms": 420,
        "created_at": "2026-11-26T10:00:00.123Z",
    }
    event.update(overrides)
    return event


def feedback(kind: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u1",
        "session_id": "s1",
        "created_at": "2026-11-26T10:00:05Z",
        "feedback_type": kind,
    }
    event.update(overrides)
    return event


def test_a_minimal_interaction_validates_with_defaults() -> None:
    event = InteractionEvent.model_validate_json(json.dumps(interaction()))
    assert event.regenerated_from is None
    assert event.metadata == {}
    assert event.created_at == datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("response_time_ms", "12", "valid integer"),
        ("response_time_ms", -1, "greater than or equal to 0"),
        ("response_time_ms", True, "valid integer"),
        ("user_id", 5, "valid string"),
        ("user_id", "", "at least 1 character"),
        ("created_at", "2026-11-26T10:00:00", "timezone"),
        ("event_id", "not-a-uuid", "UUID"),
        ("schema_version", 2, "1"),
        ("surprise", 1, "Extra inputs are not permitted"),
    ],
)
def test_invalid_interactions_say_what_is_wrong(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InteractionEvent.model_validate_json(json.dumps(interaction(**{field: value})))


def test_an_interaction_cannot_regenerate_itself_or_name_half_an_experiment() -> None:
    same = str(uuid.uuid4())
    with pytest.raises(ValidationError, match="earlier interaction"):
        InteractionEvent.model_validate(interaction(interaction_id=same, regenerated_from=same))
    with pytest.raises(ValidationError, match="together"):
        InteractionEvent.model_validate(interaction(experiment_id="exp-1"))


@pytest.mark.parametrize(
    ("kind", "needs"),
    [("edit", "corrected_output"), ("copy", "copied_chars"), ("view_end", "dwell_ms")],
)
def test_feedback_types_require_their_field_and_only_theirs(kind: str, needs: str) -> None:
    with pytest.raises(ValidationError, match=f"{needs} is required"):
        FeedbackEvent.model_validate(feedback(kind))
    value: object = "fixed text" if needs == "corrected_output" else 10
    assert FeedbackEvent.model_validate(feedback(kind, **{needs: value})).feedback_type == FeedbackType(kind)
    with pytest.raises(ValidationError, match=f"{needs} is only allowed"):
        FeedbackEvent.model_validate(feedback("thumbs_up", **{needs: value}))


def test_unknown_feedback_types_are_listed_in_the_error() -> None:
    with pytest.raises(ValidationError, match="'regenerate', 'edit'"):
        FeedbackEvent.model_validate(feedback("meh"))


def test_timestamps_keep_milliseconds_and_serialize_as_utc_rfc3339() -> None:
    event = InteractionEvent.model_validate(interaction(created_at="2026-11-26T12:00:00.123456+02:00"))
    assert event.created_at.microsecond == 123000
    assert json.loads(event.model_dump_json())["created_at"] == "2026-11-26T10:00:00.123Z"


def test_time_helpers_round_trip_milliseconds() -> None:
    moment = datetime(2026, 11, 26, 23, 59, 59, 999000, tzinfo=timezone(timedelta(hours=-5)))
    ms = to_epoch_ms(moment)
    assert format_ms(ms) == "2026-11-27T04:59:59.999Z" == format_timestamp(moment)
    assert format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_ms(ms + 1) == "2026-11-27T05:00:00.000Z"


def test_dead_letters_keep_any_bytes() -> None:
    letter = DeadLetter.of(
        topic="t", partition=1, offset=7, key=None, value=b"\xff\xfe", reason="bad", error_type="e", stage="s"
    )
    assert letter.original_value() == b"\xff\xfe"
    assert letter.value_text is None
    text = DeadLetter.of(
        topic="t", partition=1, offset=7, key=b"k", value=b"{", reason="r", error_type="e", stage="s"
    )
    assert text.value_text == "{"


def test_outcome_versions_start_at_one() -> None:
    assert InteractionOutcome.model_fields["version"].metadata[0].ge == 1


def test_json_schema_files_match_the_models() -> None:
    """Run `feedbackloop schemas` after changing a model; this fails until the files are rewritten."""
    expected = json_schemas()
    files = {p.stem: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert set(files) == set(expected), "run `feedbackloop schemas` to rewrite schemas/json"
    for name, schema in expected.items():
        assert files[name] == render(schema), f"schemas/json/{name}.json is stale: run `feedbackloop schemas`"


def _models_within(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    """``model`` and every model its fields hold, however nested (lists, unions, Annotated)."""
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        pending: list[Any] = [field.annotation]
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from _models_within(annotation, seen)
            pending.extend(typing.get_args(annotation))


def test_every_field_of_every_contract_model_has_a_description() -> None:
    """The JSON Schema files are what producers in other languages read: every field says what it is."""
    seen: set[type[BaseModel]] = set()
    models = [m for top in contract_models().values() for m in _models_within(top, seen)]
    assert len(models) > len(contract_models()), "nested models (e.g. EditOperation) are walked too"
    missing = {
        f"{m.__name__}.{name}"
        for m in models
        for name, field in m.model_fields.items()
        if not (field.description or "").strip()
    }
    assert not missing, f"fields without a description: {sorted(missing)}"
