"""The one contract every feedbackloop stage shares: event models, topic names and the outcome signals."""

from schemas import signals, topics
from schemas.deadletter import DeadLetter
from schemas.derived import (
    FeedbackJoined,
    InteractionOutcome,
    MetricContribution,
    PromptVersionMetrics,
)
from schemas.edits import EditOperation, EditOperations
from schemas.erasure import ErasureRequest
from schemas.events import (
    SCHEMA_VERSION,
    FeedbackEvent,
    FeedbackType,
    InteractionEvent,
    format_ms,
    format_timestamp,
    to_epoch_ms,
)
from schemas.experiments import (
    Experiment,
    ExperimentDecision,
    ExperimentStatus,
    OutcomeMetric,
    RegressionAlert,
)
from schemas.partitioning import partition_for
from schemas.tickets import SupportTicket

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "EditOperation",
    "EditOperations",
    "ErasureRequest",
    "Experiment",
    "ExperimentDecision",
    "ExperimentStatus",
    "FeedbackEvent",
    "FeedbackJoined",
    "FeedbackType",
    "InteractionEvent",
    "InteractionOutcome",
    "MetricContribution",
    "OutcomeMetric",
    "PromptVersionMetrics",
    "RegressionAlert",
    "SupportTicket",
    "format_ms",
    "format_timestamp",
    "partition_for",
    "signals",
    "to_epoch_ms",
    "topics",
]
