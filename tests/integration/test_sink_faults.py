"""An outage of ClickHouse is not a bad row: the sink pauses, keeps its offsets, and loses nothing.

The real broker and chdb; the outage comes from the sink's drill (``sink.fault_file``), which makes
the real client's every insert fail the way a refused connection does, in the worker's own processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from feedbackloop.supervise import WorkerProcess
from infra.clickhouse import connect
from infra.groups import sink_group_id
from infra.kafka import client_config, group_lag
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from producers.client import EventPublisher
from producers.synthetic import Workload, WorkloadSpec, generate
from schemas import topics
from sinks.faults import start_outage
from sinks.runner import sink_topics
from tests.integration.conftest import free_port
from tests.integration.test_pipeline import _drain_and_stop, _logs, _publish, _sink_child, _start
from tests.support.checks import ground_truth_mismatches, view_mismatches

OUTAGE_S = 60.0


# The two fixtures of test_pipeline.py, declared again: pytest takes fixtures from conftest files, and
# importing them from another test module would make them look unused (and collect its tests twice).
@pytest.fixture
def settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings) -> Settings:
    """Settings of a pipeline of this test's own (topics, consumer groups, chdb directory)."""
    return Settings(
        kafka=kafka,
        clickhouse=clickhouse,
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0),
    )


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes started by a test; all stopped (by PID) at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.stop(timeout_s=60)


@pytest.fixture(scope="module")
def workload() -> Workload:
    """20,000 interactions with duplicates, late and early feedback and malformed messages."""
    return generate(WorkloadSpec(interactions=20_000, users=600, seed=7, span=timedelta(hours=3)))


def _wait(what: str, condition: Callable[[], bool], workers: list[WorkerProcess], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline or not any(w.alive() for w in workers):
            pytest.fail(f"{what}: not within {timeout_s}s\n{_logs(workers)}")
        time.sleep(0.2)


def _status(path: Path) -> dict[str, object]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def _committed(settings: Settings) -> dict[tuple[str, int], int]:
    """The sink's committed offsets on the derived topics (every message there becomes a row; the raw
    input topic also carries malformed messages, which may be committed without one)."""
    raw = topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace)
    lag = group_lag(settings.kafka, sink_group_id(settings), sink_topics(settings))
    return {tp: offset for tp, offset in lag.committed.items() if tp[0] != raw}


def _written(settings: Settings) -> int:
    """Messages of the derived topics the sink has committed (each one a row in ClickHouse)."""
    return sum(max(offset, 0) for offset in _committed(settings).values())


def _dead_letters(settings: Settings) -> list[dict[str, object]]:
    """Every message of the dead-letter topic, start to end."""
    name = topics.topic_name(topics.DEADLETTER, settings.kafka.topic_namespace)
    consumer = Consumer(
        client_config(settings.kafka, **{"group.id": "deadletter-reader", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(name, p, 0) for p, end in ends.items() if end > 0])
        letters: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while len(letters) < sum(ends.values()) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None:
                    letters.append(orjson.loads(message.value() or b"{}"))
        return letters
    finally:
        consumer.close()


def test_an_outage_mid_run_and_a_kill_during_it_lose_nothing_and_dead_letter_nothing(
    settings: Settings,
    workers: list[WorkerProcess],
    tmp_path: Path,
    workload: Workload,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drill, status = tmp_path / "clickhouse-outage", tmp_path / "sink-status.json"
    # The worker processes read these (WorkerProcess passes the environment on).
    monkeypatch.setenv("FEEDBACKLOOP_SINK__FAULT_FILE", str(drill))
    monkeypatch.setenv("FEEDBACKLOOP_SINK__RETRY_MAX_S", "1")
    monkeypatch.setenv("FEEDBACKLOOP_SINK__STATUS_LOG_INTERVAL_S", "10")
    monkeypatch.setenv("FEEDBACKLOOP_PIPELINE__SINK_STATS_FILE", str(status))
    half = len(workload.messages) // 2
    _publish(settings, workload.messages[:half])
    current = _start(settings, workers, tmp_path)

    # Mid-run: the sink has written and committed a good part of the first half.
    _wait("the sink writing", lambda: _written(settings) >= 10_000, workers, 120)
    until = start_outage(drill, OUTAGE_S)
    _wait("the sink pausing", lambda: _status(status).get("state") == "paused", workers, 30)
    at_pause = _committed(settings)
    _publish(settings, workload.messages[half:])  # the rest arrives while ClickHouse is down
    time.sleep(10)
    assert _committed(settings) == at_pause, "offsets were committed for rows ClickHouse does not hold"
    paused = _status(status)
    assert paused["outages"] == 1
    assert "Connection refused" in str(paused["last_error"])
    assert paused["paused_since"] is not None

    # SIGKILL the whole worker during the outage (its sink first, so neither can clean up), restart.
    os.kill(_sink_child(current), signal.SIGKILL)
    current.kill()
    status.unlink()
    current = _start(settings, workers, tmp_path)
    _wait("the restarted sink pausing", lambda: _status(status).get("state") == "paused", workers, 60)
    assert time.time() < until - 5, "the outage should outlast the restart (the machine is too slow?)"
    assert _committed(settings) == at_pause

    _wait("the outage to end", lambda: time.time() > until, workers, OUTAGE_S + 10)
    _drain_and_stop(settings, [current], expected=len(workload.interactions))

    after = _status(status)
    assert after["state"] == "stopped"
    assert after["outages"] == 1
    assert float(str(after["paused_s_total"])) > 5
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    assert ground_truth_mismatches(client, db, workload) == []
    assert view_mismatches(client, db, workload) == []
    letters = _dead_letters(settings)
    assert [letter for letter in letters if letter["stage"] == "sink"] == [], "the outage dead-lettered rows"
    log = "\n".join(w.log_path.read_text() for w in workers)
    assert log.count("sink paused: the clickhouse backend cannot take rows") == 2  # once per sink process
    assert log.count("sink resumed") == 1
    # Rate-limited: about one line per 10 s of outage, not one per retry (~1 a second here).
    assert log.count("sink still paused") <= OUTAGE_S / 10 + 2


def test_a_sink_stopped_during_an_outage_exits_promptly_and_commits_nothing_it_did_not_write(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drill, status, port = tmp_path / "clickhouse-outage", tmp_path / "sink-status.json", free_port()
    monkeypatch.setenv("FEEDBACKLOOP_SINK__FAULT_FILE", str(drill))
    monkeypatch.setenv("FEEDBACKLOOP_SINK__RETRY_MAX_S", "1")
    monkeypatch.setenv("FEEDBACKLOOP_SINK__METRICS_PORT", str(port))
    monkeypatch.setenv("FEEDBACKLOOP_PIPELINE__SINK_STATS_FILE", str(status))
    events = generate(WorkloadSpec(interactions=200, users=20, seed=3, malformed=0)).interactions
    with EventPublisher(settings.kafka) as publisher:
        for planned in events.values():
            publisher.publish(planned.event)
    start_outage(drill, 600)
    sink = _start(settings, workers, tmp_path, "sink")
    _wait("the sink pausing", lambda: _status(status).get("state") == "paused", workers, 60)
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'feedbackloop_sink_state{state="paused"} 1.0' in metrics
    assert "feedbackloop_sink_outages_total 1.0" in metrics

    stopping = time.monotonic()
    assert sink.stop(timeout_s=30) == 0, _logs([sink])
    assert time.monotonic() - stopping < 15, "a stop must not wait for the backend to come back"
    assert re.search(r"sink stopping with [1-9]\d* rows not written", sink.log_path.read_text())
    raw = topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace)
    lag = group_lag(settings.kafka, sink_group_id(settings), [raw])
    assert lag.total == len(events), f"offsets committed for rows ClickHouse never got: {lag}"

    drill.unlink()  # ClickHouse is back; the next sink writes what the stopped one could not
    monkeypatch.delenv("FEEDBACKLOOP_SINK__METRICS_PORT")
    successor = _start(settings, workers, tmp_path, "sink")
    _wait("the rows written", lambda: group_lag(settings.kafka, sink_group_id(settings), [raw]).total == 0,
          workers, 60)  # fmt: skip
    assert successor.stop() == 0, _logs([successor])
    client = connect(settings.clickhouse)
    count = client.query(f"SELECT count() FROM {settings.clickhouse.database}.ai_interactions FINAL")
    assert count.result_rows[0][0] == len(events)
