"""The outcome signals, each declared once: its name, type and meaning, and how a metrics window
aggregates it.

Everything else is derived from :data:`SIGNALS`: the signal fields of
:class:`~schemas.derived.InteractionOutcome`, :class:`~schemas.derived.MetricContribution` (the
signals a window aggregates) and :class:`~schemas.derived.PromptVersionMetrics` (one field per
:class:`WindowMetric`); the processors' contribution fields and window counters; the sink's
columns. A unit test checks that the ClickHouse tables have a column for each. How a signal is
computed is the processors' business (``stream_processors/signals/outcome.py``); the description
here is its contract, and the thresholds it names are ``SignalSettings`` (``infra/settings.py``).

Adding a signal (``docs/architecture.md``, "Adding a signal"): declare it here, compute it in
``compute_outcome``, give it a setting if it has a threshold, add its columns in a new migration,
and teach the test oracle (``tests/support/oracle.py``) what to expect.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field
from pydantic.fields import FieldInfo

EditSize = Literal["small", "medium", "large"]
NonNegative = Annotated[int, Field(ge=0)]


class Aggregate(StrEnum):
    """How a window aggregates one signal over its member outcomes."""

    #: How many members have the flag true (bool signals).
    COUNT = "count"
    #: Sum of the members' non-null values (0 when none has one).
    SUM = "sum"
    #: Mean of the members' non-null values (null when none has one).
    MEAN = "mean"


@dataclass(frozen=True, slots=True)
class WindowMetric:
    """One field of ``PromptVersionMetrics`` computed from one signal."""

    name: str
    aggregate: Aggregate
    #: Left empty, a description is made from the signal's name and the aggregate.
    description: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """One field of an interaction outcome, computed from what followed the interaction."""

    name: str
    #: The field's type as pydantic takes it, e.g. ``bool``, ``int | None``, ``NonNegative``.
    annotation: Any
    #: What it means: the contract, written into the JSON Schema for other-language consumers.
    description: str
    #: What a metrics window makes of it; a signal with none is not part of a window contribution.
    window: tuple[WindowMetric, ...] = ()


def count(name: str, description: str = "") -> tuple[WindowMetric]:
    """A window counter of a flag: how many of the window's outcomes have it true."""
    return (WindowMetric(name, Aggregate.COUNT, description),)


#: Every signal, in the order of the outcome's fields.
SIGNALS: tuple[Signal, ...] = (
    Signal("feedback_events", NonNegative, "Distinct feedback events on this interaction."),
    Signal(
        "regenerated",
        bool,
        "At least one regenerate feedback, or a later interaction with regenerated_from = this one.",
        count("regenerations"),
    ),
    Signal("edited", bool, "At least one edit feedback.", count("edits")),
    Signal(
        "edit_distance",
        int | None,
        "Levenshtein distance in characters between the response and the last edit (latest "
        "created_at, ties by event_id); null without an edit.",
        (
            WindowMetric("edit_distance_sum", Aggregate.SUM),
            WindowMetric("edit_distance_mean", Aggregate.MEAN),
        ),
    ),
    Signal(
        "edit_distance_norm",
        float | None,
        "edit_distance / max(len(response), len(edit)), 0 when both are empty; null without an edit.",
        (WindowMetric("edit_distance_norm_mean", Aggregate.MEAN),),
    ),
    Signal(
        "word_edit_distance",
        int | None,
        "Levenshtein distance over whitespace-separated words, last edit vs. response; null without an edit.",
    ),
    Signal(
        "edit_size",
        EditSize | None,
        "small if edit_distance_norm <= edit_small_max_norm (0.15: a refinement), large if >= "
        "edit_large_min_norm (0.5: a misunderstanding), else medium; null without an edit.",
    ),
    Signal("thumbs_up", bool, "At least one thumbs_up feedback.", count("thumbs_up")),
    Signal("thumbs_down", bool, "At least one thumbs_down feedback.", count("thumbs_down")),
    Signal("copied", bool, "At least one copy feedback."),
    Signal(
        "copied_fraction",
        float | None,
        "Largest copied_chars / response length, capped at 1; null without a copy or for an empty response.",
    ),
    Signal("partial_copy", bool, "copied_fraction is under partial_copy_below (0.9)."),
    Signal("accepted", bool, "At least one accept feedback."),
    Signal(
        "rephrased",
        bool,
        "The same user's next interaction in the session comes within rephrase_window_s (120 s), is "
        "not a regeneration, and asks the same query again.",
        count("rephrases"),
    ),
    Signal(
        "clarifying_followup",
        bool,
        "The next interaction comes within followup_window_s (60 s), is not a regeneration or a "
        "rephrase, and is a short question about this response.",
        count("clarifying_followups"),
    ),
    Signal(
        "next_interaction_id",
        UUID | None,
        "The same user's next interaction in the session, within the longer of rephrase_window_s and "
        "followup_window_s.",
    ),
    Signal(
        "abandoned",
        bool,
        "No copy, accept, edit, thumbs up or regenerate (feedback, or a regenerating interaction) "
        "within abandon_window_s (300 s).",
        count("abandons"),
    ),
    Signal(
        "short_dwell",
        bool,
        "A view_end with dwell_ms under short_dwell_ms (3000) and no copy, accept, edit or thumbs up.",
        count("short_dwells"),
    ),
    Signal(
        "corrected",
        bool,
        "Regenerated, edited, thumbs down or rephrased.",
        count("corrections"),
    ),
    Signal(
        "time_to_first_correction_ms",
        int | None,
        "Time from the interaction to the first correction (a rephrase counts at the next "
        "interaction's time, a regeneration at the regenerate click or the regenerating "
        "interaction); null when not corrected.",
        (WindowMetric("time_to_first_correction_mean_ms", Aggregate.MEAN),),
    ),
    Signal(
        "completed_without_edit",
        bool,
        "Copied or accepted, and not corrected.",
        count("completions_without_edit"),
    ),
)


# ------------------------------------------------------------------------------------- derived


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _base_type(annotation: Any) -> Any:
    """``int`` of ``int``, ``int | None`` and ``Annotated[int, ...]``."""
    if typing.get_origin(annotation) is Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if _is_optional(annotation):
        (inner,) = (a for a in typing.get_args(annotation) if a is not type(None))
        return _base_type(inner)
    return annotation


def metric_annotation(signal: Signal, metric: WindowMetric) -> Any:
    """The type of a window metric: a count, a sum of the signal's type, or an optional mean."""
    if metric.aggregate is Aggregate.COUNT:
        return NonNegative
    if metric.aggregate is Aggregate.SUM:
        return _base_type(signal.annotation)
    return float | None


def metric_description(signal: Signal, metric: WindowMetric) -> str:
    """The declared description of a window metric, or one made from its signal and aggregate."""
    if metric.description:
        return metric.description
    if metric.aggregate is Aggregate.COUNT:
        return f"Outcomes of the window with {signal.name} true."
    if metric.aggregate is Aggregate.SUM:
        return f"Sum of {signal.name} over the window's outcomes that have one (0 when none has)."
    return f"Mean of {signal.name} over the window's outcomes that have one; null when none has."


def check_signals(signals: tuple[Signal, ...]) -> None:
    """Fail at import, with the offending name, on a declaration the derivations cannot honour."""
    # Signals are outcome fields and metrics are window fields: a name may be both (thumbs_up).
    for names in ([s.name for s in signals], [m.name for s in signals for m in s.window]):
        for name in names:
            if names.count(name) > 1 or not name.isidentifier():
                raise ValueError(f"signal registry: {name!r} is declared twice or is not a valid name")
    for signal in signals:
        base = _base_type(signal.annotation)
        kinds = [m.aggregate for m in signal.window]
        if len(set(kinds)) < len(kinds):
            raise ValueError(f"signal {signal.name}: at most one window metric per aggregate")
        for metric in signal.window:
            if metric.aggregate is Aggregate.COUNT and base is not bool:
                raise ValueError(f"signal {signal.name}: only a bool signal can be counted ({metric.name})")
            if metric.aggregate is not Aggregate.COUNT and base not in (int, float):
                raise ValueError(f"signal {signal.name}: only a number can be summed or averaged")


check_signals(SIGNALS)

#: Signal names, in field order.
SIGNAL_NAMES: tuple[str, ...] = tuple(s.name for s in SIGNALS)
#: The signals a metrics window aggregates: the signal fields of a contribution.
WINDOWED_SIGNALS: tuple[Signal, ...] = tuple(s for s in SIGNALS if s.window)
#: ``(metric name, aggregate, signal name)`` of every window metric, in field order.
WINDOW_METRICS: tuple[tuple[str, Aggregate, str], ...] = tuple(
    (m.name, m.aggregate, s.name) for s in SIGNALS for m in s.window
)


def _field(annotation: Any, description: str) -> tuple[Any, FieldInfo]:
    return annotation, Field(description=description)


def outcome_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """The signal fields of an outcome, as ``pydantic.create_model`` takes them."""
    return {s.name: _field(s.annotation, s.description) for s in SIGNALS}


def contribution_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """The signal fields of a window contribution (the signals a window aggregates)."""
    return {s.name: _field(s.annotation, s.description) for s in WINDOWED_SIGNALS}


def window_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """The fields of a window aggregate computed from signals."""
    return {
        m.name: _field(metric_annotation(s, m), metric_description(s, m)) for s in SIGNALS for m in s.window
    }
