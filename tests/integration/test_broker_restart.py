"""The broker itself restarts while traffic flows: every table is exact afterwards.

A broker of this test's own (``private_stack``: own ports and data) serves a worker (``--stage all``)
while a publisher sends a workload at a steady rate. Mid-stream the broker is stopped (SIGTERM, a
controlled shutdown), stays down for a while as the publisher keeps enqueueing, and starts again on
the same data. The worker is left to recover by itself: it is neither restarted nor told.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from feedbackloop import localstack
from feedbackloop.supervise import WorkerProcess, settings_env
from infra.clickhouse import connect
from infra.kafka import delete_topics, public_topic_names
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings, StackSettings
from producers.client import EventPublisher
from producers.synthetic import Workload, WorkloadSpec, generate
from schemas import topics
from tests.integration.test_pipeline import _drain_and_stop, _logs
from tests.support.checks import ground_truth_mismatches, view_mismatches

#: Events per second the publisher sends: about half of what one worker takes on this machine class.
RATE = 1_000
DOWN_S = 12.0


@pytest.fixture
def private_kafka(private_stack: StackSettings, namespace: str) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{private_stack.port}", topic_namespace=namespace)
    localstack.up(private_stack, kafka)
    yield kafka
    if localstack.status(private_stack).running:
        delete_topics(kafka, public_topic_names(kafka))


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.stop(timeout_s=60)


def _publish_steadily(settings: Settings, workload: Workload, sent: list[int], errors: list[str]) -> None:
    raw_topic = topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace)
    start = time.monotonic()
    try:
        # librdkafka keeps what it cannot deliver yet and retries until its delivery timeout (5 min).
        with EventPublisher(settings.kafka) as publisher:
            for index, message in enumerate(workload.messages):
                if isinstance(message, bytes):
                    publisher.publish_raw(raw_topic, b"malformed", message)
                else:
                    publisher.publish(message)
                sent[0] = index + 1
                ahead = start + (index + 1) / RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    except Exception as exc:  # reported by the test, not lost in the thread
        errors.append(repr(exc))


def test_every_table_is_exact_after_the_broker_restarts_under_load(
    private_stack: StackSettings,
    private_kafka: KafkaSettings,
    clickhouse: ClickHouseSettings,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka=private_kafka,
        clickhouse=clickhouse,
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0),
    )
    workload = generate(WorkloadSpec(interactions=8_000, users=400, seed=17, span=timedelta(hours=2)))
    worker = WorkerProcess("all", tmp_path / "worker.log", settings_env(settings)).start()
    workers.append(worker)
    sent, errors = [0], list[str]()
    publisher = threading.Thread(target=_publish_steadily, args=(settings, workload, sent, errors))
    publisher.start()

    # A third of the way in, the broker goes away for DOWN_S while the publisher keeps going.
    while sent[0] < len(workload.messages) // 3:
        assert publisher.is_alive(), errors
        time.sleep(0.1)
    assert localstack.down(private_stack) is True
    time.sleep(DOWN_S)
    assert worker.alive(), f"the worker gave up while the broker was down\n{_logs(workers)}"
    localstack.up(private_stack, private_kafka)

    publisher.join(timeout=600)
    assert not publisher.is_alive(), "the publisher never finished"
    assert errors == []
    assert worker.alive(), f"the worker did not survive the broker's restart\n{_logs(workers)}"
    _drain_and_stop(settings, workers, expected=len(workload.interactions))

    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    assert ground_truth_mismatches(client, db, workload) == []
    assert view_mismatches(client, db, workload) == []
    client.close()
