"""The evaluator as a process: a confluent-kafka loop over the outcomes log (``worker --stage experiments``).

Why a plain consumer loop and not a Faust agent: outcomes are keyed by ``session_id``, so one user's
outcomes -- and one experiment arm's -- are spread over every partition, and the user-level statistics
need all of them in one place. One consumer assigned to every partition does that; sharing partitions
among Faust workers would need a repartition by experiment and user for no gain (the evaluator is light:
~8,000 outcomes/s on one core, parsing included). It is also what makes it exact: the state is a pure
function of the log (:mod:`experiments.evaluator`), so it keeps no changelog and
commits nothing it depends on. On every start it reads ``ai.experiments.v1`` and then
``ai.outcomes.v1`` from the beginning, rebuilds the same statistics, makes the same looks and derives the
same decisions and alerts with the same ids; the ids already on the output topics (read first) are not
published again. A SIGKILL therefore loses nothing and duplicates nothing. The price is a replay of the
outcomes topic's retention on start.

One evaluator at a time: every evaluator process joins the consumer group ``<app_id>-experiments`` on the
experiments topic, and only the member that holds its partition 0 evaluates; the others wait as hot
standbys and take over (after their own replay) when the group rebalances. The offsets of the outcomes
read so far are committed to ``<app_id>-experiments-progress`` only so that the lag can be watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from experiments.config import EvaluatorConfig
from experiments.evaluator import Emission, Evaluator
from experiments.store import (
    ExperimentTopics,
    ensure_experiment_topics,
    read_to_end,
    watermarks,
)
from infra.groups import lease_group_id, progress_group_id
from infra.kafka import client_config, group_lag
from infra.output_producer import OutputProducer
from infra.settings import Settings
from schemas import InteractionOutcome
from schemas.experiments import Experiment, ExperimentDecision, RegressionAlert

log = logging.getLogger(__name__)


def evaluator_lag(settings: Settings) -> int:
    """Outcome messages the active evaluator has not read yet (all of them before it first commits)."""
    return group_lag(
        settings.kafka, progress_group_id(settings), [ExperimentTopics.of(settings.kafka).outcomes]
    ).total


class _Lease:
    """Membership in the lease group; ``held`` while this process owns partition 0."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.held = False
        self._consumer = Consumer(
            client_config(
                settings.kafka,
                **{
                    "group.id": lease_group_id(settings),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                    "session.timeout.ms": int(settings.pipeline.session_timeout_s * 1000),
                },
            )
        )
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in partitions):
            self.held = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in partitions):
            self.held = False

    def poll(self, timeout_s: float = 0.0) -> bool:
        """Serve the group protocol (the records themselves are not needed); return whether held."""
        self._consumer.poll(timeout_s)
        return self.held

    def close(self) -> None:
        """Leave the group, so a standby takes over at once."""
        self._consumer.close()


class ExperimentService:
    """Consume outcomes and experiments, run the evaluator, publish what it emits -- until :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = ExperimentTopics.of(settings.kafka)
        self.config = EvaluatorConfig.from_settings(settings)
        self.idle_flush_s = settings.experiments.idle_flush_s
        self._stop = threading.Event()
        self.evaluator: Evaluator | None = None
        self.published = 0
        self.already_published = 0

    def stop(self) -> None:
        """Ask the loop to finish: it reads what is on the topics now, looks at it all, publishes, returns."""
        self._stop.set()

    def run(self) -> None:
        """Wait for the lease, evaluate while holding it; return when stopped."""
        ensure_experiment_topics(self.settings.kafka)
        lease = _Lease(self.settings, self.topics.experiments)
        try:
            while not self._stop.is_set():
                if lease.poll(0.5):
                    log.info("holding the evaluator lease: replaying the outcomes log")
                    self._serve(lease)
        finally:
            lease.close()

    # ------------------------------------------------------------------ active

    def _serve(self, lease: _Lease) -> None:
        kafka = self.settings.kafka
        emitted = self._published_ids()
        consumer = Consumer(
            client_config(
                kafka,
                **{
                    "group.id": progress_group_id(self.settings),
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "fetch.max.bytes": self.settings.pipeline.fetch_max_bytes,
                },
            )
        )
        producer = OutputProducer(kafka)
        try:
            partitions = self._partitions(consumer, self.topics.outcomes)
            evaluator = Evaluator(self.config, partitions)
            self.evaluator = evaluator
            # Experiments first, so that a replay knows them before the first outcome, as a live run does.
            for message in read_to_end(kafka, self.topics.experiments):
                self._take_experiment(evaluator, message)
            experiment_partitions = self._partitions(consumer, self.topics.experiments)
            consumer.assign(
                [TopicPartition(self.topics.experiments, p, OFFSET_BEGINNING) for p in experiment_partitions]
                + [TopicPartition(self.topics.outcomes, p, OFFSET_BEGINNING) for p in partitions]
            )
            self._loop(lease, consumer, producer, evaluator, set(partitions), emitted)
        finally:
            producer.close()
            consumer.close()

    def _loop(
        self,
        lease: _Lease,
        consumer: Consumer,
        producer: OutputProducer,
        evaluator: Evaluator,
        partitions: set[int],
        emitted: set[str],
    ) -> None:
        at_end: dict[int, bool] = dict.fromkeys(partitions, False)
        last_outcome = time.monotonic()
        flushed = True
        last_commit = last_log = time.monotonic()
        stop_at: dict[int, int] | None = None
        stop_deadline = 0.0
        while True:
            if self._stop.is_set() and stop_at is None:
                # Finish what is on the topic now (the processors stop first), then look at all of it.
                stop_at = self._end_offsets(consumer, partitions)
                stop_deadline = time.monotonic() + 30.0
            for message in consumer.consume(num_messages=5000, timeout=0.2):
                error = message.error()
                topic = message.topic()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if topic == self.topics.outcomes and message.partition() is not None:
                            at_end[message.partition() or 0] = True
                    elif error.fatal():
                        raise KafkaException(error)
                    else:
                        log.warning("evaluator consumer: %s", error)
                    continue
                if topic == self.topics.experiments:
                    self._take_experiment(evaluator, message)
                else:
                    partition = message.partition() or 0
                    at_end[partition] = False
                    last_outcome = time.monotonic()
                    flushed = False
                    self._take_outcome(evaluator, message)
            out = evaluator.advance()
            now = time.monotonic()
            if not flushed and all(at_end.values()) and now - last_outcome >= self.idle_flush_s:
                # Liveness at the end of traffic (evaluator module docstring): look at all that was read.
                out.extend(evaluator.advance(flush=True))
                flushed = True
            reached = stop_at is not None and self._reached(consumer, stop_at)
            if stop_at is not None and (reached or now > stop_deadline):
                if reached:
                    out.extend(evaluator.advance(flush=True))
                else:
                    # Still replaying: a look at part of the log could publish a decision that a full
                    # replay would not make, so no last look (the next evaluator finishes the job).
                    log.warning("stopping before reaching the end of the outcomes: no last look")
                self._publish(producer, out, emitted)
                producer.flush_blocking()
                self._commit(consumer)
                log.info(
                    "evaluator stopped: %s; published %d, %d derived again were on the topics already",
                    evaluator.counters,
                    self.published,
                    self.already_published,
                )
                return
            if out:
                self._publish(producer, out, emitted)
                producer.flush_blocking()
            if now - last_commit >= 1.0:
                self._commit(consumer)
                last_commit = now
            if now - last_log >= 10.0:
                log.info("evaluator: %s", evaluator.counters)
                last_log = now
            if not lease.poll(0):
                log.warning("lost the evaluator lease: another evaluator takes over")
                return

    # ------------------------------------------------------------------ messages

    def _take_experiment(self, evaluator: Evaluator, message: Message) -> None:
        value = message.value()
        if not value:
            return
        try:
            evaluator.observe_experiment(Experiment.model_validate_json(value))
        except ValidationError as exc:
            log.warning("skipping an invalid experiment at offset %s: %s", message.offset(), exc)

    def _take_outcome(self, evaluator: Evaluator, message: Message) -> None:
        value = message.value()
        if not value:
            return
        try:
            outcome = InteractionOutcome.model_validate_json(value)
        except ValidationError as exc:
            # The processors' own output; the sink dead-letters it, here it is only skipped.
            log.warning("skipping an invalid outcome at offset %s: %s", message.offset(), exc)
            return
        evaluator.offer(message.partition() or 0, message.offset() or 0, outcome)

    def _publish(self, producer: OutputProducer, out: Iterable[Emission], emitted: set[str]) -> None:
        for record in out:
            if isinstance(record, ExperimentDecision):
                topic, key, record_id = self.topics.decisions, record.experiment_id, str(record.decision_id)
            elif isinstance(record, RegressionAlert):
                topic, key, record_id = self.topics.alerts, record.prompt_version, str(record.alert_id)
            else:
                topic, key = self.topics.experiments, record.experiment_id
                record_id = f"{record.experiment_id}@{record.created_at.isoformat()}#{record.revision}"
            if record_id in emitted:
                self.already_published += 1  # derived again by a replay; the topic has it already
                continue
            emitted.add(record_id)
            producer.produce(topic, key.encode(), record.model_dump_json().encode())
            self.published += 1

    def _published_ids(self) -> set[str]:
        kafka = self.settings.kafka
        ids: set[str] = set()
        for topic, model in (
            (self.topics.decisions, ExperimentDecision),
            (self.topics.alerts, RegressionAlert),
        ):
            for message in read_to_end(kafka, topic, timeout_s=120.0):
                try:
                    record = model.model_validate_json(message.value() or b"")
                except ValidationError:
                    continue
                ids.add(
                    str(record.decision_id if isinstance(record, ExperimentDecision) else record.alert_id)
                )
        for message in read_to_end(kafka, self.topics.experiments):
            try:
                experiment = Experiment.model_validate_json(message.value() or b"")
            except ValidationError:
                continue
            ids.add(f"{experiment.experiment_id}@{experiment.created_at.isoformat()}#{experiment.revision}")
        return ids

    # ------------------------------------------------------------------ offsets

    @staticmethod
    def _partitions(consumer: Consumer, topic: str) -> list[int]:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
        return sorted(meta.partitions)

    def _end_offsets(self, consumer: Consumer, partitions: Iterable[int]) -> dict[int, int]:
        ends = {}
        for partition in partitions:
            _, high = watermarks(consumer, TopicPartition(self.topics.outcomes, partition))
            ends[partition] = high
        return ends

    def _reached(self, consumer: Consumer, ends: dict[int, int]) -> bool:
        positions = consumer.position([TopicPartition(self.topics.outcomes, p) for p in ends])
        return all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions)

    @staticmethod
    def _commit(consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=True)
        except KafkaException as exc:  # nothing new to commit
            log.debug("progress commit skipped: %s", exc)


__all__ = ["ExperimentService", "evaluator_lag", "lease_group_id", "progress_group_id"]
