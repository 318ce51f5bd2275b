"""The SDK's fast serializer and ids give exactly what the contract gives."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from producers.wire import event_json, format_timestamp, new_id, now_ms
from schemas import FeedbackEvent, FeedbackType, InteractionEvent
from schemas import format_timestamp as contract_format_timestamp


def _events(n: int) -> list[InteractionEvent | FeedbackEvent]:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    texts = [
        "",
        "plain",
        'quotes " and \\ backslash',
        "line\nbreak\ttab",
        "ünïcødé ✓ 日本語 😀",
        "\x00\x1f ctl",
    ]
    out: list[InteractionEvent | FeedbackEvent] = []
    for i in range(n):
        created = datetime(2020 + i % 7, 1 + i % 12, 1 + i % 28, i % 24, i % 60, i % 60, rng.randrange(10**6))
        common = {
            "event_id": uuid.uuid4(),
            "interaction_id": uuid.uuid4(),
            "user_id": f"user-{texts[i % len(texts)]}-{i}",
            "session_id": f"s{i}",
            "created_at": created.replace(tzinfo=zones[i % len(zones)]),
        }
        if i % 2:
            out.append(
                InteractionEvent(
                    **common,
                    prompt=texts[i % len(texts)],
                    prompt_version="v1.1",
                    model="m",
                    response=texts[(i + 1) % len(texts)] * 3,
                    response_time_ms=rng.randrange(10**6),
                    regenerated_from=uuid.uuid4() if i % 3 else None,
                    input_category="faq" if i % 5 else None,
                    experiment_id="exp" if i % 4 == 1 else None,
                    variant="b" if i % 4 == 1 else None,
                    metadata={"k": texts[i % len(texts)]} if i % 3 else {},
                )
            )
        else:
            kind = list(FeedbackType)[i % len(FeedbackType)]
            out.append(
                FeedbackEvent(
                    **common,
                    feedback_type=kind,
                    corrected_output="fixed" if kind is FeedbackType.EDIT else None,
                    copied_chars=i if kind is FeedbackType.COPY else None,
                    dwell_ms=i * 10 if kind is FeedbackType.VIEW_END else None,
                    comment=texts[i % len(texts)] if i % 3 else None,
                )
            )
    return out


def test_event_json_is_byte_for_byte_the_contract_json() -> None:
    for event in _events(400):
        assert event_json(event) == event.model_dump_json().encode()


# Millisecond values only: the events' validator keeps created_at at ms precision, so that is
# all the serializer ever sees (how sub-ms digits would round is not part of the contract).
@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone(timedelta(hours=-11))),
    ],
)
def test_format_timestamp_matches_the_contract(value: datetime) -> None:
    assert format_timestamp(value) == contract_format_timestamp(value)


def test_new_id_is_a_random_version_4_uuid() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


def test_new_id_is_what_the_uuid_constructor_builds() -> None:
    for _ in range(1000):
        fast = new_id()
        slow = uuid.UUID(int=fast.int)
        assert (fast, hash(fast), str(fast), fast.is_safe) == (slow, hash(slow), str(slow), slow.is_safe)


def test_now_ms_is_now_at_the_contract_precision_with_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    before = datetime.now(UTC)
    created, text = now_ms()
    assert before - timedelta(milliseconds=1) <= created <= datetime.now(UTC)
    # Every millisecond of a few seconds around a minute and a day boundary, and random ones.
    rng = random.Random(3)
    base = 1_767_225_599_000  # 2025-12-31T23:59:59Z
    instants = [
        *range(base - 1500, base + 2500),
        *(rng.randrange(946_684_800_000, 4_102_444_800_000) for _ in range(5000)),
    ]
    for ms in instants:
        monkeypatch.setattr("producers.wire.time.time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
        created, text = now_ms()
        assert created == datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=ms)
        assert text == contract_format_timestamp(created)
        # What the contract keeps of it (ms precision) is all of it, and the SDK's JSON agrees.
        event = FeedbackEvent(
            event_id=uuid.uuid4(),
            interaction_id=uuid.uuid4(),
            user_id="u",
            session_id="s",
            created_at=created,
            feedback_type=FeedbackType.ACCEPT,
        )
        assert event.created_at == created
        if ms % 97 == 0:
            assert event_json(event, text) == event.model_dump_json().encode()
