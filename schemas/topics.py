"""Topic names of the public contract, and the one way to turn them into real names."""

from __future__ import annotations

from typing import Final

INTERACTIONS: Final = "ai.interactions.v1"
FEEDBACK: Final = "ai.feedback.v1"
DEADLETTER: Final = "ai.deadletter.v1"
FEEDBACK_JOINED: Final = "ai.feedback.joined.v1"
OUTCOMES: Final = "ai.outcomes.v1"
METRICS: Final = "ai.metrics.v1"
EDIT_OPERATIONS: Final = "ai.edits.operations.v1"
#: Experiments by id (compacted: the latest revision of each); decisions; regression alerts and resolves.
EXPERIMENTS: Final = "ai.experiments.v1"
EXPERIMENT_DECISIONS: Final = "ai.experiments.decisions.v1"
REGRESSION_ALERTS: Final = "ai.alerts.regressions.v1"
#: Support tickets from apps and help desks (key ``user_id``), read by the sink only.
SUPPORT_TICKETS: Final = "ai.support_tickets.v1"
#: Users to forget, by user_id (compacted, never a tombstone: the lasting record of each erasure).
ERASURES: Final = "ai.erasures.v1"

#: Every public topic, all created with the same partition count.
PUBLIC_TOPICS: Final = (
    INTERACTIONS,
    FEEDBACK,
    DEADLETTER,
    FEEDBACK_JOINED,
    OUTCOMES,
    METRICS,
    EDIT_OPERATIONS,
    EXPERIMENTS,
    EXPERIMENT_DECISIONS,
    REGRESSION_ALERTS,
    SUPPORT_TICKETS,
    ERASURES,
)

#: Public topics that keep the latest record per key (``cleanup.policy=compact``).
COMPACTED_TOPICS: Final = (EXPERIMENTS, ERASURES)


def topic_name(base: str, namespace: str = "") -> str:
    """Return the real topic name of ``base`` under ``namespace`` ('' keeps the contract name)."""
    return f"{namespace}.{base}" if namespace else base
