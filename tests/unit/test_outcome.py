"""Each implicit and explicit signal of an outcome, at its edges."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from infra.settings import SignalSettings
from stream_processors.signals.distance import edit_size, measure_edit, word_tokens
from stream_processors.signals.outcome import (
    Feedback,
    Interaction,
    compute_outcome,
    next_candidates,
    outcome_version,
)

RULES = SignalSettings()
T0 = 1_795_000_000_000
RESPONSE = "Use reversed() to get an iterator, or slicing with [::-1] to get a new list."


def interaction(at: int = T0, prompt: str = "How do I reverse a list in python?", **kw: Any) -> Interaction:
    fields: dict[str, Any] = {
        "interaction_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "user_id": "u1",
        "session_id": "s1",
        "created_ms": at,
        "prompt": prompt,
        "prompt_version": "v1.0",
        "model": "m",
        "response": RESPONSE,
        "response_time_ms": 300,
        "regenerated_from": None,
        "input_category": "technical",
        "experiment_id": None,
        "variant": None,
    }
    fields.update(kw)
    return Interaction(**fields)


def fb(x: Interaction, kind: str, after_s: float, **kw: Any) -> Feedback:
    return Feedback(
        event_id=str(uuid.uuid4()),
        interaction_id=x.interaction_id,
        user_id=x.user_id,
        session_id=x.session_id,
        created_ms=x.created_ms + int(after_s * 1000),
        feedback_type=kind,
        corrected_output=kw.get("corrected_output"),
        copied_chars=kw.get("copied_chars"),
        dwell_ms=kw.get("dwell_ms"),
        comment=None,
    )


def outcome(
    x: Interaction, feedback: Sequence[Feedback] = (), regenerated_by: dict[str, int] | None = None,
    session: Sequence[Interaction] = (),
) -> dict[str, Any]:  # fmt: skip
    candidates = next_candidates(x, [x, *session], RULES)
    return compute_outcome(x, {f.event_id: f for f in feedback}, regenerated_by or {}, candidates, RULES)


def test_no_feedback_at_all_is_abandoned_and_nothing_else() -> None:
    o = outcome(interaction())
    assert o["abandoned"] is True
    assert not any(
        o[k] for k in ("regenerated", "edited", "corrected", "rephrased", "completed_without_edit")
    )
    assert o["time_to_first_correction_ms"] is None


def test_regenerate_feedback_or_a_regenerating_interaction_both_mean_regenerated() -> None:
    x = interaction()
    assert outcome(x, [fb(x, "regenerate", 4)])["regenerated"] is True
    child = str(uuid.uuid4())
    o = outcome(x, [], {child: x.created_ms + 9000})
    assert o["regenerated"]
    assert o["corrected"]
    assert o["time_to_first_correction_ms"] == 9000
    assert o["abandoned"] is False  # a regeneration within the window is engagement


def test_the_last_edit_counts_and_its_size_is_classified() -> None:
    x = interaction()
    first = fb(x, "edit", 10, corrected_output="totally different text")
    last = fb(x, "edit", 20, corrected_output=RESPONSE.replace("new list", "new copy"))
    o = outcome(x, [last, first])
    assert o["edited"]
    assert o["edit_distance"] == 4
    assert o["edit_size"] == "small"
    assert o["edit_distance_norm"] == pytest.approx(4 / len(RESPONSE))
    assert o["word_edit_distance"] == 1
    assert o["time_to_first_correction_ms"] == 10_000  # the first edit corrected it


def test_edit_measures_at_the_edges() -> None:
    assert measure_edit("", "", 0.15, 0.5).norm == 0.0
    assert measure_edit("abc", "", 0.15, 0.5).size == "large"
    assert edit_size(0.15, 0.15, 0.5) == "small"
    assert edit_size(0.3, 0.15, 0.5) == "medium"
    assert edit_size(0.5, 0.15, 0.5) == "large"
    assert word_tokens("a  b\tc, d") == ["a", "b", "c,", "d"]


def test_copies_take_the_largest_and_partial_means_under_the_threshold() -> None:
    x = interaction()
    o = outcome(x, [fb(x, "copy", 5, copied_chars=10), fb(x, "copy", 6, copied_chars=30)])
    assert o["copied_fraction"] == pytest.approx(30 / len(RESPONSE))
    assert o["partial_copy"] is True
    full = outcome(x, [fb(x, "copy", 5, copied_chars=10 * len(RESPONSE))])
    assert full["copied_fraction"] == 1.0
    assert full["partial_copy"] is False
    assert full["completed_without_edit"] is True
    assert full["abandoned"] is False
    empty = outcome(interaction(response=""), [])
    assert empty["copied_fraction"] is None


def test_abandonment_counts_actions_within_five_minutes_only() -> None:
    x = interaction()
    assert outcome(x, [fb(x, "copy", 299.999, copied_chars=3)])["abandoned"] is False
    assert outcome(x, [fb(x, "copy", 300.001, copied_chars=3)])["abandoned"] is True
    assert outcome(x, [fb(x, "thumbs_down", 3)])["abandoned"] is True  # not engagement
    assert outcome(x, [fb(x, "view_end", 3, dwell_ms=40_000)])["abandoned"] is True


def test_short_dwell_needs_a_quick_view_end_and_no_positive_action() -> None:
    x = interaction()
    assert outcome(x, [fb(x, "view_end", 1, dwell_ms=2999)])["short_dwell"] is True
    assert outcome(x, [fb(x, "view_end", 1, dwell_ms=3000)])["short_dwell"] is False
    quick_but_copied = [fb(x, "view_end", 1, dwell_ms=500), fb(x, "copy", 1, copied_chars=5)]
    assert outcome(x, quick_but_copied)["short_dwell"] is False


def test_rephrase_is_the_same_users_next_interaction_within_two_minutes() -> None:
    x = interaction()
    again = interaction(at=T0 + 60_000, prompt="python: what's the way to reverse a list?")
    o = outcome(x, [], session=[again])
    assert o["rephrased"]
    assert o["corrected"]
    assert o["time_to_first_correction_ms"] == 60_000
    assert o["next_interaction_id"] == again.interaction_id
    too_late = interaction(at=T0 + 121_000, prompt="python: what's the way to reverse a list?")
    assert outcome(x, [], session=[too_late])["rephrased"] is False
    other_user = interaction(at=T0 + 30_000, prompt=again.prompt, user_id="u2")
    assert outcome(x, [], session=[other_user])["next_interaction_id"] is None


def test_a_regeneration_is_never_a_rephrase_and_only_the_first_next_counts() -> None:
    x = interaction()
    regen = interaction(at=T0 + 5000, prompt=x.prompt, regenerated_from=x.interaction_id)
    rephrase = interaction(at=T0 + 9000, prompt="python: what's the way to reverse a list?")
    o = outcome(x, [], {regen.interaction_id: regen.created_ms}, session=[rephrase, regen])
    assert o["next_interaction_id"] == regen.interaction_id
    assert o["rephrased"] is False
    assert o["regenerated"] is True


def test_clarifying_followup_within_a_minute_about_the_response() -> None:
    x = interaction()
    question = interaction(at=T0 + 20_000, prompt="What does [::-1] do exactly?")
    assert outcome(x, [], session=[question])["clarifying_followup"] is True
    late = interaction(at=T0 + 61_000, prompt="What does [::-1] do exactly?")
    assert outcome(x, [], session=[late])["clarifying_followup"] is False
    new_task = interaction(at=T0 + 20_000, prompt="Write a haiku about autumn leaves falling in the park.")
    assert outcome(x, [], session=[new_task])["clarifying_followup"] is False


def test_ties_in_time_are_broken_by_interaction_id() -> None:
    x = interaction()
    a = interaction(at=T0 + 1000, interaction_id=str(uuid.UUID(int=2)))
    b = interaction(at=T0 + 1000, interaction_id=str(uuid.UUID(int=1)))
    assert [c.interaction_id for c in next_candidates(x, [a, x, b], RULES)] == [
        b.interaction_id,
        a.interaction_id,
    ]


def test_versions_count_every_input_event_that_informs_the_outcome() -> None:
    x = interaction()
    feedback = {f.event_id: f for f in [fb(x, "copy", 1, copied_chars=1), fb(x, "accept", 2)]}
    child, candidate = str(uuid.uuid4()), interaction(at=T0 + 1000)
    assert outcome_version({}, {}, []) == 1
    assert outcome_version(feedback, {child: T0 + 1}, [candidate]) == 5
    # A regeneration that is also the next candidate counts once.
    assert outcome_version({}, {candidate.interaction_id: T0 + 1000}, [candidate]) == 2


def test_the_outcome_does_not_depend_on_the_order_feedback_came_in() -> None:
    x = interaction()
    events = [
        fb(x, "edit", 30, corrected_output="x"),
        fb(x, "edit", 30, corrected_output="y"),
        fb(x, "thumbs_down", 2),
        fb(x, "copy", 50, copied_chars=7),
    ]
    forward = outcome(x, events)
    assert outcome(x, list(reversed(events))) == forward
