"""The fast decoders derived from the contract never accept what the models refuse, and give the same
values for what they accept; the processors' decode gives the models' own reasons for what they refuse."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producers.synthetic import WorkloadSpec, generate
from schemas import FeedbackEvent, InteractionEvent, to_epoch_ms
from schemas.codec import FastDecoder, derive
from schemas.events import format_ms, parse_canonical_ms
from stream_processors.decode import InvalidInputError, decode_input
from stream_processors.signals.outcome import Feedback, Interaction

WORKLOAD = generate(WorkloadSpec(interactions=300, users=20, seed=5, malformed=0))
EVENTS = [e for e in WORKLOAD.events if isinstance(e, InteractionEvent | FeedbackEvent)]

#: Values that break, bend or sit at the edge of a field's rules.
ODD_VALUES: list[Any] = [
    None, "", " ", "x" * 129, "x" * 257, "x" * 10_001, 0, -1, 1.0, 1.5, True, 10**20, 86_400_001,
    10_000_001, [], {}, {"a": 1}, "12", "\ud800", "UPPER", "edit", "copy", "view_end", "nope",
    "0D009217-186E-485B-8579-565EF828D7DE", "0d009217186e485b8579565ef828d7de",
    "{0d009217-186e-485b-8579-565ef828d7de}", "urn:uuid:0d009217-186e-485b-8579-565ef828d7de",
    "0d009217-186e-485b-8579-565ef828d7de", "2026-12-04T12:28:57.603Z", "2026-12-04T12:28:57Z",
    "2026-12-04T12:28:57.603+00:00", "2026-12-04T12:28:57.603z", "2026-12-04T12:28:57.603456Z",
    "2026-12-04T12:28:60.000Z", "2026-02-30T12:28:57.603Z", "1999-12-31T23:59:59.999Z",
    "2000-01-01T00:00:00.000Z", "2026-12-04T12:28:57.603", "2026-12-04 12:28:57.603Z",
    "２026-12-04T12:28:57.603Z", "2026-12-04T12:28:5٣.603Z", "9999-12-31T23:59:59.999Z", 1_795_000_000_000,
]  # fmt: skip


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # the standard library writes 10**20 and lone surrogates too


def _variants(event: BaseModel) -> list[bytes]:
    base = orjson.loads(event.model_dump_json())
    out = [_dumps(base)]
    for name in [*base, "unknown_field"]:
        missing = {k: v for k, v in base.items() if k != name}
        out.append(_dumps(missing))
        out.extend(_dumps({**base, name: value}) for value in ODD_VALUES)
    # Two fields wrong at once, and JSON that is no object.
    for a, b in itertools.islice(itertools.combinations(base, 2), 12):
        out.append(_dumps({**base, a: None, b: "x" * 300}))
    out += [b"", b"null", b"[]", b"{", b'"text"', _dumps(base)[:-1]]
    # A field given twice: whichever one a parser keeps, both must agree.
    raw = _dumps(base)
    out.append(raw[:-1] + b',"user_id":""}')
    out.append(raw[:-1] + b',"user_id":"someone-else"}')
    return out


def _model_of(event: BaseModel) -> type[InteractionEvent] | type[FeedbackEvent]:
    return InteractionEvent if isinstance(event, InteractionEvent) else FeedbackEvent


def _as_text(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return getattr(value, "value", value)  # enums by their value


@pytest.mark.parametrize("event", EVENTS[:: max(1, len(EVENTS) // 40)], ids=lambda e: type(e).__name__)
def test_fast_decoder_accepts_a_subset_of_the_model_with_the_same_values(event: BaseModel) -> None:
    model = _model_of(event)
    fast = FastDecoder(model)
    for data in _variants(event):
        decoded = fast.decode(data)
        try:
            expected = model.model_validate_json(data)
        except ValidationError:
            assert decoded is None, f"the fast decoder took what {model.__name__} refuses: {data!r}"
            continue
        if decoded is None:
            continue  # the model judges it: the same result by construction
        obj, stamps = decoded
        for name in model.model_fields:
            if name == "created_at":
                assert stamps == [to_epoch_ms(expected.created_at)]
            else:
                assert getattr(obj, name) == _as_text(getattr(expected, name)), (name, data)


def test_every_message_the_contract_writes_takes_the_fast_path() -> None:
    for event in EVENTS:
        assert FastDecoder(_model_of(event)).decode(event.model_dump_json().encode()) is not None


def test_processor_facts_equal_the_models_and_refusals_keep_the_models_reasons() -> None:
    accepted = refused = 0
    for event in EVENTS[:: max(1, len(EVENTS) // 15)]:
        model = _model_of(event)
        is_interaction = model is InteractionEvent
        key = event.session_id.encode()
        for data in _variants(event):
            try:
                expected = model.model_validate_json(data)
            except ValidationError as exc:
                with pytest.raises(InvalidInputError) as refusal:
                    decode_input(is_interaction, key, data, 7)
                assert refusal.value.error_type == "validation_error"
                first = exc.errors(include_url=False)[0]
                assert first["msg"] in refusal.value.reason
                refused += 1
                continue
            if expected.session_id != event.session_id:
                continue  # a key mismatch: its own dead letter
            facts = decode_input(is_interaction, key, data, 7)
            ms = to_epoch_ms(expected.created_at)
            if isinstance(expected, InteractionEvent):
                assert facts == Interaction.of(expected, ms)
            else:
                assert isinstance(expected, FeedbackEvent)
                assert facts == Feedback.of(expected, ms, 7)
            accepted += 1
    assert accepted > 100
    assert refused > 1000


def test_canonical_timestamps_parse_to_what_format_ms_wrote() -> None:
    for ms in (946_684_800_000, 1_795_000_000_123, 1_795_000_059_999, 253_402_300_799_999):
        assert parse_canonical_ms(format_ms(ms)) == ms
    assert parse_canonical_ms("1999-12-31T23:59:59.999Z") is None  # before the floor
    assert parse_canonical_ms("2026-12-04T12:28:57.603+00:00") is None  # another form: the model parses it


def test_a_model_the_deriver_cannot_mirror_fails_loudly() -> None:
    class Patterned(BaseModel):
        model_config = ConfigDict(extra="forbid")
        code: str = Field(pattern=r"^[A-Z]+$")

    class Lenient(BaseModel):
        value: int

    with pytest.raises(TypeError, match="pattern"):
        derive(Patterned)
    with pytest.raises(TypeError, match="forbid"):
        derive(Lenient)
