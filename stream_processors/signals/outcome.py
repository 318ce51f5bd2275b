"""What a user did with one response: pure functions over the interaction and what followed it.

The meaning of every field is the product's contract (README, "Outcome signals"). Times are
event times in epoch milliseconds and are measured from the interaction's ``created_at``.
``compute_outcome`` is a pure function of its arguments: the same facts give the same outcome,
whatever order they arrived in — which is what makes replays after a crash harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.settings import SignalSettings
from schemas import SCHEMA_VERSION, FeedbackEvent, FeedbackType, InteractionEvent, format_ms
from stream_processors.signals.distance import EditMeasures, measure_edit
from stream_processors.signals.intent import is_clarifying_followup, is_rephrase

REGENERATE = FeedbackType.REGENERATE.value
EDIT = FeedbackType.EDIT.value
THUMBS_UP = FeedbackType.THUMBS_UP.value
THUMBS_DOWN = FeedbackType.THUMBS_DOWN.value
COPY = FeedbackType.COPY.value
ACCEPT = FeedbackType.ACCEPT.value
VIEW_END = FeedbackType.VIEW_END.value

#: Actions that show the response was used; none within the abandon window -> abandoned.
ENGAGEMENT = frozenset({COPY, ACCEPT, EDIT, THUMBS_UP, REGENERATE})
#: Actions that show the response was worth staying for; with any of them a short view is not a bounce.
POSITIVE = frozenset({COPY, ACCEPT, EDIT, THUMBS_UP})


@dataclass(slots=True)
class Interaction:
    """The facts of one interaction event that outcomes need. Ids are the canonical text of their
    UUIDs (lower case, hyphenated), which sorts as the UUIDs do and hashes far faster."""

    interaction_id: str
    event_id: str
    user_id: str
    session_id: str
    created_ms: int
    prompt: str
    prompt_version: str
    model: str
    response: str
    response_time_ms: int
    regenerated_from: str | None
    input_category: str | None
    experiment_id: str | None
    variant: str | None

    @classmethod
    def of(cls, event: InteractionEvent, created_ms: int) -> Interaction:
        """The facts of a validated interaction event (``created_ms``: its ``created_at`` in epoch ms)."""
        return cls(
            str(event.interaction_id),
            str(event.event_id),
            event.user_id,
            event.session_id,
            created_ms,
            event.prompt,
            event.prompt_version,
            event.model,
            event.response,
            event.response_time_ms,
            str(event.regenerated_from) if event.regenerated_from is not None else None,
            event.input_category,
            event.experiment_id,
            event.variant,
        )

    def to_state(self) -> list[Any]:
        """Compact form for the state changelog."""
        return [
            self.interaction_id,
            self.event_id,
            self.user_id,
            self.session_id,
            self.created_ms,
            self.prompt,
            self.prompt_version,
            self.model,
            self.response,
            self.response_time_ms,
            self.regenerated_from,
            self.input_category,
            self.experiment_id,
            self.variant,
        ]

    @classmethod
    def from_state(cls, data: Sequence[Any]) -> Interaction:
        """Inverse of :meth:`to_state`."""
        return cls(*data)


@dataclass(slots=True)
class Feedback:
    """One feedback event, kept whole until it has been joined and the interaction has expired."""

    event_id: str
    interaction_id: str
    user_id: str
    session_id: str
    created_ms: int
    feedback_type: str
    corrected_output: str | None
    copied_chars: int | None
    dwell_ms: int | None
    comment: str | None
    #: Offset it was read from (for the dead letter of a feedback whose interaction never came).
    offset: int = -1
    #: Distances of an edit, computed once on first use (not persisted: cheap to recompute).
    measures: EditMeasures | None = field(default=None, compare=False)

    @classmethod
    def of(cls, event: FeedbackEvent, created_ms: int, offset: int = -1) -> Feedback:
        """The facts of a validated feedback event (``created_ms``: its ``created_at`` in epoch ms)."""
        return cls(
            str(event.event_id),
            str(event.interaction_id),
            event.user_id,
            event.session_id,
            created_ms,
            event.feedback_type.value,
            event.corrected_output,
            event.copied_chars,
            event.dwell_ms,
            event.comment,
            offset,
        )

    def to_state(self) -> list[Any]:
        """Compact form for the state changelog."""
        return [
            self.event_id,
            self.interaction_id,
            self.user_id,
            self.session_id,
            self.created_ms,
            self.feedback_type,
            self.corrected_output,
            self.copied_chars,
            self.dwell_ms,
            self.comment,
            self.offset,
        ]

    def to_event(self) -> dict[str, Any]:
        """The feedback event these facts were taken from, JSON-ready: what
        a dead letter keeps of a feedback whose interaction never came."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "interaction_id": self.interaction_id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "created_at": format_ms(self.created_ms),
            "feedback_type": self.feedback_type,
            "corrected_output": self.corrected_output,
            "copied_chars": self.copied_chars,
            "dwell_ms": self.dwell_ms,
            "comment": self.comment,
        }

    @classmethod
    def from_state(cls, data: Sequence[Any]) -> Feedback:
        """Inverse of :meth:`to_state`."""
        return cls(*data)

    def edit_measures(self, response: str, rules: SignalSettings) -> EditMeasures:
        """Distances of this edit against ``response`` (computed once)."""
        if self.measures is None:
            assert self.corrected_output is not None, "only edits have measures"
            self.measures = measure_edit(
                response, self.corrected_output, rules.edit_small_max_norm, rules.edit_large_min_norm
            )
        return self.measures


def order_key(interaction: Interaction) -> tuple[int, str]:
    """Total order of interactions in a session: by time, ties broken by id."""
    return interaction.created_ms, interaction.interaction_id


def next_candidates(
    interaction: Interaction, session: Sequence[Interaction], rules: SignalSettings
) -> list[Interaction]:
    """The same user's later interactions in the session that are close enough to be a rephrase or
    follow-up of ``interaction``, earliest first. Each of them informs the outcome (and its version)."""
    horizon = interaction.created_ms + int(max(rules.rephrase_window_s, rules.followup_window_s) * 1000)
    start = order_key(interaction)
    found = [
        other
        for other in session
        if other.user_id == interaction.user_id and order_key(other) > start and other.created_ms <= horizon
    ]
    found.sort(key=order_key)
    return found


def outcome_version(
    feedback: Mapping[str, Feedback], regenerated_by: Mapping[str, int], candidates: Sequence[Interaction]
) -> int:
    """How many distinct input events inform the outcome: the interaction itself, its feedback, the
    interactions that regenerated it and the candidates for its next interaction. It only grows as
    events arrive, so a higher version always knows more."""
    linked = set(regenerated_by)
    linked.update(c.interaction_id for c in candidates)
    return 1 + len(feedback) + len(linked)


def compute_outcome(
    interaction: Interaction,
    feedback: Mapping[str, Feedback],
    regenerated_by: Mapping[str, int],
    candidates: Sequence[Interaction],
    rules: SignalSettings,
) -> dict[str, Any]:
    """The outcome fields of ``interaction`` as a dict ready for orjson, without the
    envelope fields (``version``, ``interaction_created_at``, ``settled_at``, ``amended``): the
    interaction's own attributes and one entry per signal declared in ``schemas.signals`` (whose
    descriptions are the contract this computes; a unit test holds the keys and the registry equal)."""
    x = interaction
    t0 = x.created_ms
    abandon_ms = int(rules.abandon_window_s * 1000)
    events = sorted(feedback.values(), key=lambda f: (f.created_ms, f.event_id))

    regen_times = [f.created_ms for f in events if f.feedback_type == REGENERATE]
    regen_times.extend(regenerated_by.values())
    edits = [f for f in events if f.feedback_type == EDIT]
    thumbs_down_times = [f.created_ms for f in events if f.feedback_type == THUMBS_DOWN]
    copies = [f.copied_chars or 0 for f in events if f.feedback_type == COPY]
    types = {f.feedback_type for f in events}

    measures = edits[-1].edit_measures(x.response, rules) if edits else None
    copied = bool(copies)
    copied_fraction = min(1.0, max(copies) / len(x.response)) if copied and x.response else None
    partial_copy = copied_fraction is not None and copied_fraction < rules.partial_copy_below

    rephrased = clarifying = False
    next_id = None
    if candidates:
        nxt = candidates[0]
        next_id = nxt.interaction_id
        gap_ms = nxt.created_ms - t0
        if nxt.regenerated_from is None:
            rephrased = gap_ms <= rules.rephrase_window_s * 1000 and is_rephrase(x.prompt, nxt.prompt)
            clarifying = (
                not rephrased
                and gap_ms <= rules.followup_window_s * 1000
                and is_clarifying_followup(x.prompt, x.response, nxt.prompt)
            )

    engaged = any(f.feedback_type in ENGAGEMENT and f.created_ms - t0 <= abandon_ms for f in events) or any(
        t - t0 <= abandon_ms for t in regenerated_by.values()
    )
    short_dwell = any(
        f.feedback_type == VIEW_END and (f.dwell_ms or 0) < rules.short_dwell_ms for f in events
    ) and not (types & POSITIVE)

    correction_times = regen_times + thumbs_down_times + [f.created_ms for f in edits]
    if rephrased:
        correction_times.append(candidates[0].created_ms)
    corrected = bool(correction_times)

    return {
        "interaction_id": x.interaction_id,
        "session_id": x.session_id,
        "user_id": x.user_id,
        "prompt": x.prompt,
        "prompt_version": x.prompt_version,
        "model": x.model,
        "input_category": x.input_category,
        "experiment_id": x.experiment_id,
        "variant": x.variant,
        "response_chars": len(x.response),
        "response_time_ms": x.response_time_ms,
        # The signals, in the registry's order.
        "feedback_events": len(events),
        "regenerated": bool(regen_times),
        "edited": measures is not None,
        "edit_distance": measures.distance if measures else None,
        "edit_distance_norm": measures.norm if measures else None,
        "word_edit_distance": measures.word_distance if measures else None,
        "edit_size": measures.size if measures else None,
        "thumbs_up": THUMBS_UP in types,
        "thumbs_down": bool(thumbs_down_times),
        "copied": copied,
        "copied_fraction": copied_fraction,
        "partial_copy": partial_copy,
        "accepted": ACCEPT in types,
        "rephrased": rephrased,
        "clarifying_followup": clarifying,
        "next_interaction_id": next_id,
        "abandoned": not engaged,
        "short_dwell": short_dwell,
        "corrected": corrected,
        "time_to_first_correction_ms": min(correction_times) - t0 if corrected else None,
        "completed_without_edit": (copied or ACCEPT in types) and not corrected,
    }
