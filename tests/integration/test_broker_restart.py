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
from confluent_kafka import KafkaError, Message, Producer

from feedbackloop import localstack
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.kafka import client_config, delete_topics, public_topic_names
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings, StackSettings
from producers.client import SAFE_PRODUCER_CONFIG
from producers.synthetic import Workload, WorkloadSpec, generate
from schemas import InteractionEvent, topics
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


def _records(settings: Settings, workload: Workload) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of every message of the workload, as an outside client would send them."""
    ns = settings.kafka.topic_namespace
    raw = topics.topic_name(topics.INTERACTIONS, ns)
    records = []
    for message in workload.messages:
        if isinstance(message, bytes):
            records.append((raw, b"malformed", message))
        else:
            kind = topics.INTERACTIONS if isinstance(message, InteractionEvent) else topics.FEEDBACK
            value = message.model_dump_json().encode()
            records.append((topics.topic_name(kind, ns), message.session_id.encode(), value))
    return records


def _publish_steadily(settings: Settings, workload: Workload, sent: list[int], resent: list[int]) -> None:
    """Send the workload at RATE; what has no delivery report once it is over is sent again by a new
    client, as an app's at-least-once producer does (the pipeline folds the duplicates). librdkafka
    can leave a partition stuck after the restart (confluentinc/librdkafka#5430: a leader of -1 in an
    incremental metadata update is never replaced), this test's own client included."""
    records = _records(settings, workload)
    delivered: set[int] = set()

    def producer() -> Producer:
        return Producer(client_config(settings.kafka, **{"linger.ms": 5, **SAFE_PRODUCER_CONFIG}))

    def send(client: Producer, index: int) -> None:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                delivered.add(index)

        topic, key, value = records[index]
        while True:
            try:
                client.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                client.poll(0.05)
        client.poll(0)

    client = producer()
    start = time.monotonic()
    for index in range(len(records)):
        send(client, index)
        sent[0] = index + 1
        ahead = start + (index + 1) / RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    client.flush(60)
    missing = [i for i in range(len(records)) if i not in delivered]
    if missing:
        client.purge()
        resent.append(len(missing))
        client = producer()
        for index in missing:
            send(client, index)
        assert client.flush(60) == 0, "a new client could not deliver either"
    assert len(delivered) == len(records)


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
    sent, resent, errors = [0], list[int](), list[str]()

    def publish() -> None:
        try:
            _publish_steadily(settings, workload, sent, resent)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(repr(exc))

    publisher = threading.Thread(target=publish)
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
