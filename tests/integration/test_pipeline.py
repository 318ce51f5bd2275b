"""The whole pipeline on the real broker and chdb: exact rows, exact ground truth, exact under crashes."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from rapidfuzz.distance import Levenshtein

from feedbackloop.supervise import (
    OutcomeWatch,
    WorkerProcess,
    pipeline_lag,
    settings_env,
    wait_until_drained,
)
from infra.clickhouse import connect
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from producers.client import EventPublisher
from producers.synthetic import Workload, WorkloadSpec, generate
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, topics
from tests.support.checks import ground_truth_mismatches, view_mismatches


@pytest.fixture
def settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings) -> Settings:
    """Settings of a pipeline of this test's own (topics, consumer groups, chdb directory)."""
    return Settings(
        kafka=kafka,
        clickhouse=clickhouse,
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0),
    )


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Worker processes started by a test; all stopped (by PID) at the end."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.stop(timeout_s=60)


def _start(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, stage: str = "all"
) -> WorkerProcess:
    worker = WorkerProcess(
        stage, tmp_path / f"worker-{len(workers)}-{stage}.log", settings_env(settings)
    ).start()
    workers.append(worker)
    return worker


def _publish(settings: Settings, messages: list[InteractionEvent | FeedbackEvent | bytes]) -> None:
    raw_topic = topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace)
    with EventPublisher(settings.kafka) as publisher:
        for message in messages:
            if isinstance(message, bytes):
                publisher.publish_raw(raw_topic, b"malformed", message)
            else:
                publisher.publish(message)


def _logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.log_path.name}\n" + w.log_path.read_text()[-3000:] for w in workers)


def _drain_and_stop(
    settings: Settings, workers: list[WorkerProcess], expected: int, timeout_s: float = 600
) -> None:
    try:
        wait_until_drained(
            settings, expected, timeout_s=timeout_s, alive=lambda: any(w.alive() for w in workers)
        )
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{_logs(workers)}")
    for worker in workers:
        if worker.alive():
            assert worker.stop() == 0, _logs([worker])


# ----------------------------------------------------------------------------------- walking skeleton


def test_known_events_give_exact_rows_rates_and_dead_letters(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    ids = {name: uuid.uuid4() for name in ("a", "a2", "b", "c")}

    def interaction(
        name: str, version: str, at: datetime, response: str, **extra: object
    ) -> InteractionEvent:
        return InteractionEvent(
            event_id=uuid.uuid4(), interaction_id=ids[name], user_id="u1", session_id="s1",
            prompt=f"prompt {name}", prompt_version=version, model="m", response=response,
            response_time_ms=100, created_at=at, **extra,
        )  # fmt: skip

    def feedback(name: str, kind: FeedbackType, at: datetime, **extra: object) -> FeedbackEvent:
        return FeedbackEvent(
            event_id=uuid.uuid4(), interaction_id=ids[name], user_id="u1", session_id="s1",
            created_at=at, feedback_type=kind, **extra,
        )  # fmt: skip

    a = interaction("a", "v1.0", t0, "The capital of France is Lyon.")
    regen = feedback("a", FeedbackType.REGENERATE, t0 + timedelta(seconds=5))
    a2 = interaction("a2", "v1.0", t0 + timedelta(seconds=6), "The capital of France is Paris.",
                     regenerated_from=ids["a"])  # fmt: skip
    edit = feedback("a2", FeedbackType.EDIT, t0 + timedelta(seconds=40),
                    corrected_output="The capital of France is Paris!")  # fmt: skip
    b = interaction("b", "v1.1", t0 + timedelta(minutes=20), "Hello there, general.")
    early = feedback("b", FeedbackType.THUMBS_UP, t0 + timedelta(minutes=20, seconds=3))
    c = interaction("c", "v1.1", t0 + timedelta(minutes=25), "Fine.")
    malformed = b'{"schema_version": 1, "event_id": '
    invalid = orjson.dumps({**orjson.loads(c.model_dump_json()), "response_time_ms": "fast"})
    ns = settings.kafka.topic_namespace

    _start(settings, workers, tmp_path)
    with EventPublisher(settings.kafka) as publisher:
        for event in (
            a,
            regen,
            a2,
            edit,
            edit,
            early,
            b,
            c,
            a,
        ):  # duplicates; feedback before its interaction
            publisher.publish(event)
        # Raw bytes with the session as key, as an outside client (kcat) would produce them:
        publisher.publish_raw(topics.topic_name(topics.FEEDBACK, ns), b"s1", malformed)
        publisher.publish_raw(topics.topic_name(topics.INTERACTIONS, ns), b"s1", invalid)
    _drain_and_stop(settings, workers, expected=4)

    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    rows = client.query(
        f"SELECT interaction_id, prompt_version, regenerated_from FROM {db}.ai_interactions FINAL "
        "ORDER BY created_at"
    ).result_rows
    assert rows == [
        (ids["a"], "v1.0", None),
        (ids["a2"], "v1.0", ids["a"]),
        (ids["b"], "v1.1", None),
        (ids["c"], "v1.1", None),
    ]
    feedback_rows = client.query(
        "SELECT event_id, feedback_type, prompt_version, original_output, edit_distance, "
        f"time_to_feedback_ms FROM {db}.ai_feedback FINAL ORDER BY created_at"
    ).result_rows
    assert feedback_rows == [
        (regen.event_id, "regenerate", "v1.0", a.response, None, 5000),
        (edit.event_id, "edit", "v1.0", a2.response, 1, 34000),
        (early.event_id, "thumbs_up", "v1.1", b.response, None, 3000),
    ]
    assert Levenshtein.distance(a2.response, edit.corrected_output or "") == 1
    rates = client.query(f"SELECT * FROM {db}.regeneration_rates ORDER BY prompt_version").result_rows
    assert rates == [("v1.0", 2, 1, 0.5), ("v1.1", 2, 0, 0.0)]
    letters = client.query(
        f"SELECT source_topic, error_type, value_b64, reason FROM {db}.dead_letters FINAL "
        "ORDER BY source_topic"
    ).result_rows
    assert [(t, e, base64.b64decode(v)) for t, e, v, _ in letters] == [
        (topics.topic_name(topics.FEEDBACK, ns), "validation_error", malformed),
        (topics.topic_name(topics.INTERACTIONS, ns), "validation_error", invalid),
    ]
    assert "response_time_ms" in letters[1][3]


def test_raw_json_from_an_outside_client_lands_in_both_tables(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """What kcat would send: hand-written JSON keyed by session, murmur2-partitioned; no SDK, no pydantic."""
    at = (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"
    interaction_id, session = str(uuid.uuid4()), "kcat-session"
    interaction = {
        "schema_version": 1, "event_id": str(uuid.uuid4()), "interaction_id": interaction_id,
        "user_id": "kcat-user", "session_id": session, "prompt": "Say hi", "prompt_version": "v2.0",
        "model": "m", "response": "Hello wrld", "response_time_ms": 7, "created_at": at,
        "regenerated_from": None, "input_category": "general", "experiment_id": None, "variant": None,
        "metadata": {"client": "kcat"},
    }  # fmt: skip
    edit = {
        "schema_version": 1, "event_id": str(uuid.uuid4()), "interaction_id": interaction_id,
        "user_id": "kcat-user", "session_id": session, "created_at": at,
        "feedback_type": "edit", "corrected_output": "Hello world!",
    }  # fmt: skip
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "partitioner": "murmur2_random",
            "acks": "all",
        }
    )
    ns = settings.kafka.topic_namespace
    producer.produce(topics.topic_name(topics.FEEDBACK, ns), json.dumps(edit).encode(), session.encode())
    producer.produce(
        topics.topic_name(topics.INTERACTIONS, ns), json.dumps(interaction).encode(), session.encode()
    )
    producer.produce(topics.topic_name(topics.FEEDBACK, ns), b"not json at all", session.encode())
    assert producer.flush(30) == 0
    _start(settings, workers, tmp_path)
    _drain_and_stop(settings, workers, expected=1)

    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    assert client.query(f"SELECT metadata FROM {db}.ai_interactions FINAL").result_rows == [
        ({"client": "kcat"},)
    ]
    row = client.query(f"SELECT edit_distance, prompt_version FROM {db}.ai_feedback FINAL").result_rows
    assert row == [(Levenshtein.distance("Hello wrld", "Hello world!"), "v2.0")]
    assert client.query(f"SELECT edited, edit_distance FROM {db}.interaction_outcomes FINAL").result_rows == [
        (True, 2)
    ]
    letters = client.query(f"SELECT error_type, value_b64 FROM {db}.dead_letters FINAL").result_rows
    assert [(e, base64.b64decode(v)) for e, v in letters] == [("validation_error", b"not json at all")]


# ----------------------------------------------------------------------------------- ground truth


@pytest.fixture(scope="module")
def workload() -> Workload:
    """>= 20,000 interactions with duplicates, late and early feedback and malformed messages."""
    return generate(WorkloadSpec(interactions=20_000, users=600, seed=42, span=timedelta(hours=3)))


def test_every_table_and_view_equals_the_ground_truth(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, workload: Workload
) -> None:
    _start(settings, workers, tmp_path)
    _publish(settings, workload.messages)
    _drain_and_stop(settings, workers, expected=len(workload.interactions))

    client = connect(settings.clickhouse)
    assert ground_truth_mismatches(client, settings.clickhouse.database, workload) == []
    assert view_mismatches(client, settings.clickhouse.database, workload) == []


def _wait_until_processing(settings: Settings, before: int, timeout_s: float = 120) -> None:
    """Until the processors have visibly worked off some of their backlog (at once when there is none:
    a worker that restarts after its predecessor committed everything has nothing to work off)."""
    if before == 0:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pipeline_lag(settings)[0] < before:
            return
        time.sleep(0.2)
    raise AssertionError("the processors never started working")


def _sink_child(worker: WorkerProcess) -> int:
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    assert children, "the worker has no sink child"
    return int(children[0])


def test_exact_after_sigkill_crashes_and_restarts(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, workload: Workload
) -> None:
    rng = random.Random(1)
    cut = len(workload.messages) * 3 // 5
    _publish(settings, workload.messages[:cut])
    current = _start(settings, workers, tmp_path)
    for crash in range(4):
        _wait_until_processing(settings, pipeline_lag(settings)[0])
        time.sleep(rng.uniform(0.2, 3.0))  # a random moment while events are being processed
        if crash == 2:
            os.kill(_sink_child(current), signal.SIGKILL)  # the sink dies mid-insert; the worker follows
            current.wait()
        else:
            current.kill()
        current = _start(settings, workers, tmp_path)
        if crash == 1:
            _publish(settings, workload.messages[cut:])  # the rest, incl. late events, while recovering
    _drain_and_stop(settings, [current], expected=len(workload.interactions))

    client = connect(settings.clickhouse)
    assert ground_truth_mismatches(client, settings.clickhouse.database, workload) == []


def test_recovered_records_settle_after_a_restart_with_no_new_input(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """A worker dies after reading every event but before settling them; its successor gets no
    new event at all, yet restores those partitions and settles every interaction."""
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    events: list[InteractionEvent | FeedbackEvent | bytes] = []
    for i in range(40):
        event = InteractionEvent(
            event_id=uuid.uuid4(), interaction_id=uuid.uuid4(), user_id=f"u{i}", session_id=f"s{i}",
            prompt="p", prompt_version="v1", model="m", response="r", response_time_ms=5,
            created_at=t0 + timedelta(milliseconds=i),
        )  # fmt: skip
        events.append(event)
    # The first worker never lets the watermark follow the wall clock: nothing can settle.
    holding = settings.model_copy(
        update={"pipeline": PipelineSettings(idle_advance_s=3600, session_timeout_s=6.0)}
    )
    _publish(settings, events)
    first = _start(holding, workers, tmp_path, "process")
    deadline = time.monotonic() + 120
    while pipeline_lag(settings)[0] > 0:  # every input read and its offset committed
        assert time.monotonic() < deadline, _logs([first])
        time.sleep(0.5)
    watch = OutcomeWatch(settings)
    try:
        assert watch.poll(2.0) == 0, "nothing may settle while the watermark is held"
    finally:
        watch.close()
    first.kill()

    _start(settings, workers, tmp_path)
    _drain_and_stop(settings, [w for w in workers if w.alive()], expected=len(events), timeout_s=180)


def test_exact_with_two_workers_sharing_partitions(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, workload: Workload
) -> None:
    first = _start(settings, workers, tmp_path, "process")
    _start(settings, workers, tmp_path, "process")
    _start(settings, workers, tmp_path, "sink")
    half = len(workload.messages) // 2
    _publish(settings, workload.messages[:half])
    time.sleep(4.0)
    first.kill()  # its partitions move to the other worker, which recovers their state
    _publish(settings, workload.messages[half:])
    _start(settings, workers, tmp_path, "process")  # and a new one takes a share back
    _drain_and_stop(settings, [w for w in workers if w.alive()], expected=len(workload.interactions))

    client = connect(settings.clickhouse)
    assert ground_truth_mismatches(client, settings.clickhouse.database, workload) == []
