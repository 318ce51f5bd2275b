"""Assign users to experiment variants by consistent hashing, the same way in every language.

The hash itself is part of the contract (:mod:`schemas.assignment`, with its spec and test vectors):
the evaluator recomputes every user's variant with the same code to check what the apps logged. This
module gives apps the convenient form, :class:`Experiment`, and builds it from the experiment record
on ``ai.experiments.v1`` -- the one place the split is set (``feedbackloop experiments create``), so an
app need not hard-code it::

    experiment = client.experiment("summary-v1.1")     # FeedbackClient; or read_experiment(kafka, id)
    arm = experiment.assign(user.id)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import ValidationError

from infra.kafka import read_topic
from infra.settings import KafkaSettings
from schemas import topics
from schemas.assignment import (
    BUCKETS,
    Assignment,
    assign_variant,
    bucket_of,
    cut_points,
    experiment_variants,
    murmur3_32,
    variant_of_bucket,
)
from schemas.experiments import Experiment as ExperimentRecord


class ExperimentNotFoundError(LookupError):
    """No experiment with that id on the experiments topic."""


@dataclass(frozen=True)
class Experiment:
    """An A/B experiment: an id and its variants with integer weights, e.g. ``{"v1": 20, "v2": 80}``.

    Variant names are typically prompt versions. The order of ``variants`` is part of the
    assignment: reordering them reassigns users. Prefer :meth:`from_record` (or
    ``FeedbackClient.experiment``): the experiment record is the one source of the split.
    """

    experiment_id: str
    variants: Mapping[str, int]
    _cuts: list[tuple[int, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.experiment_id:
            raise ValueError("experiment_id must be non-empty")
        # Freeze a copy: a caller mutating their dict must not move users between variants.
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        object.__setattr__(self, "_cuts", cut_points(self.variants))

    @classmethod
    def from_record(cls, record: ExperimentRecord) -> Experiment:
        """The assignment an experiment record describes: control and treatment with its split."""
        return cls(record.experiment_id, experiment_variants(record))

    def assign(self, user_id: str) -> Assignment:
        """The variant ``user_id`` belongs to; the same on every call, process and language."""
        bucket = bucket_of(self.experiment_id, user_id)
        return Assignment(self.experiment_id, variant_of_bucket(bucket, self._cuts), bucket)


def read_experiment(kafka: KafkaSettings, experiment_id: str, timeout_s: float = 30.0) -> ExperimentRecord:
    """The latest revision of one experiment record, read from ``ai.experiments.v1`` to its end.

    Raises :class:`ExperimentNotFoundError` when there is none, ``TimeoutError`` when the topic cannot be
    read to its end within ``timeout_s``.
    """
    topic = topics.topic_name(topics.EXPERIMENTS, kafka.topic_namespace)
    wanted = experiment_id.encode()
    found: ExperimentRecord | None = None
    for message in read_topic(kafka, topic, timeout_s, group_id="feedbackloop-sdk-experiments"):
        value = message.value()
        if message.key() != wanted or not value:
            continue
        try:
            record = ExperimentRecord.model_validate_json(value)
        except ValidationError:
            continue  # the evaluator and the command line report invalid records
        if found is None or (record.created_at, record.revision) >= (found.created_at, found.revision):
            found = record
    if found is None:
        raise ExperimentNotFoundError(f"no experiment {experiment_id!r} on {topic}")
    return found


__all__ = [
    "BUCKETS",
    "Assignment",
    "Experiment",
    "ExperimentNotFoundError",
    "assign_variant",
    "bucket_of",
    "cut_points",
    "murmur3_32",
    "read_experiment",
]
