"""The local broker: real Apache Kafka from Maven Central's jars, started and stopped by PID."""

from __future__ import annotations

import subprocess
import sys
import time

from confluent_kafka.admin import AdminClient

from feedbackloop import localstack
from infra.kafka import public_topic_names
from infra.settings import KafkaSettings, StackSettings


def test_up_is_idempotent_answers_on_loopback_and_down_stops_only_its_own(
    private_stack: StackSettings,
) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{private_stack.port}")
    first = localstack.up(private_stack, kafka)
    assert first.running
    assert first.pid is not None
    again = localstack.up(private_stack, kafka)
    assert again.pid == first.pid  # no second broker

    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
    assert set(public_topic_names(kafka)) <= set(metadata.topics)
    assert {b.host for b in metadata.brokers.values()} == {"127.0.0.1"}
    properties = (private_stack.home / "kafka" / "server.properties").read_text()
    assert f"listeners=PLAINTEXT://127.0.0.1:{private_stack.port}," in properties

    # A process that is not ours, recorded in the pid file, is never signalled.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert localstack.down(private_stack) is True
        assert not localstack.status(private_stack).running
        (private_stack.home / "kafka" / "broker.pid").write_text(str(stranger.pid))
        assert localstack.down(private_stack) is False
        time.sleep(0.2)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_restart_keeps_the_data(private_stack: StackSettings) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{private_stack.port}", topic_namespace="keep")
    localstack.up(private_stack, kafka)
    localstack.down(private_stack)
    localstack.up(private_stack, kafka)
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
    assert set(public_topic_names(kafka)) <= set(metadata.topics)
