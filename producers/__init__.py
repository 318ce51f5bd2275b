"""Producers: the SDK applications use to publish interactions and feedback, and the HTTP collector.

``FeedbackClient`` is the SDK (typed calls, never blocking, spooling to disk while the broker is
away); ``Experiment`` assigns users to prompt variants by consistent hashing; ``EventPublisher`` is
the minimal synchronous-flush publisher used by tools and tests.
"""

from producers.assignment import Assignment, Experiment, assign_variant
from producers.client import DeliveryError, EventPublisher
from producers.sdk import (
    BufferFullError,
    ClientClosedError,
    FeedbackClient,
    InteractionLike,
    InteractionRef,
    Mode,
    TimedInteraction,
)

__all__ = [
    "Assignment",
    "BufferFullError",
    "ClientClosedError",
    "DeliveryError",
    "EventPublisher",
    "Experiment",
    "FeedbackClient",
    "InteractionLike",
    "InteractionRef",
    "Mode",
    "TimedInteraction",
    "assign_variant",
]
