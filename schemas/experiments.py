"""Prompt A/B experiments, their decisions and regression alerts: the records on their topics.

* ``ai.experiments.v1`` — :class:`Experiment`, compacted, key ``experiment_id``: the current revision of
  each experiment (what it compares, how it decides, its status and the promote/revert applied to it).
* ``ai.experiments.decisions.v1`` — :class:`ExperimentDecision`, key ``experiment_id``: every change of
  an experiment's decision, with the numbers behind it.
* ``ai.alerts.regressions.v1`` — :class:`RegressionAlert`, key ``prompt_version``: one ``alert`` when a
  prompt version's metric rises significantly against its own past, one ``resolve`` when it recovers.

Decisions and alerts carry deterministic ids: an evaluator that replays the outcomes log after a crash
derives the same records with the same ids, so a consumer recognises re-emissions. Floats that have no
finite value (an effect that cannot be estimated yet, an unbounded interval) are ``null``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from schemas.events import SCHEMA_VERSION, Label, Timestamp


class OutcomeMetric(StrEnum):
    """A per-interaction outcome metric; all are lower-is-better."""

    REGENERATION_RATE = "regeneration_rate"
    CORRECTION_RATE = "correction_rate"
    ABANDONMENT_RATE = "abandonment_rate"
    EDIT_DISTANCE = "edit_distance_norm"
    RESPONSE_TIME = "response_time_ms"


class ExperimentStatus(StrEnum):
    """Where an experiment is in its life."""

    RUNNING = "running"
    STOPPED = "stopped"
    PROMOTED = "promoted"
    REVERTED = "reverted"


class DecisionAction(StrEnum):
    """What the evaluator recommends."""

    CONTINUE = "continue"
    PROMOTE = "promote"
    REVERT = "revert"
    INVALID = "invalid"


class DecisionRule(StrEnum):
    """Which rule of the decision fired (docs/experiments.md lists them in order)."""

    ASSIGNMENT_MISMATCH = "assignment_mismatch"
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"
    INSUFFICIENT_SAMPLE = "insufficient_sample"
    GUARDRAIL_WORSE = "guardrail_worse"
    PRIMARY_WORSE = "primary_worse"
    PRIMARY_BETTER = "primary_better"
    SAMPLE_RATIO_UNCONFIRMED = "sample_ratio_unconfirmed"
    BELOW_MINIMUM_IMPROVEMENT = "below_minimum_improvement"
    NO_SIGNIFICANT_DIFFERENCE = "no_significant_difference"


class AlertKind(StrEnum):
    """An incident opening or recovering."""

    ALERT = "alert"
    RESOLVE = "resolve"


class AlertSeverity(StrEnum):
    """How large the rise is relative to the baseline (low < +50 %, medium < +100 %, high above)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Weight = Annotated[StrictInt, Field(gt=0)]
Share = Annotated[float, Field(gt=0, lt=1)]


class ArmNumbers(_Record):
    """Sample size of one arm at a look."""

    variant: Label = Field(description="The arm's variant: a prompt version.")
    users: int = Field(ge=0, description="Distinct users with at least one counted interaction.")
    interactions: int = Field(ge=0, description="Interactions counted (latest outcome version each).")


class SrmCheck(_Record):
    """The sample-ratio check of the users per arm against the intended split: the sequential
    Dirichlet-multinomial mixture test, valid at every look (decisions made before it was sequential
    carry a chi-square p-value and no ``e_value``)."""

    observed_users: tuple[int, int] = Field(description="(control, treatment) users.")
    expected_users: tuple[float, float] = Field(description="What the split predicts for the same total.")
    chi2: float = Field(
        description="Pearson's chi-square statistic of the observed against the expected users, for reading."
    )
    p_value: float = Field(description="The always-valid p-value at this look: min(1, 1 / e_value).")
    threshold: float = Field(
        description="Level of the test over all looks: a mismatch when e_value >= 1 / threshold."
    )
    checked: bool = Field(description="False before the first user.")
    mismatch: bool = Field(description="True when the test proves the split broken: the decision is invalid.")
    e_value: float | None = Field(
        None, ge=0, description="The mixture likelihood ratio of 'another split' against the intended one."
    )
    confirmed: bool | None = Field(
        None,
        description="True when the users do not lean towards a mismatch (e_value below 3): a promote "
        "needs it.",
    )


class AssignmentCheck(_Record):
    """The logged variants checked against the consistent hash of the experiment record."""

    users: int = Field(
        ge=0, description="(user, logged variant) pairs of the experiment so far, over every variant logged."
    )
    mismatched_users: int = Field(
        ge=0, description="Those whose logged variant is not the one the hash of the experiment gives."
    )
    mismatch_share: float = Field(ge=0, le=1, description="mismatched_users / users (0 without users).")
    threshold: float = Field(
        gt=0,
        lt=1,
        description="Share above which the experiment is invalid, judged from 1 / threshold users on.",
    )
    mismatch: bool = Field(description="True when the share is above the threshold: the decision is invalid.")


class MetricComparison(_Record):
    """One metric, treatment against control, at a look.

    ``relative_effect = treatment_mean / control_mean - 1`` (negative is better); ``[ci_low, ci_high]`` is
    its anytime-valid confidence sequence at level ``ci_level``; ``p_value`` is the always-valid p-value
    at this look and ``p_value_min`` its running minimum over the experiment's looks.
    """

    metric: OutcomeMetric = Field(description="The metric compared (lower is better).")
    role: Literal["primary", "guardrail"] = Field(
        description="primary: the metric to improve; guardrail: one that must not get worse."
    )
    control_mean: float | None = Field(description="The metric in the control arm; null without data.")
    treatment_mean: float | None = Field(description="The metric in the treatment arm; null without data.")
    control_n: int = Field(ge=0, description="Control interactions that carry the metric.")
    treatment_n: int = Field(ge=0, description="Treatment interactions that carry the metric.")
    control_users: int = Field(ge=0, description="Control users behind control_n.")
    treatment_users: int = Field(ge=0, description="Treatment users behind treatment_n.")
    relative_effect: float | None = Field(
        description="treatment_mean / control_mean - 1 (negative is better); null when not estimable."
    )
    ci_low: float | None = Field(description="null: unbounded (not estimable yet).")
    ci_high: float | None = Field(description="null: unbounded (not estimable yet).")
    ci_level: float = Field(
        gt=0, lt=1, description="Confidence level of [ci_low, ci_high], valid at every look."
    )
    p_value: float = Field(
        ge=0, le=1, description="The always-valid p-value of 'no difference' at this look."
    )
    p_value_min: float = Field(ge=0, le=1, description="Smallest p-value at any look so far.")
    e_value: float = Field(ge=0, description="The mixture likelihood ratio (1 / p_value, uncapped).")
    variance_reduction: float | None = Field(
        None,
        description="Share of the effect's variance CUPED removed with the users' pre-experiment values "
        "(relative_effect is then the adjusted one); null when CUPED is off.",
    )
    credible_improvement: float | None = Field(
        None,
        description="Primary only: the relative improvement the data exceed at the one-sided level "
        "improvement_alpha, valid at every look; promote needs it above min_relative_improvement.",
    )


class ExperimentDecision(_Record):
    """A change of an experiment's decision, and every number behind it (``ai.experiments.decisions.v1``)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")
    decision_id: UUID = Field(
        description="Deterministic: the same change of decision keeps its id on replay."
    )
    experiment_id: Label = Field(description="The experiment decided on.")
    experiment_created_at: Timestamp = Field(
        description="The experiment's created_at: tells decisions of a re-created experiment apart."
    )
    sequence: int = Field(ge=1, description="1 for the experiment's first decision, +1 per change.")
    action: DecisionAction = Field(description="What the evaluator recommends.")
    rule: DecisionRule = Field(description="The rule that fired (the first that applies, in order).")
    reason: str = Field(description="One line a person can read.")
    as_of: Timestamp = Field(
        description="Event time of the look: outcomes settled before it were counted (one look per window)."
    )
    looks: int = Field(ge=1, description="Looks at this experiment so far, this one included.")
    control: ArmNumbers = Field(description="The control arm's sample at this look.")
    treatment: ArmNumbers = Field(description="The treatment arm's sample at this look.")
    srm: SrmCheck = Field(description="The sample ratio check of the users per arm.")
    primary: MetricComparison | None = Field(description="null while the sample is insufficient or SRM.")
    guardrails: tuple[MetricComparison, ...] = Field(
        description="Each guardrail metric compared (empty while the primary is null)."
    )
    split: tuple[Weight, Weight] = Field(description="Intended (control, treatment) weights.")
    alpha: Share = Field(description="Bound on a wrong promote/revert over the whole experiment.")
    min_interactions_per_arm: int = Field(ge=2, description="The experiment's minimum interactions per arm.")
    min_relative_improvement: float = Field(
        ge=0, lt=1, description="The experiment's minimum relative improvement worth promoting."
    )
    evidence_sql: str = Field(description="SQL over interaction_outcomes that shows the arms' numbers.")
    min_users_per_arm: int | None = Field(
        None, ge=2, description="The experiment's minimum users per arm (null: decided before it existed)."
    )
    improvement_alpha: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="Bound on promoting an improvement exactly at the minimum (null: decided before it "
        "existed).",
    )
    assignment: AssignmentCheck | None = Field(
        None, description="The consistent-hash check of the logged variants (null: not checked)."
    )


class ExperimentAction(_Record):
    """A promote or revert that was applied: by a person (``feedbackloop experiments promote``) or by the
    evaluator when auto-apply is on. This is the prompt changelog entry of the experiment."""

    action: Literal["promote", "revert"] = Field(description="What was applied.")
    applied_at: Timestamp = Field(description="When it was applied (wall clock).")
    applied_by: Label = Field(description="'evaluator' (auto-apply) or who ran the command.")
    production_version: Label = Field(description="The version serving all traffic from now on.")
    retired_version: Label = Field(description="The version taken out of production.")
    decision: ExperimentDecision | None = Field(
        description="The evaluator's decision the action followed (null when forced without one)."
    )
    note: str = Field("", max_length=10_000, description="Why, in the words of who applied it.")


class Experiment(_Record):
    """One prompt A/B experiment at one revision (``ai.experiments.v1``, compacted, key ``experiment_id``).

    The record is the one source of the split: users are assigned by the consistent hash
    (``schemas.assignment``) over the variants ``{control: split[0], treatment: split[1]}`` in that order,
    which the SDK builds from this record (``FeedbackClient.experiment``). Arms are matched by the
    ``variant`` each interaction carries, and the evaluator recomputes every user's variant from the hash
    to check it.
    """

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")
    experiment_id: Label = Field(description="Names the experiment; the SDK hashes users with it.")
    revision: int = Field(ge=1, description="+1 per change; a consumer keeps the highest.")
    control: Label = Field(description="The prompt version in production.")
    treatment: Label = Field(description="The candidate prompt version.")
    split: tuple[Weight, Weight] = Field((80, 20), description="(control, treatment) weights of the users.")
    primary_metric: OutcomeMetric = Field(
        OutcomeMetric.REGENERATION_RATE, description="The metric the treatment should lower."
    )
    guardrail_metrics: tuple[OutcomeMetric, ...] = Field(
        (OutcomeMetric.ABANDONMENT_RATE, OutcomeMetric.RESPONSE_TIME),
        description="Metrics that must not get worse; a significant rise reverts.",
    )
    min_users_per_arm: int = Field(
        500,
        ge=2,
        description="No promote/revert before both arms have this many users (the randomized unit).",
    )
    min_interactions_per_arm: int = Field(
        2, ge=2, description="... and this many interactions (a further floor; 2 adds none)."
    )
    min_relative_improvement: float = Field(
        0.10, ge=0, lt=1, description="Promote only if the relative improvement is credibly more than this."
    )
    alpha: Share = Field(0.05, description="Bound on a wrong promote/revert over the whole experiment.")
    status: ExperimentStatus = Field(ExperimentStatus.RUNNING, description="Where it is in its life.")
    description: str = Field("", max_length=10_000, description="What the treatment changes, for people.")
    created_at: Timestamp = Field(
        description="When it was created; a re-created experiment (same id) is a new one."
    )
    updated_at: Timestamp = Field(description="When this revision was written.")
    applied: ExperimentAction | None = Field(None, description="The promote/revert applied, if any.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.control == self.treatment:
            raise ValueError("control and treatment must be different prompt versions")
        if self.primary_metric in self.guardrail_metrics:
            raise ValueError("the primary metric cannot also be a guardrail")
        if len(set(self.guardrail_metrics)) != len(self.guardrail_metrics):
            raise ValueError("guardrail metrics must not repeat")
        decided = self.status in (ExperimentStatus.PROMOTED, ExperimentStatus.REVERTED)
        if (self.applied is not None) != decided:
            raise ValueError("an applied action goes with status promoted/reverted, and only with them")
        return self

    @property
    def is_running(self) -> bool:
        """Whether the evaluator still decides on it."""
        return self.status is ExperimentStatus.RUNNING


class RegressionAlert(_Record):
    """An incident opening (``alert``) or recovering (``resolve``) for one prompt version and metric
    (``ai.alerts.regressions.v1``, key ``prompt_version``).

    An incident opens when the evidence accumulated since the level last looked normal (``cusum``)
    reaches ``cusum_threshold``; ``opened_at`` is where that accumulation began. ``observed`` is the
    alerting window's mean; ``expected`` the baseline's, and ``[expected_low, expected_high]`` where one
    window's mean falls with probability ``1 - 2 * per-window alpha`` when nothing changed. A resolve
    carries the window that completed the recovery and the incident's peak severity.
    """

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this schema.")
    alert_id: UUID = Field(description="Deterministic: uuid5 of the incident and the kind.")
    kind: AlertKind = Field(description="alert: an incident opened; resolve: it recovered.")
    incident_id: UUID = Field(description="Names the incident; an alert and its resolve share it.")
    prompt_version: Label = Field(description="The prompt version that regressed.")
    metric: OutcomeMetric = Field(description="The metric that rose.")
    severity: AlertSeverity = Field(
        description="From the relative rise: the opening window's (alert), the incident's peak (resolve)."
    )
    window_start: Timestamp = Field(description="Event time (interaction created_at) the window starts.")
    window_end: Timestamp = Field(description="Event time the window ends (exclusive).")
    opened_at: Timestamp = Field(description="Start of the window where the incident's rise began.")
    observed: float = Field(description="The metric in the window.")
    expected: float = Field(description="The metric the baseline expects.")
    expected_low: float = Field(
        description="Low end of where the window's metric falls when nothing changed."
    )
    expected_high: float = Field(
        description="High end of where the window's metric falls when nothing changed."
    )
    relative_rise: float | None = Field(description="observed / expected - 1; null when expected is 0.")
    z: float | None = Field(description="null: infinite (a flat baseline and any rise).")
    p_value: float = Field(
        ge=0, le=1, description="The window's own one-sided p-value against the baseline (for reading)."
    )
    window_interactions: int = Field(ge=0, description="Interactions in the window carrying the metric.")
    baseline_windows: int = Field(ge=0, description="Windows the baseline pools.")
    baseline_seeded_from: Label | None = Field(
        description="The version this one replaced, while its windows still seed the baseline."
    )
    evidence_sql: str = Field(description="SQL over interaction_outcomes: the metric per window around it.")
    evidence_link: str | None = Field(description="The SQL in a link, when a template is configured.")
    cusum: float | None = Field(
        None,
        description="The evidence accumulated over the incident's windows (a CUSUM of log-likelihood "
        "ratios) when it opened; null in alerts raised before detection accumulated evidence.",
    )
    cusum_threshold: float | None = Field(
        None, description="The threshold the CUSUM reached: log(horizon windows / false-alarm budget)."
    )


def finite(value: float) -> float | None:
    """``value`` if it is a finite number, else ``None`` (JSON has no NaN or infinity)."""
    return value if math.isfinite(value) else None


__all__ = [
    "AlertKind",
    "AlertSeverity",
    "ArmNumbers",
    "AssignmentCheck",
    "DecisionAction",
    "DecisionRule",
    "Experiment",
    "ExperimentAction",
    "ExperimentDecision",
    "ExperimentStatus",
    "MetricComparison",
    "OutcomeMetric",
    "RegressionAlert",
    "SrmCheck",
    "finite",
]
