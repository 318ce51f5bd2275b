"""Event time you can trust: late sessions count as if live, forged clocks are contained.

Pure state with a virtual wall clock: every call gets the time, nothing is read from the machine.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from infra.settings import PipelineSettings
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, to_epoch_ms
from schemas.events import EVENT_TIME_FLOOR_MS, event_time_error
from stream_processors.decode import apply_event
from stream_processors.state import Emit, LostEvent, PartitionState
from stream_processors.watermark import Watermark
from stream_processors.windows import WindowState

HOUR_MS = 3_600_000
NOW_MS = to_epoch_ms(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
SETTINGS = PipelineSettings()
QUIET_MS = int(SETTINGS.idle_advance_s * 1000)
IGNORED = {"settled_at", "amended"}


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _session(t0_ms: int, session: str = "s1", user: str = "u1") -> list[InteractionEvent | FeedbackEvent]:
    """A session: an answer regenerated, the regeneration edited and copied, then a rephrase."""
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def interaction(iid: uuid.UUID, dt_s: int, prompt: str, **extra: Any) -> InteractionEvent:
        return InteractionEvent(
            event_id=uuid.uuid4(),
            interaction_id=iid,
            user_id=user,
            session_id=session,
            created_at=_at(t0_ms + dt_s * 1000),
            prompt=prompt,
            prompt_version="v1",
            model="m",
            response=f"an answer to {prompt}",
            response_time_ms=800,
            **extra,
        )

    def feedback(iid: uuid.UUID, dt_s: int, kind: FeedbackType, **extra: Any) -> FeedbackEvent:
        return FeedbackEvent(
            event_id=uuid.uuid4(),
            interaction_id=iid,
            user_id=user,
            session_id=session,
            created_at=_at(t0_ms + dt_s * 1000),
            feedback_type=kind,
            **extra,
        )

    return [
        interaction(first, 0, "how do I reverse a list in python"),
        feedback(first, 8, FeedbackType.REGENERATE),
        interaction(second, 10, "how do I reverse a list in python", regenerated_from=first),
        feedback(second, 40, FeedbackType.EDIT, corrected_output="use reversed(items) or items[::-1]"),
        feedback(second, 45, FeedbackType.COPY, copied_chars=5),
        interaction(third, 70, "python: reverse a list, how?"),
        feedback(third, 90, FeedbackType.THUMBS_UP),
    ]


def _outcomes(out: list[Emit | LostEvent]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for item in out:
        if isinstance(item, Emit) and item.kind == "outcome":
            iid = str(item.value["interaction_id"])
            if iid not in latest or latest[iid]["version"] < item.value["version"]:
                latest[iid] = item.value
    return {iid: {k: v for k, v in o.items() if k not in IGNORED} for iid, o in latest.items()}


def _lost(out: list[Emit | LostEvent]) -> list[LostEvent]:
    return [item for item in out if isinstance(item, LostEvent)]


def _on_time(events: list[InteractionEvent | FeedbackEvent]) -> dict[str, dict[str, Any]]:
    """What the events give when each arrives at its own time and the watermark follows them."""
    state = PartitionState(0, SETTINGS)
    out: list[Emit | LostEvent] = []
    for event in events:
        created = to_epoch_ms(event.created_at)
        out += apply_event(state, event, created, -1)
        out += state.advance(created - 5_000, created)
    end = to_epoch_ms(events[-1].created_at) + 2 * HOUR_MS
    out += state.advance(end, end, inputs_read=True)
    assert _lost(out) == []
    return _outcomes(out)


def _caught_up_partition() -> PartitionState:
    """A partition that is read to its end and whose watermark follows the wall clock."""
    state = PartitionState(0, SETTINGS)
    state.advance(NOW_MS - 5_000, NOW_MS, inputs_read=True)
    return state


@pytest.mark.parametrize("age_h", [3, 23])
def test_a_late_session_arriving_in_pieces_counts_as_if_it_had_come_on_time(age_h: int) -> None:
    events = _session(NOW_MS - age_h * HOUR_MS)
    state = _caught_up_partition()
    out: list[Emit | LostEvent] = []
    clock = NOW_MS
    for event in events:  # one event per batch, a second apart: the partition is caught up after each
        clock += 1_000
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
        out += state.advance(clock - 5_000, clock, inputs_read=True)
    assert _outcomes(out) == {}, "nothing settles while the session is still arriving"
    out += state.advance(clock - 5_000 + QUIET_MS, clock + QUIET_MS, inputs_read=True)
    assert _lost(out) == []
    assert _outcomes(out) == _on_time(events)
    assert state.counters.late == 3


def test_feedback_that_arrives_before_its_late_interaction_is_joined() -> None:
    events = _session(NOW_MS - 5 * HOUR_MS)
    reordered = [events[1], events[3], events[4], events[6], events[0], events[2], events[5]]
    state = _caught_up_partition()
    out: list[Emit | LostEvent] = []
    for event in reordered:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    out += state.advance(NOW_MS, NOW_MS + 100, inputs_read=True)
    assert _outcomes(out) == {}
    out += state.advance(NOW_MS, NOW_MS + 100 + QUIET_MS, inputs_read=True)
    assert _lost(out) == []
    assert _outcomes(out) == _on_time(events)


def test_a_late_session_waits_while_the_inputs_still_have_unread_messages() -> None:
    events = _session(NOW_MS - 3 * HOUR_MS)
    state = _caught_up_partition()
    out: list[Emit | LostEvent] = []
    for event in events[:3]:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    out += state.advance(NOW_MS, NOW_MS + 2 * QUIET_MS, inputs_read=False)
    assert _outcomes(out) == {}, "the feedback topic may still hold the rest of the session"
    for event in events[3:]:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    out += state.advance(NOW_MS, NOW_MS + 4 * QUIET_MS, inputs_read=True)
    assert _outcomes(out) == _on_time(events)


def test_late_sessions_mixed_with_live_traffic_in_one_partition_are_both_exact() -> None:
    late = _session(NOW_MS - 3 * HOUR_MS, session="late")
    live = _session(NOW_MS - 60_000, session="live", user="u2")
    state = _caught_up_partition()
    out: list[Emit | LostEvent] = []
    clock = NOW_MS
    for event in [e for pair in zip(late, live, strict=True) for e in pair]:
        clock += 500
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
        out += state.advance(max(to_epoch_ms(event.created_at), NOW_MS) - 5_000, clock, inputs_read=True)
    end = clock + 10 * 60_000
    out += state.advance(end - 5_000, end, inputs_read=True)
    assert _lost(out) == []
    assert _outcomes(out) == {**_on_time(late), **_on_time(live)}


def test_a_late_session_keeps_taking_feedback_for_the_retention_in_wall_clock_time() -> None:
    events = _session(NOW_MS - 10 * HOUR_MS)
    state = _caught_up_partition()
    out: list[Emit | LostEvent] = []
    for event in events[:-1]:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    out += state.advance(NOW_MS, NOW_MS + QUIET_MS, inputs_read=True)
    assert len(_outcomes(out)) == 3
    retention_ms = int(SETTINGS.retention_s * 1000)
    out += state.advance(NOW_MS + retention_ms // 2, NOW_MS + retention_ms // 2, inputs_read=True)
    late_thumb = events[-1]
    out += apply_event(state, late_thumb, to_epoch_ms(late_thumb.created_at), -1)
    out += state.advance(NOW_MS + retention_ms // 2, NOW_MS + retention_ms // 2 + 1, inputs_read=True)
    assert _lost(out) == []
    assert _outcomes(out) == _on_time(events)
    # Once the retention has passed in wall-clock time too, the records are gone.
    out += state.advance(NOW_MS + 3 * retention_ms, NOW_MS + 3 * retention_ms, inputs_read=True)
    assert state.records == {}


def test_feedback_whose_interaction_never_comes_is_dead_lettered_after_the_retention() -> None:
    orphan = _session(NOW_MS - 2 * HOUR_MS)[1]
    state = _caught_up_partition()
    out = apply_event(state, orphan, to_epoch_ms(orphan.created_at), -1)
    out += state.advance(NOW_MS, NOW_MS + QUIET_MS, inputs_read=True)
    assert _lost(out) == []
    retention_ms = int(SETTINGS.retention_s * 1000)
    out += state.advance(NOW_MS + retention_ms + 1, NOW_MS + retention_ms + QUIET_MS + 1, inputs_read=True)
    (lost,) = _lost(out)
    assert lost.error_type == "orphan_feedback"
    assert "FEEDBACKLOOP_PIPELINE__RETENTION_S" in lost.reason


def test_events_older_than_the_late_horizon_are_dead_lettered_with_the_setting_to_raise() -> None:
    horizon_h = SETTINGS.late_horizon_s / 3600
    events = _session(NOW_MS - int((horizon_h + 1) * HOUR_MS))
    state = _caught_up_partition()
    out: list[Emit | LostEvent] = []
    for event in events:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    lost = _lost(out)
    assert len(lost) == len(events)
    assert {x.error_type for x in lost} == {"too_late"}
    assert "FEEDBACKLOOP_PIPELINE__LATE_HORIZON_S" in lost[0].reason
    assert state.records == {}


def test_held_late_records_survive_a_restart_and_settle_once_quiet() -> None:
    events = _session(NOW_MS - 3 * HOUR_MS)
    state = _caught_up_partition()
    for event in events:
        apply_event(state, event, to_epoch_ms(event.created_at), -1)
    upserts, _ = state.take_changes()
    restored = PartitionState.restore(0, SETTINGS, [(str(k), v) for k, v in upserts.items()], NOW_MS + 60_000)
    out = restored.advance(NOW_MS, NOW_MS + 60_000, inputs_read=True)
    assert _outcomes(out) == {}
    out += restored.advance(NOW_MS, NOW_MS + 60_000 + QUIET_MS, inputs_read=True)
    assert _outcomes(out) == _on_time(events)


# ------------------------------------------------------------------ one interaction, one owner


def test_feedback_from_another_user_or_session_is_dead_lettered_not_joined() -> None:
    events = _session(NOW_MS - 60_000)
    state = PartitionState(0, SETTINGS)
    out: list[Emit | LostEvent] = []
    for event in events:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    target = events[0]
    for user, session in (("mallory", target.session_id), (target.user_id, "other-session")):
        forged = FeedbackEvent(
            event_id=uuid.uuid4(),
            interaction_id=target.interaction_id,
            user_id=user,
            session_id=session,
            created_at=_at(NOW_MS - 50_000),
            feedback_type=FeedbackType.THUMBS_DOWN,
        )
        out += apply_event(state, forged, to_epoch_ms(forged.created_at), -1)
    end = NOW_MS + HOUR_MS
    out += state.advance(end, end, inputs_read=True)
    assert [x.error_type for x in _lost(out)] == ["ownership_mismatch", "ownership_mismatch"]
    assert "belongs to user 'u1'" in _lost(out)[0].reason
    assert _outcomes(out) == _on_time(events)


def test_feedback_that_came_first_and_claims_another_owner_is_dropped_when_the_interaction_arrives() -> None:
    events = _session(NOW_MS - 60_000)
    forged = FeedbackEvent(
        event_id=uuid.uuid4(),
        interaction_id=events[0].interaction_id,
        user_id="mallory",
        session_id=events[0].session_id,
        created_at=_at(NOW_MS - 59_000),
        feedback_type=FeedbackType.THUMBS_DOWN,
    )
    state = PartitionState(0, SETTINGS)
    out = apply_event(state, forged, to_epoch_ms(forged.created_at), -1)
    for event in events:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    end = NOW_MS + HOUR_MS
    out += state.advance(end, end, inputs_read=True)
    assert [x.error_type for x in _lost(out)] == ["ownership_mismatch"]
    assert _outcomes(out) == _on_time(events)


def test_a_regeneration_of_another_users_answer_is_not_linked() -> None:
    events = _session(NOW_MS - 60_000)
    victim = events[0]
    state = PartitionState(0, SETTINGS)
    out: list[Emit | LostEvent] = []
    for event in events:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1)
    forged = victim.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "interaction_id": uuid.uuid4(),
            "user_id": "mallory",
            "session_id": "mallory-session",
            "regenerated_from": events[5].interaction_id,
        }
    )
    out += apply_event(state, forged, to_epoch_ms(forged.created_at), -1)
    end = NOW_MS + HOUR_MS
    out += state.advance(end, end, inputs_read=True)
    got = _outcomes(out)
    assert got[str(events[5].interaction_id)] == _on_time(events)[str(events[5].interaction_id)]
    assert state.counters.ownership_mismatches == 1


# ------------------------------------------------------------------ watermark and windows


def test_a_watermark_created_before_any_data_waits_before_following_the_wall_clock() -> None:
    watermark = Watermark(5_000, 3_000, created_wall_ms=NOW_MS)
    watermark.register("interactions", "feedback")
    watermark.set_caught_up("interactions", True)
    watermark.set_caught_up("feedback", True)
    assert watermark.advance(NOW_MS + 2_999) == 0
    assert watermark.advance(NOW_MS + 3_000) == NOW_MS + 3_000 - 5_000


def _contribution(window_start_ms: int, iid: str, version: int = 1) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "interaction_id": iid,
        "version": version,
        "window_start_ms": window_start_ms,
        "prompt_version": "v1",
        "model": "m",
        "input_category": None,
        "user_id": "u1",
        "response_time_ms": 100,
        "regenerated": True,
        "edited": False,
        "corrected": True,
        "thumbs_up": False,
        "thumbs_down": False,
        "rephrased": False,
        "clarifying_followup": False,
        "abandoned": False,
        "short_dwell": False,
        "completed_without_edit": False,
        "edit_distance": None,
        "edit_distance_norm": None,
        "time_to_first_correction_ms": 1000,
    }


def test_a_late_window_this_partition_never_had_opens_complete_and_lingers() -> None:
    retention_ms = int(SETTINGS.metrics_retention_s * 1000)
    state = WindowState(0, 60_000, retention_ms, int(SETTINGS.late_horizon_s * 1000), linger_ms=HOUR_MS)
    live = NOW_MS - NOW_MS % 60_000
    state.apply("live", _contribution(live, "a"), NOW_MS)
    old = live - 23 * HOUR_MS
    state.apply("old", _contribution(old, "b"), NOW_MS)
    state.expire(NOW_MS)
    state.apply("old", _contribution(old, "c"), NOW_MS + 1_000)  # more of the late session
    emitted = dict(state.emissions())
    assert emitted["old"]["interactions"] == 2
    assert state.late_dropped == 0
    state.expire(NOW_MS + 1_000 + HOUR_MS)
    assert "old" not in state.windows
    assert "live" in state.windows
    state.apply("old", _contribution(old, "d"), NOW_MS + 2 * HOUR_MS)
    assert state.late_dropped == 1, "its members are gone: no partial aggregate"


def test_a_window_expired_with_members_is_never_republished_partial() -> None:
    state = WindowState(0, 60_000, retention_ms=120_000, late_horizon_ms=HOUR_MS)
    state.apply("w0", _contribution(0, "a"), NOW_MS)
    state.apply("w9", _contribution(600_000, "b"), NOW_MS)
    state.expire(NOW_MS)
    upserts, _ = state.take_changes()
    assert "w0#~" in upserts, "the tombstone is in the changelog"
    restored = WindowState.restore(0, 60_000, 120_000, upserts.items(), HOUR_MS, now_ms=NOW_MS)
    restored.apply("w0", _contribution(0, "late"), NOW_MS)
    assert restored.late_dropped == 1
    assert restored.emissions() == []


# ------------------------------------------------------------------ the contract's bounds


def test_events_from_the_future_are_refused_with_the_field_and_the_setting() -> None:
    skew_ms = int(SETTINGS.max_future_skew_s * 1000)
    assert event_time_error(NOW_MS + skew_ms, NOW_MS, skew_ms) is None
    reason = event_time_error(NOW_MS + skew_ms + 1_000, NOW_MS, skew_ms)
    assert reason is not None
    assert "created_at" in reason
    assert "MAX_FUTURE_SKEW_S" in reason


@pytest.mark.parametrize(
    "created_at",
    ["1999-12-31T23:59:59.999Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999-01:00", 1_764_000_000],
)
def test_the_contract_refuses_event_times_it_cannot_use(created_at: object) -> None:
    event = _session(NOW_MS)[1].model_dump(mode="json")
    with pytest.raises(ValidationError, match="created_at"):
        FeedbackEvent.model_validate({**event, "created_at": created_at})


def test_the_floor_is_the_first_millisecond_of_2000() -> None:
    event = _session(NOW_MS)[1].model_dump(mode="json")
    accepted = FeedbackEvent.model_validate({**event, "created_at": "2000-01-01T00:00:00Z"})
    assert to_epoch_ms(accepted.created_at) == EVENT_TIME_FLOOR_MS
    assert timedelta(milliseconds=EVENT_TIME_FLOOR_MS) == datetime(2000, 1, 1, tzinfo=UTC) - datetime(
        1970, 1, 1, tzinfo=UTC
    )


def test_a_late_session_split_by_newer_traffic_in_a_backlog_keeps_its_feedback() -> None:
    """A backlog batch: an old session's interactions first, then newer traffic that carries the
    watermark past them; the old session's feedback only comes in the next batch."""
    old = _session(NOW_MS - 3 * HOUR_MS, session="old")
    live = _session(NOW_MS - 60_000, session="live", user="u2")
    first = [e for e in old if isinstance(e, InteractionEvent)] + live
    second = [e for e in old if isinstance(e, FeedbackEvent)]
    state = PartitionState(0, SETTINGS)
    out: list[Emit | LostEvent] = []
    for event in first:
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1, NOW_MS)
    out += state.advance(NOW_MS - 65_000, NOW_MS, inputs_read=False)
    for event in second:  # a second later, in the next batch
        out += apply_event(state, event, to_epoch_ms(event.created_at), -1, NOW_MS + 1_000)
    out += state.advance(NOW_MS - 60_000, NOW_MS + 1_000, inputs_read=False)
    end = NOW_MS + 2 * HOUR_MS
    out += state.advance(end, end, inputs_read=True)
    assert _lost(out) == []
    assert _outcomes(out) == {**_on_time(old), **_on_time(live)}


def test_a_feedback_topic_read_ahead_in_a_backlog_makes_no_session_late() -> None:
    """A backlog where one partition's feedback is read before its interactions: the watermark is the
    slowest input's, so nothing is behind it and every session settles in event time as usual."""
    sessions = [_session(NOW_MS - HOUR_MS + n * 60_000, session=f"s{n}") for n in range(20)]
    events = [e for s in sessions for e in s]
    state = PartitionState(0, SETTINGS)
    watermark = Watermark(5_000, 3_000, created_wall_ms=NOW_MS)
    watermark.register("interactions", "feedback")
    out: list[Emit | LostEvent] = []
    for kind in (FeedbackEvent, InteractionEvent):  # the whole feedback backlog first
        for event in (e for e in events if isinstance(e, kind)):
            created = to_epoch_ms(event.created_at)
            watermark.observe("feedback" if kind is FeedbackEvent else "interactions", created, NOW_MS)
            out += apply_event(state, event, created, -1, NOW_MS)
        out += state.advance(watermark.advance(NOW_MS), NOW_MS, inputs_read=False)
    assert state.counters.late == 0
    end = NOW_MS + 2 * HOUR_MS
    out += state.advance(end, end, inputs_read=True)
    assert _lost(out) == []
    assert _outcomes(out) == {k: v for s in sessions for k, v in _on_time(s).items()}


def test_a_window_overtaken_by_newer_ones_in_a_backfill_keeps_taking_members_for_the_grace() -> None:
    retention_ms = int(SETTINGS.metrics_retention_s * 1000)
    grace_ms = 330_000
    state = WindowState(0, 60_000, retention_ms, int(SETTINGS.late_horizon_s * 1000), HOUR_MS, grace_ms)
    old = NOW_MS - 20 * HOUR_MS - NOW_MS % 60_000
    state.apply("old", _contribution(old, "a"), NOW_MS)
    state.apply("newer", _contribution(old + 15 * HOUR_MS, "b"), NOW_MS)  # the horizon passes "old"
    state.expire(NOW_MS)
    state.apply("old", _contribution(old, "c"), NOW_MS + 10_000)  # its last member settles
    assert state.late_dropped == 0
    assert dict(state.emissions())["old"]["interactions"] == 2
    state.expire(NOW_MS + 10_000 + grace_ms)
    assert "old" not in state.windows
