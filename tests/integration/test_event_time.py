"""Event time you can trust, end to end: late sessions exact, forged clocks contained, through Kafka.

Events are published the way an outside client does it by the documented contract: a plain
librdkafka producer, JSON bodies, key = session_id, the murmur2 partitioner.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from feedbackloop.deadletters import LetterFilter, read_letters, replay
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from producers.synthetic import Workload, WorkloadSpec, generate
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, topics
from tests.support.checks import ground_truth_mismatches, view_mismatches


@pytest.fixture
def settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings) -> Settings:
    return Settings(
        kafka=kafka,
        clickhouse=clickhouse,
        pipeline=PipelineSettings(idle_advance_s=2.0, session_timeout_s=6.0),
    )


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.stop(timeout_s=60)


def _start(settings: Settings, workers: list[WorkerProcess], tmp_path: Path) -> WorkerProcess:
    worker = WorkerProcess("all", tmp_path / f"worker-{len(workers)}.log", settings_env(settings)).start()
    workers.append(worker)
    return worker


def _logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.log_path.name}\n" + w.log_path.read_text()[-3000:] for w in workers)


def _drain(settings: Settings, workers: list[WorkerProcess], expected: int) -> None:
    try:
        wait_until_drained(settings, expected, timeout_s=300, alive=lambda: any(w.alive() for w in workers))
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{_logs(workers)}")


def _stop(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        if worker.alive():
            assert worker.stop() == 0, _logs([worker])


def _outside_client(settings: Settings, messages: Sequence[InteractionEvent | FeedbackEvent | bytes]) -> None:
    """Publish as kcat would by the contract: JSON, key = session_id, murmur2."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "partitioner": "murmur2_random",
            "acks": "all",
        }
    )
    ns = settings.kafka.topic_namespace
    for message in messages:
        assert not isinstance(message, bytes)
        topic = topics.INTERACTIONS if isinstance(message, InteractionEvent) else topics.FEEDBACK
        producer.produce(
            topics.topic_name(topic, ns), message.model_dump_json().encode(), message.session_id.encode()
        )
    assert producer.flush(60) == 0


def _workload(prefix: str, hours_old: float, interactions: int, seed: int) -> Workload:
    return generate(
        WorkloadSpec(
            interactions=interactions,
            users=40,
            seed=seed,
            span=timedelta(minutes=40),
            end_before=timedelta(hours=hours_old),
            malformed=0,
            user_prefix=prefix,
        )
    )


def _merged(*workloads: Workload) -> Workload:
    sessions = [{e.session_id for e in w.events} for w in workloads]
    assert sum(len(s) for s in sessions) == len(set().union(*sessions)), "workloads must not share sessions"
    return Workload(
        messages=[m for w in workloads for m in w.messages],
        interactions={k: v for w in workloads for k, v in w.interactions.items()},
        duplicates=sum(w.duplicates for w in workloads),
        late=sum(w.late for w in workloads),
        malformed=sum(w.malformed for w in workloads),
    )


def _exact(settings: Settings, truth: Workload, forged: int = 0) -> None:
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    expected_letters = truth.malformed + forged
    problems = [p for p in ground_truth_mismatches(client, db, truth) if not p.startswith("dead_letters")]
    assert problems == []
    assert view_mismatches(client, db, truth) == []
    orphans = client.query(
        f"SELECT count() FROM {db}.dead_letters FINAL WHERE error_type = 'orphan_feedback'"
    )
    assert orphans.result_rows == [(0,)], "no late feedback may be dead-lettered"
    letters = client.query(f"SELECT count() FROM {db}.dead_letters FINAL").result_rows[0][0]
    assert letters == expected_letters
    client.close()


def test_late_sessions_reaching_an_idle_caught_up_worker_count_as_if_live(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    live = _workload("live", 0.1, 300, seed=11)
    three_hours = _workload("late3h", 3, 300, seed=12)
    a_day = _workload("late23h", 23, 300, seed=13)
    _start(settings, workers, tmp_path)
    _outside_client(settings, list(live.events))
    _drain(settings, workers, len(live.interactions))  # idle and caught up: the watermark is the wall clock
    _outside_client(settings, [*three_hours.events, *a_day.events])
    truth = _merged(live, three_hours, a_day)
    _drain(settings, workers, len(truth.interactions))
    _stop(workers)
    _exact(settings, truth)


def test_a_backfill_published_before_the_worker_starts_is_exact(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    backfill = _merged(_workload("old5h", 5, 400, seed=21), _workload("old20h", 20, 300, seed=22))
    _outside_client(settings, list(backfill.events))
    _start(settings, workers, tmp_path)
    _drain(settings, workers, len(backfill.interactions))
    _stop(workers)
    _exact(settings, backfill)


def test_a_worker_started_first_then_a_backfill_is_exact(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    _start(settings, workers, tmp_path)
    backfill = _workload("old6h", 6, 400, seed=31)
    # The worker has seen nothing: its partitions' watermarks follow the wall clock before data comes.
    wait_until_drained(settings, 0, timeout_s=60, quiet_s=4.0)
    _outside_client(settings, list(backfill.events))
    _drain(settings, workers, len(backfill.interactions))
    _stop(workers)
    _exact(settings, backfill)


def _forged(sessions: int) -> list[InteractionEvent | FeedbackEvent]:
    """Interactions dated 2100 and 2001 with feedback, on many sessions (so every partition gets some)."""
    out: list[InteractionEvent | FeedbackEvent] = []
    for n in range(sessions):
        for year in (2100, 2001):
            at = datetime(year, 1 + n % 12, 1 + n % 28, tzinfo=UTC)
            iid = uuid.uuid4()
            out.append(
                InteractionEvent(
                    event_id=uuid.uuid4(), interaction_id=iid, user_id="mallory", session_id=f"forged-{n}",
                    created_at=at, prompt="p", prompt_version="v1.0", model="gpt-4o-mini", response="r",
                    response_time_ms=1,
                )
            )  # fmt: skip
            out.append(
                FeedbackEvent(
                    event_id=uuid.uuid4(), interaction_id=iid, user_id="mallory", session_id=f"forged-{n}",
                    created_at=at + timedelta(seconds=20), feedback_type=FeedbackType.THUMBS_DOWN,
                )
            )  # fmt: skip
    return out


def test_forged_clocks_are_dead_lettered_and_change_nothing_even_after_a_restart(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    forged = _forged(sessions=24)
    _outside_client(settings, forged)
    _start(settings, workers, tmp_path)
    live = _workload("honest", 0.1, 300, seed=41)
    late = _workload("honest3h", 3, 200, seed=42)
    _outside_client(settings, [*live.events, *late.events])
    first = _merged(live, late)
    _drain(settings, workers, len(first.interactions))
    _stop(workers)
    _exact(settings, first, forged=len(forged))
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    rows = client.query(f"SELECT error_type, count() FROM {db}.dead_letters FINAL GROUP BY error_type")
    kinds = {str(kind): int(n) for kind, n in rows.result_rows}
    assert kinds == {"future_event_time": len(forged) // 2, "too_late": len(forged) // 2}
    months = client.query(
        f"SELECT uniqExact(toYYYYMM(window_start)) FROM {db}.prompt_version_metrics"
    ).result_rows
    assert months[0][0] <= 2, "no window was opened at a forged time"
    client.close()

    # A restart after the forged events changes nothing; honest traffic after it is exact too.
    _start(settings, workers, tmp_path)
    more = _workload("after", 0.05, 150, seed=43)
    _outside_client(settings, list(more.events))
    everything = _merged(first, more)
    _drain(settings, workers, len(everything.interactions))
    _stop(workers)
    _exact(settings, everything, forged=len(forged))


def test_the_dead_letters_of_a_too_late_batch_come_back_with_a_raised_horizon(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    narrow = settings.model_copy(
        update={"pipeline": settings.pipeline.model_copy(update={"late_horizon_s": 2 * 3600.0})}
    )
    old = _workload("old4h", 4, 150, seed=51)
    _start(narrow, workers, tmp_path)
    _outside_client(narrow, list(old.events))
    wait_until_drained(narrow, 0, timeout_s=120, quiet_s=4.0)
    _stop(workers)
    letters = connect(narrow.clickhouse)
    db = narrow.clickhouse.database
    refused = letters.query(f"SELECT count() FROM {db}.dead_letters FINAL WHERE error_type = 'too_late'")
    messages = len(list(old.events))
    assert refused.result_rows == [(messages,)]
    letters.close()

    _start(settings, workers, tmp_path)  # the default horizon (72 h)
    wanted = LetterFilter(reasons=("too_late",))
    result = replay(settings, [x for x, _ in read_letters(settings) if x is not None and wanted(x)])
    assert result.published == messages
    _drain(settings, workers, len(old.interactions))
    _stop(workers)
    client = connect(settings.clickhouse)
    assert [p for p in ground_truth_mismatches(client, db, old) if not p.startswith("dead_letters")] == []
