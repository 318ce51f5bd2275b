"""The contract records the evaluator derives: decisions, alerts and experiment revisions, with their ids.

Ids are deterministic (uuid5 of what the record is about), so a replay of the log derives the same records
with the same ids and a consumer recognises re-emissions.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from experiments.config import EvaluatorConfig
from experiments.decision import AssignmentResult, Decision, MetricResult
from experiments.evidence import experiment_evidence_sql, regression_evidence_sql
from experiments.regression import DetectorState, RegressionEvent, WindowObservation
from schemas import to_epoch_ms
from schemas.experiments import (
    ArmNumbers,
    AssignmentCheck,
    Experiment,
    ExperimentAction,
    ExperimentDecision,
    ExperimentStatus,
    MetricComparison,
    OutcomeMetric,
    RegressionAlert,
    SrmCheck,
    finite,
)

#: Namespace of the deterministic ids of decisions and alerts.
_IDS = uuid.UUID("0b6f4c52-8a0e-4d83-a0f5-2f4f1b7f3c11")


def decision_id(experiment: Experiment, sequence: int, action: str, rule: str) -> uuid.UUID:
    """Deterministic id of the ``sequence``-th decision of an experiment (a re-created experiment, with
    another ``created_at``, gets other ids)."""
    created = to_epoch_ms(experiment.created_at)
    return uuid.uuid5(
        _IDS, f"decision\x1f{experiment.experiment_id}\x1f{created}\x1f{sequence}\x1f{action}\x1f{rule}"
    )


def alert_id(incident_id: str, kind: str) -> uuid.UUID:
    """Deterministic id of an incident's alert or resolve."""
    return uuid.uuid5(_IDS, f"alert\x1f{incident_id}\x1f{kind}")


def _comparison(result: MetricResult, min_p: Mapping[OutcomeMetric, float]) -> MetricComparison:
    return MetricComparison(
        metric=result.metric,
        role="primary" if result.role == "primary" else "guardrail",
        control_mean=finite(result.control_mean),
        treatment_mean=finite(result.treatment_mean),
        control_n=result.control_n,
        treatment_n=result.treatment_n,
        control_users=result.control_users,
        treatment_users=result.treatment_users,
        relative_effect=finite(result.relative_effect),
        ci_low=finite(result.ci_low),
        ci_high=finite(result.ci_high),
        ci_level=result.ci_level,
        p_value=result.p_value,
        p_value_min=min_p.get(result.metric, result.p_value),
        e_value=result.e_value,
        variance_reduction=None if result.variance_reduction is None else finite(result.variance_reduction),
        credible_improvement=None
        if result.credible_improvement is None
        else finite(result.credible_improvement),
    )


def decision_record(
    spec: Experiment,
    decision: Decision,
    *,
    sequence: int,
    looks: int,
    as_of_ms: int,
    min_p: Mapping[OutcomeMetric, float],
    database: str,
    improvement_alpha: float,
) -> ExperimentDecision:
    """The ``sequence``-th decision record of ``spec``, made at the look at ``as_of_ms`` (the ``looks``-th);
    ``min_p`` is each metric's smallest p-value over the looks so far."""
    srm = decision.srm
    audit = decision.assignment
    control_users, treatment_users = srm.observed
    expected_control, expected_treatment = srm.expected
    return ExperimentDecision(
        decision_id=decision_id(spec, sequence, decision.action.value, decision.rule.value),
        experiment_id=spec.experiment_id,
        experiment_created_at=spec.created_at,
        sequence=sequence,
        action=decision.action,
        rule=decision.rule,
        reason=decision.reason,
        as_of=datetime.fromtimestamp(as_of_ms / 1000, UTC),
        looks=looks,
        control=ArmNumbers(
            variant=decision.control.name,
            users=decision.control.users,
            interactions=decision.control.interactions,
        ),
        treatment=ArmNumbers(
            variant=decision.treatment.name,
            users=decision.treatment.users,
            interactions=decision.treatment.interactions,
        ),
        srm=SrmCheck(
            observed_users=(control_users, treatment_users),
            expected_users=(expected_control, expected_treatment),
            chi2=srm.chi2,
            p_value=srm.p_value,
            threshold=srm.threshold,
            checked=srm.checked,
            mismatch=srm.mismatch,
            e_value=srm.e_value,
            confirmed=srm.confirmed,
        ),
        primary=_comparison(decision.primary, min_p) if decision.primary is not None else None,
        guardrails=tuple(_comparison(g, min_p) for g in decision.guardrails),
        split=spec.split,
        alpha=spec.alpha,
        min_interactions_per_arm=spec.min_interactions_per_arm,
        min_relative_improvement=spec.min_relative_improvement,
        evidence_sql=experiment_evidence_sql(database, spec.experiment_id),
        min_users_per_arm=spec.min_users_per_arm,
        improvement_alpha=improvement_alpha,
        assignment=None if audit is None else _assignment_check(audit),
    )


def _assignment_check(audit: AssignmentResult) -> AssignmentCheck:
    return AssignmentCheck(
        users=audit.counts.users,
        mismatched_users=audit.counts.mismatched,
        mismatch_share=audit.counts.share,
        threshold=audit.threshold,
        mismatch=audit.mismatch,
    )


def alert_record(
    event: RegressionEvent,
    state: DetectorState,
    observation: WindowObservation,
    config: EvaluatorConfig,
    seeded_from: str | None,
) -> RegressionAlert:
    """The record of an incident's alert or resolve; ``seeded_from`` names the version whose windows
    still seed the detector's baseline, if any."""
    window_ms = config.window_ms
    opened_ms = to_epoch_ms(event.opened_at)
    sql = regression_evidence_sql(
        config.database,
        event.version,
        event.metric,
        window_ms,
        opened_ms - config.regression.baseline_windows * window_ms,
        to_epoch_ms(event.window_end),
    )
    link = None
    if config.evidence_link_template is not None:
        link = config.evidence_link_template.replace("{sql}", quote(sql, safe=""))
    return RegressionAlert(
        alert_id=alert_id(event.incident_id, event.kind.value),
        kind=event.kind,
        incident_id=uuid.UUID(event.incident_id),
        prompt_version=event.version,
        metric=event.metric,
        severity=event.severity,
        window_start=event.window_start,
        window_end=event.window_end,
        opened_at=event.opened_at,
        observed=event.observed,
        expected=event.expected,
        expected_low=event.expected_low,
        expected_high=event.expected_high,
        relative_rise=finite(event.relative_rise),
        z=finite(event.z),
        p_value=event.p_value,
        window_interactions=round(observation.moments.n),
        baseline_windows=len(state.baseline),
        baseline_seeded_from=seeded_from,
        evidence_sql=sql,
        evidence_link=link,
        cusum=finite(event.cusum),
        cusum_threshold=event.threshold,
    )


def apply_decision(
    experiment: Experiment,
    decision: ExperimentDecision | None,
    *,
    applied_by: str,
    at: datetime,
    action: str | None = None,
    note: str = "",
) -> Experiment:
    """The next revision of ``experiment`` with a promote or revert applied (the prompt changelog entry).

    ``action`` defaults to the decision's; without a decision it must be given (a forced action).
    """
    chosen = action or (decision.action.value if decision is not None else None)
    if chosen not in ("promote", "revert"):
        raise ValueError(f"only promote or revert can be applied, not {chosen!r}")
    promote = chosen == "promote"
    applied = ExperimentAction(
        action="promote" if promote else "revert",
        applied_at=at,
        applied_by=applied_by,
        production_version=experiment.treatment if promote else experiment.control,
        retired_version=experiment.control if promote else experiment.treatment,
        decision=decision,
        note=note,
    )
    return Experiment.model_validate(
        {
            **experiment.model_dump(exclude={"applied"}),
            "revision": experiment.revision + 1,
            "status": ExperimentStatus.PROMOTED if promote else ExperimentStatus.REVERTED,
            "updated_at": at,
            "applied": applied,
        }
    )


def changed_status(experiment: Experiment, status: ExperimentStatus, at: datetime) -> Experiment:
    """The next revision of ``experiment`` with another status (e.g. stopped)."""
    return Experiment.model_validate(
        {**experiment.model_dump(), "revision": experiment.revision + 1, "status": status, "updated_at": at}
    )


__all__ = [
    "alert_id",
    "alert_record",
    "apply_decision",
    "changed_status",
    "decision_id",
    "decision_record",
]
