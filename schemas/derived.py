"""What the stream processors derive: joined feedback, per-interaction outcomes, windowed metrics.

Each derived record carries a ``version``: the number of distinct input events that informed it.
Replays and amendments only ever re-send the same version or a higher one, so a consumer that
keeps the highest version per id holds exactly the current truth (ClickHouse does this with
ReplacingMergeTree).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import SCHEMA_VERSION, FeedbackType, Identifier, Label, Timestamp

EditSize = Literal["small", "medium", "large"]


class _Derived(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")


class FeedbackJoined(_Derived):
    """A feedback event joined to its interaction (topic ``ai.feedback.joined.v1``)."""

    event_id: UUID = Field(description="The feedback event's id.")
    interaction_id: UUID
    user_id: Identifier
    session_id: Identifier
    created_at: Timestamp
    feedback_type: FeedbackType
    corrected_output: str | None = None
    copied_chars: int | None = None
    dwell_ms: int | None = None
    comment: str | None = None
    prompt_version: Label = Field(description="The interaction's prompt version.")
    original_output: str = Field(description="The interaction's response.")
    edit_distance: int | None = Field(
        description="Levenshtein distance in characters, response -> corrected_output (edit only)."
    )
    time_to_feedback_ms: int = Field(description="Feedback created_at minus interaction created_at.")


class InteractionOutcome(_Derived):
    """What the user did with one response, explicit and implicit (topic ``ai.outcomes.v1``)."""

    interaction_id: UUID
    version: int = Field(
        ge=1, description="Distinct input events behind this outcome; higher replaces lower."
    )
    session_id: Identifier
    user_id: Identifier
    prompt: str
    prompt_version: Label
    model: Label
    input_category: Label | None
    experiment_id: Label | None
    variant: Label | None
    response_chars: int = Field(ge=0)
    response_time_ms: int = Field(ge=0)
    interaction_created_at: Timestamp
    settled_at: Timestamp = Field(description="Event-time watermark when this version was emitted.")
    amended: bool = Field(description="True when late events changed the outcome after it first settled.")
    feedback_events: int = Field(ge=0, description="Distinct feedback events on this interaction.")
    regenerated: bool
    edited: bool
    edit_distance: int | None = Field(description="Levenshtein (chars), last edit vs. response.")
    edit_distance_norm: float | None = Field(description="edit_distance / max(len(response), len(edit)).")
    word_edit_distance: int | None = Field(description="Levenshtein on word tokens, last edit vs. response.")
    edit_size: EditSize | None
    thumbs_up: bool
    thumbs_down: bool
    copied: bool
    copied_fraction: float | None = Field(description="Largest copied_chars / response length.")
    partial_copy: bool
    accepted: bool
    rephrased: bool
    clarifying_followup: bool
    next_interaction_id: UUID | None = Field(description="The same user's next interaction in the session.")
    abandoned: bool
    short_dwell: bool
    corrected: bool
    time_to_first_correction_ms: int | None
    completed_without_edit: bool


class MetricContribution(_Derived):
    """One outcome's share of a metrics window (internal repartition topic, keyed by window)."""

    interaction_id: UUID
    version: int = Field(ge=1)
    window_start_ms: int
    prompt_version: Label
    model: Label
    input_category: Label | None
    user_id: Identifier
    response_time_ms: int
    regenerated: bool
    edited: bool
    corrected: bool
    thumbs_up: bool
    thumbs_down: bool
    rephrased: bool
    clarifying_followup: bool
    abandoned: bool
    short_dwell: bool
    completed_without_edit: bool
    edit_distance: int | None
    edit_distance_norm: float | None
    time_to_first_correction_ms: int | None


class PromptVersionMetrics(_Derived):
    """Aggregates of one tumbling window for one (prompt_version, model, input_category)."""

    window_start: Timestamp
    window_end: Timestamp
    prompt_version: Label
    model: Label
    input_category: Label | None
    version: int = Field(ge=1, description="Sum of member outcome versions; higher replaces lower.")
    interactions: int
    regenerations: int
    edits: int
    corrections: int
    thumbs_up: int
    thumbs_down: int
    rephrases: int
    clarifying_followups: int
    abandons: int
    short_dwells: int
    completions_without_edit: int
    distinct_users: int
    edit_distance_sum: int
    edit_distance_mean: float | None
    edit_distance_norm_mean: float | None
    time_to_first_correction_mean_ms: float | None
    response_time_mean_ms: float
    response_time_p95_ms: int = Field(description="Nearest-rank 95th percentile of response_time_ms.")
