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

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import ValidationError

from infra.kafka import client_config
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
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": "feedbackloop-sdk-experiments",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    found: ExperimentRecord | None = None
    try:
        meta = consumer.list_topics(topic, timeout=min(10.0, timeout_s)).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ExperimentNotFoundError(f"no experiments topic {topic!r}")
        ends = {}
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
            for message in consumer.consume(num_messages=500, timeout=0.2):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.pop(partition or 0, None)
                    elif error.fatal():
                        raise KafkaException(error)
                    continue
                offset = message.offset() or 0
                if partition is not None and offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                key, value = message.key(), message.value()
                if key != experiment_id.encode() or not value:
                    continue
                try:
                    record = ExperimentRecord.model_validate_json(value)
                except ValidationError:
                    continue  # the evaluator and the command line report invalid records
                if found is None or (record.created_at, record.revision) >= (
                    found.created_at,
                    found.revision,
                ):
                    found = record
    finally:
        consumer.close()
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
