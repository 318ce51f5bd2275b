"""No silent split, on the real broker: a sink on chdb refuses to share its consumer group.

"Another sink" here is a plain consumer in the sink's group, subscribed to the sink's topics: to the
group coordinator it is what a second machine's sink is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from feedbackloop.supervise import WorkerProcess, settings_env
from infra.groups import sink_group_id
from infra.kafka import client_config
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from sinks.guard import SPLIT_EXIT_CODE, group_members
from sinks.runner import sink_topics


@pytest.fixture
def settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings) -> Settings:
    if not clickhouse.url.startswith("chdb://"):
        pytest.skip("the guard is about embedded ClickHouse")
    return Settings(kafka=kafka, clickhouse=clickhouse, pipeline=PipelineSettings(session_timeout_s=6.0))


@pytest.fixture
def other_sink(settings: Settings) -> Iterator[Consumer]:
    """A consumer in the sink's consumer group that is not this test's sink (it joins in :func:`_join`)."""
    consumer = Consumer(
        client_config(
            settings.kafka,
            **{
                "group.id": sink_group_id(settings),
                "client.id": f"other-machine-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            },
        )
    )
    yield consumer
    consumer.close()


def _join(consumer: Consumer, settings: Settings, members: int = 1, timeout_s: float = 60) -> None:
    """Join the sink group with ``consumer``; return once the group has ``members`` members."""
    consumer.subscribe(sink_topics(settings))  # librdkafka joins in the background, poll or not
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        consumer.poll(0.2)
        found = group_members(settings.kafka, sink_group_id(settings))
        if found is not None and len(found) >= members:
            return
    raise AssertionError(f"the consumer did not join {sink_group_id(settings)}")


def _sink(settings: Settings, tmp_path: Path) -> WorkerProcess:
    return WorkerProcess(
        "sink", tmp_path / f"sink-{uuid.uuid4().hex[:6]}.log", settings_env(settings)
    ).start()


def _wait_exit(sink: WorkerProcess, serve: Consumer, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sink.alive():
        serve.poll(0.2)  # keep the other member's session alive
    return None if sink.alive() else sink.wait()


def test_a_sink_on_chdb_refuses_to_start_beside_another_sink(
    settings: Settings, other_sink: Consumer, tmp_path: Path, chdb_dir: Path
) -> None:
    _join(other_sink, settings)
    sink = _sink(settings, tmp_path)
    try:
        code = _wait_exit(sink, other_sink, timeout_s=60)
    finally:
        sink.stop()
    assert code == SPLIT_EXIT_CODE
    said = sink.log_path.read_text()
    assert "refusing to run the ClickHouse sink" in said
    assert "FEEDBACKLOOP_CLICKHOUSE__URL" in said
    assert "server" in said
    assert not chdb_dir.exists(), "the refused sink must not have opened its database"


def test_a_running_sink_on_chdb_stops_when_another_sink_joins(
    settings: Settings, other_sink: Consumer, tmp_path: Path
) -> None:
    sink = _sink(settings, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not group_members(settings.kafka, sink_group_id(settings)):
            assert time.monotonic() < deadline, sink.log_path.read_text()
            assert sink.alive(), sink.log_path.read_text()
            time.sleep(0.5)
        _join(other_sink, settings, members=2)
        code = _wait_exit(sink, other_sink, timeout_s=60)
    finally:
        sink.stop()
    assert code == SPLIT_EXIT_CODE, sink.log_path.read_text()[-3000:]
    assert "FEEDBACKLOOP_CLICKHOUSE__URL" in sink.log_path.read_text()


def test_the_ghost_of_a_killed_sink_does_not_block_its_successor(
    settings: Settings, other_sink: Consumer, tmp_path: Path
) -> None:
    _join(other_sink, settings)
    sink = _sink(settings, tmp_path)
    try:
        time.sleep(2.0)
        other_sink.close()  # it leaves while the new sink waits, as an expiring session would
        time.sleep(settings.pipeline.session_timeout_s + 8)
        assert sink.alive(), sink.log_path.read_text()[-3000:]
        assert [m.member_id for m in group_members(settings.kafka, sink_group_id(settings)) or []]
    finally:
        code = sink.stop()
    assert code == 0, sink.log_path.read_text()[-3000:]
