"""What the stream processors derive: joined feedback, per-interaction outcomes, windowed metrics.

Each derived record carries a ``version``: the number of distinct input events that informed it.
Replays and amendments only ever re-send the same version or a higher one, so a consumer that
keeps the highest version per id holds exactly the current truth (ClickHouse does this with
ReplacingMergeTree).

The signal fields of :class:`InteractionOutcome`, :class:`MetricContribution` and
:class:`PromptVersionMetrics` are not written here: they are made from the declarations in
``schemas.signals``, once, when this module is imported. To the type checker those fields are
``Any`` (a ``__getattr__`` seen only by mypy); at run time they are ordinary pydantic fields,
validated, described and exported to ``schemas/json`` like every other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from schemas.events import SCHEMA_VERSION, FeedbackType, Identifier, Label, Timestamp
from schemas.signals import EditSize, contribution_fields, outcome_fields, window_fields

__all__ = [
    "EditSize",
    "FeedbackJoined",
    "InteractionOutcome",
    "MetricContribution",
    "PromptVersionMetrics",
]


class _Derived(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")


def _with_signals(
    name: str, base: type[BaseModel], fields: dict[str, tuple[Any, FieldInfo]]
) -> type[BaseModel]:
    """``base`` extended by the registry's ``fields`` (a name already in ``base`` is an error)."""
    clash = sorted(set(fields) & set(base.model_fields))
    if clash:
        raise ValueError(f"signal registry: {clash} already are fields of {base.__name__}")
    return create_model(  # type: ignore[call-overload, no-any-return]  # fields built at run time
        name, __base__=base, __module__=__name__, **fields
    )


class FeedbackJoined(_Derived):
    """A feedback event joined to its interaction (topic ``ai.feedback.joined.v1``)."""

    event_id: UUID = Field(description="The feedback event's id.")
    interaction_id: UUID = Field(description="The interaction the feedback is about.")
    user_id: Identifier = Field(description="Who gave the feedback.")
    session_id: Identifier = Field(description="The session; also the Kafka message key.")
    created_at: Timestamp = Field(description="When the feedback was given.")
    feedback_type: FeedbackType = Field(description="What the user did (see FeedbackEvent).")
    corrected_output: str | None = Field(None, description="The user's corrected text (edit only).")
    copied_chars: int | None = Field(None, description="Characters of the response copied (copy only).")
    dwell_ms: int | None = Field(None, description="How long the response was on screen (view_end only).")
    comment: str | None = Field(None, description="Optional free text from the user.")
    prompt_version: Label = Field(description="The interaction's prompt version.")
    original_output: str = Field(description="The interaction's response.")
    edit_distance: int | None = Field(
        description="Levenshtein distance in characters, response -> corrected_output (edit only)."
    )
    time_to_feedback_ms: int = Field(description="Feedback created_at minus interaction created_at.")


class _OutcomeFacts(_Derived):
    """The interaction an outcome is about, and which version of the outcome this is."""

    interaction_id: UUID = Field(description="The interaction this outcome is about.")
    version: int = Field(
        ge=1, description="Distinct input events behind this outcome; higher replaces lower."
    )
    session_id: Identifier = Field(description="The interaction's session; also the Kafka message key.")
    user_id: Identifier = Field(description="The interaction's user.")
    prompt: str = Field(description="The interaction's prompt.")
    prompt_version: Label = Field(description="The interaction's prompt version.")
    model: Label = Field(description="The interaction's model.")
    input_category: Label | None = Field(description="The interaction's input category.")
    experiment_id: Label | None = Field(description="The experiment the interaction took part in.")
    variant: Label | None = Field(description="The experiment variant the interaction's user was in.")
    response_chars: int = Field(ge=0, description="Characters in the response.")
    response_time_ms: int = Field(ge=0, description="Latency of the AI call in milliseconds.")
    interaction_created_at: Timestamp = Field(description="When the interaction happened.")
    settled_at: Timestamp = Field(description="Event-time watermark when this version was emitted.")
    amended: bool = Field(description="True when late events changed the outcome after it first settled.")


class _ContributionFacts(_Derived):
    """Which window an outcome falls in, and the interaction's own attributes a window needs."""

    interaction_id: UUID = Field(description="The interaction whose outcome this is.")
    version: int = Field(ge=1, description="The outcome's version; a window keeps the highest per member.")
    window_start_ms: int = Field(description="Start of the window, epoch milliseconds.")
    prompt_version: Label = Field(description="The interaction's prompt version.")
    model: Label = Field(description="The interaction's model.")
    input_category: Label | None = Field(description="The interaction's input category.")
    user_id: Identifier = Field(description="The interaction's user (for distinct_users).")
    response_time_ms: int = Field(ge=0, description="Latency of the AI call in milliseconds.")


class _WindowFacts(_Derived):
    """Which window and group an aggregate is of, and how many outcomes are in it."""

    window_start: Timestamp = Field(description="Start of the tumbling window (inclusive).")
    window_end: Timestamp = Field(description="End of the tumbling window (exclusive).")
    prompt_version: Label = Field(description="The prompt version of every member.")
    model: Label = Field(description="The model of every member.")
    input_category: Label | None = Field(description="The input category of every member.")
    version: int = Field(ge=1, description="Sum of member outcome versions; higher replaces lower.")
    interactions: int = Field(ge=1, description="Outcomes (interactions) in the window.")


if TYPE_CHECKING:
    # mypy cannot see fields made at run time; to it, each signal is an attribute of type Any.

    class _OutcomeSignals(_OutcomeFacts):
        def __getattr__(self, name: str) -> Any: ...

    class _ContributionSignals(_ContributionFacts):
        def __getattr__(self, name: str) -> Any: ...

    class _WindowSignals(_WindowFacts):
        def __getattr__(self, name: str) -> Any: ...

else:
    _OutcomeSignals = _with_signals("_OutcomeSignals", _OutcomeFacts, outcome_fields())
    _ContributionSignals = _with_signals("_ContributionSignals", _ContributionFacts, contribution_fields())
    _WindowSignals = _with_signals("_WindowSignals", _WindowFacts, window_fields())


class InteractionOutcome(_OutcomeSignals):
    """What the user did with one response, explicit and implicit (topic ``ai.outcomes.v1``)."""

    # The signal fields come from schemas.signals.


class MetricContribution(_ContributionSignals):
    """One outcome's share of a metrics window (internal repartition topic, keyed by window)."""

    # The signals that have a window metric in schemas.signals.


class PromptVersionMetrics(_WindowSignals):
    """Aggregates of one tumbling window for one (prompt_version, model, input_category) (topic
    ``ai.metrics.v1``)."""

    # The per-signal metrics, declared in schemas.signals, come before these.

    distinct_users: int = Field(ge=1, description="Distinct user_id among the members.")
    response_time_mean_ms: float = Field(ge=0, description="Mean response_time_ms of the members.")
    response_time_p95_ms: int = Field(ge=0, description="Nearest-rank 95th percentile of response_time_ms.")
