"""Pure mapping from topic messages to ClickHouse rows, one table per topic.

Every message is validated against the contract before it becomes a row; a message that does
not validate is reported (it never reaches ClickHouse half-right). Where the contract model allows
(``schemas.codec``), the common form is decoded by a msgspec struct derived from the model, and its
row holds ids as text and timestamps as epoch milliseconds — what the ClickHouse client writes with
no conversion per value (every timestamp column is ``DateTime64(3)``); a message in another form is
validated by the model and its row takes the same representation, so a column never mixes types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from schemas import (
    DeadLetter,
    EditOperation,
    EditOperations,
    Experiment,
    ExperimentDecision,
    FeedbackJoined,
    InteractionEvent,
    InteractionOutcome,
    PromptVersionMetrics,
    RegressionAlert,
    SupportTicket,
    to_epoch_ms,
    topics,
)
from schemas.codec import FastDecoder


@dataclass(frozen=True)
class TableSpec:
    """Where one topic's messages go and how they become rows."""

    table: str
    topic: str
    columns: tuple[str, ...]
    to_row: Callable[[bytes], list[Any]]


def _fields(model: type[BaseModel], exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(name for name in model.model_fields if name not in exclude)


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return to_epoch_ms(value)
    return value


def _row_maker(model: type[BaseModel], columns: tuple[str, ...]) -> Callable[[bytes], list[Any]]:
    validate = model.model_validate_json
    try:
        fast = FastDecoder(model)
    except TypeError:  # a model the deriver cannot mirror: the model alone, its own value types

        def to_row_by_model(value: bytes) -> list[Any]:
            event = validate(value)
            return [getattr(event, c) for c in columns]

        return to_row_by_model
    decode = fast.decode
    stamped = [(columns.index(name), n) for n, name in enumerate(fast.timestamps) if name in columns]

    def to_row(value: bytes) -> list[Any]:
        decoded = decode(value)
        if decoded is None:
            event = validate(value)
            return [_plain(getattr(event, c)) for c in columns]
        obj, stamps = decoded
        row = [getattr(obj, c) for c in columns]
        for index, n in stamped:
            ms = stamps[n]
            row[index] = ms if ms >= 0 else None
        return row

    return to_row


def _spec(table: str, topic: str, model: type[BaseModel], exclude: tuple[str, ...] = ()) -> TableSpec:
    columns = _fields(model, exclude)
    return TableSpec(table, topic, columns, _row_maker(model, columns))


#: ``edit_operations``: one row per edit, its operations as parallel arrays (``op_*``), so a replayed
#: edit is one row that the table folds by event id; the view ``edit_operation_rows`` unrolls them.
_EDIT_SCALARS = _fields(EditOperations, exclude=("schema_version", "operations"))
_EDIT_OP_FIELDS = _fields(EditOperation)


def _edit_operations_row(value: bytes) -> list[Any]:
    edit = EditOperations.model_validate_json(value)
    ops = edit.operations
    arrays = [[getattr(op, f) for op in ops] for f in _EDIT_OP_FIELDS]
    return [getattr(edit, c) for c in _EDIT_SCALARS] + arrays


#: ``experiment_decisions``: a decision flattened (arms, SRM, primary metric); guardrails as JSON.
_DECISION_COLUMNS = (
    *("decision_id", "experiment_id", "experiment_created_at", "sequence", "action", "rule", "reason"),
    *("as_of", "looks", "control_variant", "control_users", "control_interactions", "treatment_variant"),
    *("treatment_users", "treatment_interactions", "srm_chi2", "srm_p_value", "srm_checked", "srm_mismatch"),
    *("primary_metric", "primary_control_mean", "primary_treatment_mean", "primary_relative_effect"),
    *("primary_ci_low", "primary_ci_high", "primary_ci_level", "primary_p_value", "primary_p_value_min"),
    *("guardrails", "split_control", "split_treatment", "alpha", "min_interactions_per_arm"),
    *("min_relative_improvement", "evidence_sql"),
    # 0010: the minimum in users, the sequential SRM test, the assignment check, the minimum-improvement
    # test and CUPED.
    *("min_users_per_arm", "improvement_alpha", "srm_e_value", "srm_confirmed", "assignment_users"),
    *("assignment_mismatched_users", "assignment_mismatch_share", "assignment_mismatch"),
    *("primary_credible_improvement", "primary_variance_reduction"),
)
_PRIMARY_FIELDS = ("control_mean", "treatment_mean", "relative_effect", "ci_low", "ci_high", "ci_level")


def _decision_row(value: bytes) -> list[Any]:
    d = ExperimentDecision.model_validate_json(value)
    p, a = d.primary, d.assignment
    primary = [None] * 9 if p is None else [p.metric.value, *(getattr(p, f) for f in _PRIMARY_FIELDS)]
    if p is not None:
        primary += [p.p_value, p.p_value_min]
    guardrails = "[" + ",".join(g.model_dump_json() for g in d.guardrails) + "]"
    return [
        *(d.decision_id, d.experiment_id, d.experiment_created_at, d.sequence, d.action.value, d.rule.value),
        *(d.reason, d.as_of, d.looks, d.control.variant, d.control.users, d.control.interactions),
        *(d.treatment.variant, d.treatment.users, d.treatment.interactions),
        *(d.srm.chi2, d.srm.p_value, d.srm.checked, d.srm.mismatch),
        *primary,
        *(guardrails, d.split[0], d.split[1], d.alpha, d.min_interactions_per_arm),
        *(d.min_relative_improvement, d.evidence_sql),
        *(d.min_users_per_arm, d.improvement_alpha, d.srm.e_value, d.srm.confirmed),
        *((a.users, a.mismatched_users, a.mismatch_share, a.mismatch) if a is not None else (None,) * 4),
        *((p.credible_improvement, p.variance_reduction) if p is not None else (None, None)),
    ]


#: ``experiments``: every revision of every experiment (``ai.experiments.v1``), its applied promote or
#: revert flattened, so that ClickHouse knows when each ran and when a version was promoted.
_EXPERIMENT_COLUMNS = (
    *("experiment_id", "revision", "control", "treatment", "split_control", "split_treatment"),
    *("primary_metric", "status", "created_at", "updated_at", "applied_action", "applied_at"),
    *("applied_by", "production_version", "retired_version"),
)


def _experiment_row(value: bytes) -> list[Any]:
    e = Experiment.model_validate_json(value)
    a = e.applied
    applied = (
        [None] * 5
        if a is None
        else [a.action, a.applied_at, a.applied_by, a.production_version, a.retired_version]
    )
    return [
        *(e.experiment_id, e.revision, e.control, e.treatment, e.split[0], e.split[1]),
        *(e.primary_metric.value, e.status.value, e.created_at, e.updated_at),
        *applied,
    ]


#: The sink's routing: topic (contract name) -> table.
TABLES: tuple[TableSpec, ...] = (
    _spec("ai_interactions", topics.INTERACTIONS, InteractionEvent),
    _spec("ai_feedback", topics.FEEDBACK_JOINED, FeedbackJoined),
    _spec("interaction_outcomes", topics.OUTCOMES, InteractionOutcome, exclude=("schema_version",)),
    _spec("prompt_version_metrics", topics.METRICS, PromptVersionMetrics, exclude=("schema_version",)),
    _spec("dead_letters", topics.DEADLETTER, DeadLetter, exclude=("schema_version",)),
    TableSpec(
        "edit_operations",
        topics.EDIT_OPERATIONS,
        _EDIT_SCALARS + tuple(f"op_{f}" for f in _EDIT_OP_FIELDS),
        _edit_operations_row,
    ),
    TableSpec("experiment_decisions", topics.EXPERIMENT_DECISIONS, _DECISION_COLUMNS, _decision_row),
    _spec("regression_alerts", topics.REGRESSION_ALERTS, RegressionAlert, exclude=("schema_version",)),
    _spec("support_tickets", topics.SUPPORT_TICKETS, SupportTicket, exclude=("schema_version",)),
    TableSpec("experiments", topics.EXPERIMENTS, _EXPERIMENT_COLUMNS, _experiment_row),
)
