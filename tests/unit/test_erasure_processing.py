"""Erasure in the processors: an erased user's events are dropped, their state (records, held late
sessions, feedback on records they do not own) forgotten and deleted from the changelog, and a
restore from a changelog that never saw the erasure forgets them again. Other users: untouched."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import orjson

from schemas import FeedbackType, InteractionEvent
from schemas.erasure import named_user
from stream_processors.core import RECORDS, ChangelogWrite, InputRecord, ProcessingCore
from stream_processors.signals.outcome import Interaction
from stream_processors.state import PartitionState, Record
from tests.unit.test_core import (
    LATER,
    NAMES,
    PIPELINE,
    T0,
    Changelog,
    feedback,
    interaction,
    message,
    never,
    published,
)


def _of(user: str, session: str, seconds: float = 0, **extra: Any) -> InteractionEvent:
    x = interaction(session, T0 + timedelta(seconds=seconds), **extra)
    return x.model_copy(update={"user_id": user})


def _events(erased: str = "gone", kept: str = "kept") -> list[Any]:
    """Two users in two sessions of partition 0, each an interaction with an edit; and the erased
    user's feedback on an interaction not yet seen (a placeholder record)."""
    a, b = _of(erased, "s-gone"), _of(kept, "s-kept", 1)
    orphan = feedback(_of(erased, "s-gone", 2), FeedbackType.THUMBS_DOWN, 1)
    return [
        message(a, 0),
        message(b, 1),
        message(feedback(a, FeedbackType.EDIT, 5, corrected_output="Use reversed()."), 0),
        message(feedback(b, FeedbackType.THUMBS_UP, 5), 1),
        message(orphan, 2),
    ]


def _users(outputs: list[dict[str, Any]]) -> set[str]:
    return {o["user_id"] for o in outputs if "user_id" in o}


def test_events_of_an_erased_user_are_dropped_without_a_trace() -> None:
    erased: set[str] = {"gone"}
    core = ProcessingCore(PIPELINE, NAMES, erased=erased)
    step = core.process_events(_events(), 0, never)
    step.pending += core.tick(LATER, lambda _t, _p: True).pending

    everything = [
        o for topic in (NAMES.joined, NAMES.outcomes, NAMES.edit_operations) for o in published(step, topic)
    ]
    assert _users(everything) == {"kept"}
    assert published(step, NAMES.deadletter) == []  # a dead letter would be a copy of the event
    assert core.erased_events == 3
    assert _changelog_users(step.changelog) == {"kept"}


def _changelog_users(writes: list[ChangelogWrite]) -> set[str]:
    """Every user a changelog write names (its interaction's and its feedback's)."""
    users = set()
    for write in writes:
        if write.value is None:
            continue
        _partition, record = Record.decode(write.key.decode(), write.value)
        if record.interaction is not None:
            users.add(record.interaction.user_id)
        users.update(f.user_id for f in record.feedback.values())
    return users


def test_erase_forgets_held_state_and_deletes_it_from_the_changelog() -> None:
    changelog = Changelog()
    erased: set[str] = set()
    core = ProcessingCore(PIPELINE, NAMES, changelog, erased)
    step = core.process_events(_events(), 0, never)
    changelog.write(step.changelog)
    state = core.partitions[0]
    assert len(state.records) == 3

    erased.add("gone")  # what the app does when the erasure topic brings a request
    forgotten = core.erase(erased)

    assert list(forgotten.messages()) == []
    tombstones = {w.key.decode() for w in forgotten.changelog if w.value is None}
    assert len(tombstones) == 2  # the interaction and the placeholder of the orphan feedback
    changelog.write(forgotten.changelog)
    assert len(changelog.records[RECORDS]) == 1
    assert [r.interaction.user_id for r in state.records.values() if r.interaction] == ["kept"]
    assert set(state.sessions) == {"s-kept"}
    later = core.tick(LATER, lambda _t, _p: True)
    assert _users(published(later, NAMES.outcomes)) == {"kept"}


def test_a_restore_forgets_what_the_changelog_still_holds_of_an_erased_user() -> None:
    changelog = Changelog()
    first = ProcessingCore(PIPELINE, NAMES, changelog)
    changelog.write(first.process_events(_events(), 0, never).changelog)

    # A worker restarted after the erasure, on a changelog that never saw it (the erasure came while
    # no worker ran): the records are forgotten on restore, and tombstoned with the next changes.
    second = ProcessingCore(PIPELINE, NAMES, changelog, {"gone"})
    second.open_partitions([0], LATER)
    step = second.tick(LATER, lambda _t, _p: True)
    settled = second.tick(LATER + 10_000, lambda _t, _p: True)  # quiet for longer than idle_advance_s
    step.pending += settled.pending
    step.changelog += settled.changelog
    changelog.write(step.changelog)
    assert set(changelog.records[RECORDS]) == {
        str(r.interaction_id) for r in second.partitions[0].records.values()
    }
    assert [r.interaction.user_id for r in second.partitions[0].records.values() if r.interaction] == ["kept"]
    assert _users(published(step, NAMES.outcomes)) == {"kept"}
    assert len(changelog.released[RECORDS]) == 3  # the store's copies of all three were let go


def test_a_held_late_session_of_an_erased_user_is_forgotten() -> None:
    state = PartitionState(0, PIPELINE)
    now = int((T0 + timedelta(hours=2)).timestamp() * 1000)
    state.advance(now - 60_000, now)  # event time ran ahead: what comes now is late
    event = _of("gone", "s-late")
    late = Interaction.of(event, int(event.created_at.timestamp() * 1000))
    state.apply_interaction(late, now)
    assert state.held_sessions() == ["s-late"]
    assert state.erase({"gone"}) == 1
    assert state.held_sessions() == []
    assert state.records == {}
    upserts, deleted = state.take_changes()
    assert (upserts, deleted) == ({}, {late.interaction_id})


def test_an_invalid_message_of_an_erased_user_is_not_kept_as_a_dead_letter() -> None:
    core = ProcessingCore(PIPELINE, NAMES, erased={"gone"})
    broken = [
        orjson.dumps({**orjson.loads(_of(user, "s").model_dump_json()), "response_time_ms": "fast"})
        for user in ("gone", "kept")
    ]
    step = core.process_events(
        [InputRecord(NAMES.interactions, 0, n, b"s", value, 0.0) for n, value in enumerate(broken)], 0, never
    )
    letters = published(step, NAMES.deadletter)
    assert [named_user(base64.b64decode(letter["value_b64"])) for letter in letters] == ["kept"]
    assert (core.invalid, core.erased_events) == (1, 1)
