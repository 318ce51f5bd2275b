"""The experiment topics: create them, read them to their end, write to them. Used by the evaluator
service and by the command line.

Why Kafka and not ClickHouse for experiments: the command line must work while a worker runs, and the
worker's sink holds the embedded ClickHouse (chdb allows one process per data directory). A compacted
topic keyed by ``experiment_id`` keeps the latest revision of every experiment for as long as it exists,
every process can read it, and the evaluator reads it in the same stream as the outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, but not in __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from pydantic import ValidationError

from infra.kafka import client_config, ensure_topics, public_topic_names, read_topic, watermark_offsets
from infra.output_producer import OutputProducer
from infra.settings import KafkaSettings, Settings
from schemas import topics
from schemas.experiments import Experiment, ExperimentDecision, RegressionAlert

log = logging.getLogger(__name__)


class ExperimentNotFoundError(LookupError):
    """No experiment with that id on the experiments topic."""


class ExperimentExistsError(ValueError):
    """An experiment with that id exists already."""


@dataclass(frozen=True)
class ExperimentTopics:
    """Real names of the topics the evaluator and the command line use."""

    outcomes: str
    experiments: str
    decisions: str
    alerts: str

    @classmethod
    def of(cls, kafka: KafkaSettings) -> ExperimentTopics:
        """Names under the configured namespace."""
        ns = kafka.topic_namespace
        return cls(
            outcomes=topics.topic_name(topics.OUTCOMES, ns),
            experiments=topics.topic_name(topics.EXPERIMENTS, ns),
            decisions=topics.topic_name(topics.EXPERIMENT_DECISIONS, ns),
            alerts=topics.topic_name(topics.REGRESSION_ALERTS, ns),
        )


def ensure_experiment_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Create the public topics that are missing and make the experiments topic compacted.

    The other stages create every public topic with the default cleanup policy, so the compaction of
    ``ai.experiments.v1`` is set here, on an existing topic too (an idempotent config change).
    """
    ensure_topics(kafka, public_topic_names(kafka), timeout_s=timeout_s)
    admin = AdminClient(client_config(kafka))
    for base in topics.COMPACTED_TOPICS:
        name = topics.topic_name(base, kafka.topic_namespace)
        resource = ConfigResource(ResourceType.TOPIC, name)
        current = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
        entry = current.get("cleanup.policy")
        if entry is not None and entry.value == "compact":
            continue
        change = ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin.incremental_alter_configs([change])[change].result(timeout=timeout_s)


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 20.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retried while its leadership settles (a new topic)."""
    return watermark_offsets(consumer, tp, timeout_s)


def read_to_end(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> Iterator[Message]:
    """Every message of ``topic`` from the beginning up to its end as of the call, partition order kept.

    Raises TimeoutError when the end is not reached in ``timeout_s``; a topic that does not exist is empty.
    """
    return read_topic(kafka, topic, timeout_s, group_id="feedbackloop-experiments-reader")


def read_experiments(kafka: KafkaSettings, timeout_s: float = 30.0) -> dict[str, Experiment]:
    """The latest revision of every experiment on the experiments topic, by id."""
    found: dict[str, Experiment] = {}
    for message in read_to_end(kafka, ExperimentTopics.of(kafka).experiments, timeout_s):
        experiment = _decode(Experiment, message)
        if experiment is None:
            continue
        known = found.get(experiment.experiment_id)
        if known is None or (experiment.created_at, experiment.revision) >= (
            known.created_at,
            known.revision,
        ):
            found[experiment.experiment_id] = experiment
    return found


def get_experiment(kafka: KafkaSettings, experiment_id: str) -> Experiment:
    """The latest revision of one experiment; raises :class:`ExperimentNotFoundError`."""
    experiment = read_experiments(kafka).get(experiment_id)
    if experiment is None:
        raise ExperimentNotFoundError(f"no experiment {experiment_id!r} on the experiments topic")
    return experiment


def read_decisions(kafka: KafkaSettings, experiment_id: str | None = None) -> list[ExperimentDecision]:
    """Every decision on the decisions topic (of one experiment, if given), in the order emitted,
    re-emissions (the same ``decision_id``) dropped."""
    seen: set[object] = set()
    out = []
    for message in read_to_end(kafka, ExperimentTopics.of(kafka).decisions):
        decision = _decode(ExperimentDecision, message)
        if decision is None or decision.decision_id in seen:
            continue
        if experiment_id is None or decision.experiment_id == experiment_id:
            seen.add(decision.decision_id)
            out.append(decision)
    return out


def latest_decisions(settings: Settings) -> list[ExperimentDecision]:
    """The current decision of every experiment that has one (the last one emitted), by experiment id.

    For the demo and dashboards; it reads the decisions topic, so it works while the worker runs.
    """
    latest: dict[str, ExperimentDecision] = {}
    for decision in read_decisions(settings.kafka):
        # One experiment's decisions share a key, hence a partition, hence their order.
        latest[decision.experiment_id] = decision
    return [latest[k] for k in sorted(latest)]


def read_alerts(kafka: KafkaSettings) -> list[RegressionAlert]:
    """Every regression alert and resolve on the alerts topic, re-emissions dropped."""
    seen: set[object] = set()
    out = []
    for message in read_to_end(kafka, ExperimentTopics.of(kafka).alerts):
        alert = _decode(RegressionAlert, message)
        if alert is not None and alert.alert_id not in seen:
            seen.add(alert.alert_id)
            out.append(alert)
    return out


def publish_experiment(kafka: KafkaSettings, experiment: Experiment) -> None:
    """Write one experiment revision (keyed by its id) and wait for the broker's acknowledgement."""
    ensure_experiment_topics(kafka)
    producer = OutputProducer(kafka, linger_ms=0)
    producer.produce(
        ExperimentTopics.of(kafka).experiments,
        experiment.experiment_id.encode(),
        experiment.model_dump_json().encode(),
    )
    producer.close()


def new_experiment(experiment_id: str, control: str, treatment: str, **fields: Any) -> Experiment:
    """Revision 1 of an experiment, created now; ``fields`` are any other :class:`Experiment` fields
    (``split=(80, 20)``, ``primary_metric``, ``guardrail_metrics``, ...). Raises ValidationError."""
    now = datetime.now(UTC)
    return Experiment.model_validate(
        {
            "experiment_id": experiment_id,
            "revision": 1,
            "control": control,
            "treatment": treatment,
            "created_at": now,
            "updated_at": now,
            **fields,
        }
    )


def create_experiment(kafka: KafkaSettings, experiment: Experiment, *, replace: bool = False) -> Experiment:
    """Publish a new experiment (revision 1); raises :class:`ExperimentExistsError` if the id is taken and
    ``replace`` is false. A replaced experiment starts over: its decisions get new ids."""
    existing = read_experiments(kafka).get(experiment.experiment_id)
    if existing is not None and not replace:
        raise ExperimentExistsError(
            f"experiment {experiment.experiment_id!r} exists already ({existing.status}); pick another id"
        )
    publish_experiment(kafka, experiment)
    return experiment


_Record = TypeVar("_Record", Experiment, ExperimentDecision, RegressionAlert)


def _decode(model: type[_Record], message: Message) -> _Record | None:
    value = message.value()
    if not value:
        return None  # a tombstone
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        log.warning(
            "skipping an invalid %s at %s[%s]@%s: %s",
            model.__name__,
            message.topic(),
            message.partition(),
            message.offset(),
            exc.errors()[0]["msg"],
        )
        return None


__all__ = [
    "ExperimentExistsError",
    "ExperimentNotFoundError",
    "ExperimentTopics",
    "create_experiment",
    "ensure_experiment_topics",
    "get_experiment",
    "latest_decisions",
    "new_experiment",
    "publish_experiment",
    "read_alerts",
    "read_decisions",
    "read_experiments",
    "read_to_end",
    "watermarks",
]
