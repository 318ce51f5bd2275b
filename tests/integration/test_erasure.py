"""Erasure end to end, on the real broker and chdb: ``feedbackloop forget`` (its own process) records
the request on the compacted topic; the running processors drop the user's state (tombstones on their
changelog) and later events, the sink deletes and skips their rows; and a full replay of every topic
by a new app id brings none of it back. Another user's rows come through exactly."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, but not in __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)

from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.erasures import erasure_topic
from infra.groups import app_id
from infra.kafka import client_config, delete_topics, read_topic
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from producers.client import EventPublisher
from schemas import ErasureRequest, FeedbackEvent, FeedbackType, InteractionEvent, SupportTicket, topics
from schemas.erasure import named_user
from sinks.clickhouse.erasure import remaining_rows
from stream_processors.state import Record

ERASED = ("gone", "later")


@pytest.fixture
def settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings) -> Iterator[Settings]:
    current = Settings(
        kafka=kafka,
        clickhouse=clickhouse,
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0),
    )
    yield current
    internal = [
        name
        for name in AdminClient(client_config(kafka)).list_topics(timeout=10).topics
        if name.startswith(f"{kafka.topic_namespace}.")
    ]
    delete_topics(kafka, internal)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.stop(timeout_s=60)


def _start(settings: Settings, workers: list[WorkerProcess], tmp_path: Path) -> WorkerProcess:
    # Short signal windows: interactions settle 10 s after their time, not 5 min (the default).
    windows = {
        f"FEEDBACKLOOP_PIPELINE__SIGNALS__{w}_WINDOW_S": "10" for w in ("ABANDON", "REPHRASE", "FOLLOWUP")
    }
    env = {**settings_env(settings), **windows}
    worker = WorkerProcess("all", tmp_path / f"worker-{len(workers)}.log", env).start()
    workers.append(worker)
    return worker


def _log(worker: WorkerProcess) -> str:
    return worker.log_path.read_text(errors="replace")


def _wait_for_log(worker: WorkerProcess, text: str, count: int = 1, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while _log(worker).count(text) < count:
        assert worker.alive(), f"the worker exited\n{_log(worker)[-4000:]}"
        assert time.monotonic() < deadline, f"never logged {text!r}\n{_log(worker)[-4000:]}"
        time.sleep(0.2)


def _drain_and_stop(settings: Settings, worker: WorkerProcess, expected: int) -> None:
    try:
        wait_until_drained(settings, expected, timeout_s=300, alive=worker.alive)
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{_log(worker)[-4000:]}")
    assert worker.stop() == 0, _log(worker)[-4000:]


def _forget(settings: Settings, user: str) -> str:
    """``feedbackloop forget`` in a process of its own, as an operator runs it; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "forget", user, "--by", "test"],
        env={**os.environ, **settings_env(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class Session:
    """One user's session: interactions and feedback, built with known ids."""

    def __init__(self, user: str, at: datetime) -> None:
        self.user, self.session, self.at = user, f"s-{user}", at
        self.interactions: list[InteractionEvent] = []

    def interaction(self, seconds: float = 0) -> InteractionEvent:
        event = InteractionEvent(
            event_id=uuid.uuid4(), interaction_id=uuid.uuid4(), user_id=self.user, session_id=self.session,
            prompt=f"{self.user} asks", prompt_version="v1", model="m", response=f"{self.user}'s answer",
            response_time_ms=5, created_at=self.at + timedelta(seconds=seconds),
        )  # fmt: skip
        self.interactions.append(event)
        return event

    def feedback(self, x: InteractionEvent, kind: FeedbackType, **extra: object) -> FeedbackEvent:
        return FeedbackEvent(
            event_id=uuid.uuid4(), interaction_id=x.interaction_id, user_id=self.user,
            session_id=self.session, created_at=x.created_at + timedelta(seconds=3), feedback_type=kind,
            **extra,
        )  # fmt: skip

    def events(self) -> list[InteractionEvent | FeedbackEvent]:
        """Three interactions, an edit of the first and a thumbs-up on the second."""
        a, b, _c = self.interaction(), self.interaction(10), self.interaction(20)
        return [
            a,
            b,
            _c,
            self.feedback(a, FeedbackType.EDIT, corrected_output=f"{self.user}'s better answer"),
            self.feedback(b, FeedbackType.THUMBS_UP),
        ]

    def ticket(self) -> SupportTicket:
        """A support ticket of this user about their first interaction."""
        return SupportTicket(
            event_id=uuid.uuid4(), ticket_id=f"t-{uuid.uuid4().hex[:8]}", user_id=self.user,
            created_at=self.at + timedelta(seconds=40), category="wrong answer", ai_quality=True,
            interaction_id=self.interactions[0].interaction_id,
        )  # fmt: skip

    def broken(self) -> bytes:
        """An interaction of this user that fails validation (a dead letter naming the user)."""
        valid = orjson.loads(self.interaction(30).model_dump_json())
        self.interactions.pop()
        return orjson.dumps({**valid, "response_time_ms": "fast"})


def _publish(
    settings: Settings, messages: list[InteractionEvent | FeedbackEvent | SupportTicket | bytes]
) -> None:
    ns = settings.kafka.topic_namespace
    raw_topic, tickets = (
        topics.topic_name(topics.INTERACTIONS, ns),
        topics.topic_name(topics.SUPPORT_TICKETS, ns),
    )
    with EventPublisher(settings.kafka) as publisher:
        for message in messages:
            if isinstance(message, bytes):
                publisher.publish_raw(raw_topic, b"broken", message)
            elif isinstance(message, SupportTicket):
                publisher.publish_raw(tickets, message.user_id.encode(), message.model_dump_json().encode())
            else:
                publisher.publish(message)


def _outcome_users(settings: Settings) -> list[str]:
    name = topics.topic_name(topics.OUTCOMES, settings.kafka.topic_namespace)
    return [orjson.loads(m.value() or b"{}")["user_id"] for m in read_topic(settings.kafka, name)]


def _changelog_users(settings: Settings) -> set[str]:
    """Every user the latest entry of each key of the processors' records changelog names."""
    name = f"{app_id(settings)}-records-changelog"
    latest: dict[bytes, bytes | None] = {}
    for message in read_topic(settings.kafka, name):
        latest[message.key() or b""] = message.value()
    assert latest, f"{name} is empty: the processors kept no state to erase"
    users: set[str] = set()
    for key, value in latest.items():
        if value is None:
            continue
        _partition, record = Record.decode(key.decode(), value)
        if record.interaction is not None:
            users.add(record.interaction.user_id)
        users.update(f.user_id for f in record.feedback.values())
    return users


def test_forget_erases_a_user_everywhere_and_a_replay_brings_nothing_back(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    gone, later, kept = Session("gone", t0), Session("later", t0 + timedelta(minutes=1)), Session("kept", t0)
    first: list[InteractionEvent | FeedbackEvent | SupportTicket | bytes] = [
        *gone.events(), *later.events(), *kept.events(), gone.broken(), kept.broken(), gone.ticket(),
        kept.ticket(),
    ]  # fmt: skip
    _publish(settings, first)
    worker = _start(settings, workers, tmp_path)
    _drain_and_stop(settings, worker, expected=9)
    assert sorted(set(_outcome_users(settings))) == ["gone", "kept", "later"]
    assert {"gone", "later"} <= _changelog_users(settings)

    # 1. "gone" while no worker runs: the command deletes the rows itself and says how many.
    out = _forget(settings, "gone")
    assert f"recorded on {erasure_topic(settings.kafka)}: 1 user(s)" in out
    for table, rows in {
        "ai_interactions": 3,
        "ai_feedback": 2,
        "interaction_outcomes": 3,
        "dead_letters": 1,
        "support_tickets": 1,
    }.items():
        assert any(line.split()[:2] == [table, str(rows)] for line in out.splitlines()), out

    # 2. "later" while the worker runs (it holds chdb): its processors and its sink see the request.
    worker = _start(settings, workers, tmp_path)
    _wait_for_log(worker, "erased users read from", count=2)  # the processors' and the sink's log
    outcomes_before = len(_outcome_users(settings))
    out = _forget(settings, "later")
    assert "held by a running worker" in out
    _wait_for_log(worker, "forgetting 1 erased users' state")
    _wait_for_log(worker, "erasure of 1 users")
    newer = Session("later", datetime.now(UTC) - timedelta(seconds=30))
    late_kept = Session("kept", datetime.now(UTC) - timedelta(seconds=30))
    old_later = later.interactions[2]
    _publish(
        settings,
        [
            later.feedback(old_later, FeedbackType.THUMBS_DOWN),  # feedback on state the erasure dropped
            newer.interaction(),
            late_kept.interaction(),
            gone.feedback(gone.interactions[2], FeedbackType.REGENERATE),
            later.ticket(),
            newer.broken(),
        ],
    )
    _drain_and_stop(settings, worker, expected=10)
    since = _outcome_users(settings)[outcomes_before:]
    assert set(since) == {"kept"}, since
    assert _changelog_users(settings) == {"kept"}

    # 3. A replay of everything: a new app id reads every input and every output from the beginning.
    replay = settings.model_copy(
        update={"pipeline": settings.pipeline.model_copy(update={"app_id": "replayed"})}
    )
    outcomes_before = len(_outcome_users(settings))
    worker = _start(replay, workers, tmp_path)
    _drain_and_stop(replay, worker, expected=10)
    assert set(_outcome_users(replay)[outcomes_before:]) == {"kept"}
    assert _changelog_users(replay) == {"kept"}

    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    assert remaining_rows(client, db, ERASED) == {}
    kept_ids = {x.interaction_id for x in kept.interactions + late_kept.interactions}
    assert {
        r[0] for r in client.query(f"SELECT interaction_id FROM {db}.ai_interactions FINAL").result_rows
    } == kept_ids
    assert client.query(
        f"SELECT user_id, count() FROM {db}.ai_feedback FINAL GROUP BY user_id"
    ).result_rows == [("kept", 2)]
    assert {
        r[0] for r in client.query(f"SELECT interaction_id FROM {db}.interaction_outcomes FINAL").result_rows
    } == kept_ids
    tickets = client.query(f"SELECT DISTINCT user_id FROM {db}.support_tickets FINAL").result_rows
    assert tickets == [("kept",)]
    letters = client.query(f"SELECT value_b64 FROM {db}.dead_letters FINAL").result_rows
    assert [named_user(base64.b64decode(v)) for (v,) in letters] == ["kept"]
    views = client.query(f"SELECT DISTINCT user_id FROM {db}.user_contributions").result_rows
    assert views == [("kept",)]

    # The lasting record: one request per user, on a compacted topic (compaction keeps it for good).
    name = erasure_topic(settings.kafka)
    requests = [
        ErasureRequest.model_validate_json(m.value() or b"") for m in read_topic(settings.kafka, name)
    ]
    assert sorted(r.user_id for r in requests) == ["gone", "later"]
    admin = AdminClient(client_config(settings.kafka))
    resource = ConfigResource(ResourceType.TOPIC, name)
    assert (
        admin.describe_configs([resource])[resource].result(timeout=30)["cleanup.policy"].value == "compact"
    )
