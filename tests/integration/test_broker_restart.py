"""The broker itself restarts while traffic flows: every table is exact afterwards.

A broker of this test's own (``private_stack``: own ports and data) serves a worker (``--stage all``)
while a publisher sends a workload at a steady rate. Mid-stream the broker is stopped (SIGTERM, a
controlled shutdown), stays down for a while as the publisher keeps enqueueing, and starts again on
the same data. The worker is left to recover by itself, under a supervisor like compose's
``restart: on-failure``: most runs need none, but a librdkafka client can stay stuck after the restart
(about 1 run in 10 with librdkafka 2.16.0): the sink then exits with ``STALL_EXIT_CODE`` and the
processors with an undelivered output, and the restarted worker must make every table exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from feedbackloop import localstack
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.kafka import delete_topics, public_topic_names
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings, StackSettings
from producers.client import EventPublisher
from producers.synthetic import Workload, WorkloadSpec, generate
from schemas import topics
from tests.integration.test_pipeline import _logs
from tests.support.checks import ground_truth_mismatches, view_mismatches

#: Events per second the publisher sends: about half of what one worker takes on this machine class.
RATE = 1_000
DOWN_S = 12.0
#: Restarts the supervisor allows (a stuck client costs one).
RESTARTS = 3


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
    env = {**settings_env(settings), "FEEDBACKLOOP_SINK__STALL_TIMEOUT_S": "30"}

    def start() -> WorkerProcess:
        worker = WorkerProcess("all", tmp_path / f"worker-{len(workers)}.log", env).start()
        workers.append(worker)
        return worker

    worker = start()
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
    exits: list[int] = []
    deadline = time.monotonic() + 900
    while True:
        try:
            wait_until_drained(
                settings,
                len(workload.interactions),
                timeout_s=max(deadline - time.monotonic(), 1),
                alive=worker.alive,
            )
            break
        except RuntimeError:  # the worker exited: restart it, as a supervisor would
            exits.append(worker.wait())
            assert len(exits) <= RESTARTS, f"exits {exits}\n{_logs(workers)}"
            worker = start()
        except TimeoutError as exc:
            pytest.fail(f"{exc}; exits {exits}\n{_logs(workers)}")
    assert worker.stop() == 0, _logs([worker])

    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    assert ground_truth_mismatches(client, db, workload) == []
    assert view_mismatches(client, db, workload) == []
    client.close()
