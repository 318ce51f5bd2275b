"""The partition state machine: joins in any order, duplicates, settling, amendments, expiry, restore."""

from __future__ import annotations

import uuid
from typing import Any

from infra.settings import PipelineSettings
from stream_processors.signals.outcome import Feedback, Interaction
from stream_processors.state import Emit, LostEvent, PartitionState

T0 = 1_795_000_000_000
SETTLE = 300_000  # the longest signal window (abandonment) decides when an outcome settles
PIPELINE = PipelineSettings(retention_s=600)


def interaction(at: int = T0, **kw: Any) -> Interaction:
    fields: dict[str, Any] = {
        "interaction_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "user_id": "u1",
        "session_id": "s1",
        "created_ms": at,
        "prompt": "How do I reverse a list in python?",
        "prompt_version": "v1.0",
        "model": "m",
        "response": "Use slicing.",
        "response_time_ms": 300,
        "regenerated_from": None,
        "input_category": None,
        "experiment_id": None,
        "variant": None,
    }
    fields.update(kw)
    return Interaction(**fields)


def feedback(x: Interaction, kind: str, at: int, **kw: Any) -> Feedback:
    return Feedback(
        str(uuid.uuid4()), x.interaction_id, x.user_id, x.session_id, at, kind,
        kw.get("corrected_output"), kw.get("copied_chars"), kw.get("dwell_ms"), None,
    )  # fmt: skip


def outcomes(items: list[Emit | LostEvent]) -> list[dict[str, Any]]:
    return [i.value for i in items if isinstance(i, Emit) and i.kind == "outcome"]


def kinds(items: list[Emit | LostEvent]) -> list[str]:
    return [i.kind if isinstance(i, Emit) else i.error_type for i in items]


def test_feedback_before_its_interaction_is_joined_when_the_interaction_arrives() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    early = feedback(x, "thumbs_down", T0 + 2000)
    assert state.apply_feedback(early) == []
    joined = state.apply_interaction(x)
    assert kinds(joined) == ["joined"]
    assert joined[0].value["time_to_feedback_ms"] == 2000  # type: ignore[union-attr]


def test_an_outcome_is_emitted_once_when_the_watermark_passes_its_window() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(x)
    assert outcomes(state.advance(T0 + SETTLE - 1)) == []
    settled = state.advance(T0 + SETTLE)
    assert kinds(settled) == ["outcome", "contribution"]
    assert outcomes(settled)[0]["version"] == 1
    assert outcomes(settled)[0]["amended"] is False
    assert state.advance(T0 + SETTLE + 10_000) == []


def test_duplicates_are_recognised_by_event_id_and_do_not_change_the_outcome() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    copy = feedback(x, "copy", T0 + 1000, copied_chars=3)
    state.apply_interaction(x)
    state.apply_feedback(copy)
    assert state.apply_interaction(x) == []
    assert state.apply_feedback(copy) == []
    assert state.counters.duplicates == 2
    assert outcomes(state.advance(T0 + SETTLE))[0]["feedback_events"] == 1


def test_a_reused_interaction_id_with_another_event_id_is_dead_lettered() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(x)
    clash = interaction(interaction_id=x.interaction_id)
    assert kinds(state.apply_interaction(clash)) == ["duplicate_interaction_id"]


def test_late_feedback_amends_the_outcome_with_a_higher_version() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(x)
    first = outcomes(state.advance(T0 + SETTLE))[0]
    state.apply_feedback(feedback(x, "thumbs_down", T0 + 400_000))
    amended = outcomes(state.advance(T0 + SETTLE + 1))
    assert len(amended) == 1
    assert amended[0]["version"] == first["version"] + 1
    assert amended[0]["amended"] is True
    assert amended[0]["thumbs_down"] is True


def test_a_late_next_interaction_amends_the_earlier_outcome_as_a_rephrase() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(x)
    assert outcomes(state.advance(T0 + SETTLE))[0]["rephrased"] is False
    again = interaction(at=T0 + 30_000, prompt="python: what's the way to reverse a list?")
    state.apply_interaction(again)
    amended = [o for o in outcomes(state.advance(T0 + SETTLE + 1)) if o["interaction_id"] == x.interaction_id]
    assert amended
    assert amended[0]["rephrased"] is True
    assert amended[0]["version"] == 2


def test_interactions_of_other_sessions_are_not_next_interactions() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(x)
    state.apply_interaction(interaction(at=T0 + 30_000, session_id="s2", prompt=x.prompt))
    settled = [
        o for o in outcomes(state.advance(T0 + SETTLE + 30_000)) if o["interaction_id"] == x.interaction_id
    ]
    assert settled[0]["next_interaction_id"] is None
    assert settled[0]["rephrased"] is False


def test_a_regeneration_that_arrives_before_the_original_is_linked_to_it() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(interaction(at=T0 + 5000, regenerated_from=x.interaction_id))
    state.apply_interaction(x)
    settled = {o["interaction_id"]: o for o in outcomes(state.advance(T0 + 10 * SETTLE))}
    assert settled[x.interaction_id]["regenerated"] is True


def test_feedback_whose_interaction_never_comes_is_dead_lettered_after_the_retention() -> None:
    state = PartitionState(0, PIPELINE)
    orphan = feedback(interaction(), "accept", T0)
    state.apply_feedback(orphan)
    assert state.advance(T0 + SETTLE + 600_000 - 1) == []
    lost = state.advance(T0 + SETTLE + 600_000)
    assert kinds(lost) == ["orphan_feedback"]
    assert isinstance(lost[0], LostEvent)
    assert lost[0].feedback == orphan
    assert orphan.interaction_id not in state.records


def test_settled_interactions_expire_after_the_retention_and_leave_a_tombstone() -> None:
    state = PartitionState(0, PIPELINE)
    x = interaction()
    state.apply_interaction(x)
    state.advance(T0 + SETTLE)
    state.take_changes()
    state.advance(T0 + SETTLE + 600_000)
    upserts, deleted = state.take_changes()
    assert deleted == {x.interaction_id}
    assert not upserts
    assert not state.sessions


def test_restoring_from_the_changelog_gives_the_same_future() -> None:
    live = PartitionState(0, PIPELINE)
    x, y = interaction(), interaction(at=T0 + 20_000, prompt="What does slicing mean here?")
    live.apply_interaction(x)
    live.apply_feedback(feedback(x, "edit", T0 + 10_000, corrected_output="Use slices."))
    live.apply_interaction(y)
    upserts, _ = live.take_changes()
    restored = PartitionState.restore(0, PIPELINE, [(str(k), v) for k, v in upserts.items()])
    skipped = PartitionState.restore(1, PIPELINE, [(str(k), v) for k, v in upserts.items()])
    assert not skipped.records  # records of other partitions are not ours
    assert outcomes(restored.advance(T0 + SETTLE * 2)) == outcomes(live.advance(T0 + SETTLE * 2))


def test_an_outcome_emitted_before_a_crash_is_not_emitted_again_after_restore() -> None:
    live = PartitionState(0, PIPELINE)
    x = interaction()
    live.apply_interaction(x)
    live.advance(T0 + SETTLE)
    upserts, _ = live.take_changes()
    restored = PartitionState.restore(0, PIPELINE, [(str(k), v) for k, v in upserts.items()])
    assert restored.advance(T0 + SETTLE + 1) == []
