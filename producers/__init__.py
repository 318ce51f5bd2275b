"""Producers: the SDK applications use to publish interactions and feedback, and the HTTP collector.

``FeedbackClient`` is the SDK (typed calls, never blocking, spooling to disk while the broker is
away); ``Experiment`` assigns users to prompt variants by consistent hashing; ``EventPublisher`` is
the minimal synchronous-flush publisher used by tools and tests; ``fetch_impact`` tells an app
what a user's corrections changed (for "your feedback helped" messages).

The names below are imported on first use: the SDK's sender process
(``python -m producers.sender.main``) imports this package too, and needs none of pydantic, the
contract or Prometheus (they would double its start-up time and its memory).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.assignment import (
        Assignment,
        Experiment,
        ExperimentNotFoundError,
        assign_variant,
        read_experiment,
    )
    from producers.client import DeliveryError, EventPublisher
    from producers.errors import (
        BufferFullError,
        ClientClosedError,
        EventTimeError,
        EventTooLargeError,
        NotAcceptingError,
    )
    from producers.impact import UserImpact, fetch_impact
    from producers.redaction import Redactor
    from producers.sdk import FeedbackClient, InteractionLike, InteractionRef, TimedInteraction
    from producers.sender.loop import Mode
    from producers.sender.spool import SpoolError

_HOMES = {
    "Assignment": "producers.assignment",
    "Experiment": "producers.assignment",
    "assign_variant": "producers.assignment",
    "ExperimentNotFoundError": "producers.assignment",
    "read_experiment": "producers.assignment",
    "DeliveryError": "producers.client",
    "EventPublisher": "producers.client",
    "BufferFullError": "producers.errors",
    "ClientClosedError": "producers.errors",
    "EventTimeError": "producers.errors",
    "EventTooLargeError": "producers.errors",
    "NotAcceptingError": "producers.errors",
    "UserImpact": "producers.impact",
    "fetch_impact": "producers.impact",
    "Redactor": "producers.redaction",
    "FeedbackClient": "producers.sdk",
    "InteractionLike": "producers.sdk",
    "InteractionRef": "producers.sdk",
    "TimedInteraction": "producers.sdk",
    "Mode": "producers.sender.loop",
    "SpoolError": "producers.sender.spool",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "Assignment",
    "BufferFullError",
    "ClientClosedError",
    "DeliveryError",
    "EventPublisher",
    "EventTimeError",
    "EventTooLargeError",
    "Experiment",
    "ExperimentNotFoundError",
    "FeedbackClient",
    "InteractionLike",
    "InteractionRef",
    "Mode",
    "NotAcceptingError",
    "Redactor",
    "SpoolError",
    "TimedInteraction",
    "UserImpact",
    "assign_variant",
    "fetch_impact",
    "read_experiment",
]
