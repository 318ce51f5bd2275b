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

#: Every public topic, all created with the same partition count.
PUBLIC_TOPICS: Final = (
    INTERACTIONS,
    FEEDBACK,
    DEADLETTER,
    FEEDBACK_JOINED,
    OUTCOMES,
    METRICS,
    EDIT_OPERATIONS,
)


def topic_name(base: str, namespace: str = "") -> str:
    """Return the real topic name of ``base`` under ``namespace`` ('' keeps the contract name)."""
    return f"{namespace}.{base}" if namespace else base
