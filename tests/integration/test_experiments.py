"""Experiments and regression alerts through the real broker, Faust processors, evaluator and chdb.

Each test runs its own pipeline (``worker --stage all`` includes the evaluator) on topics of its own:
an A/B workload where v1.1 truly lowers regeneration -> ``promote``; one where it is worse -> ``revert``;
a version whose abandonment jumps mid-stream -> exactly one alert and later one resolve; and the
evaluator SIGKILLed mid-stream and restarted -> the same records as a replay of the log, none twice.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from experiments.config import EvaluatorConfig
from experiments.evaluator import Emission, Evaluator
from experiments.store import (
    ExperimentTopics,
    create_experiment,
    get_experiment,
    latest_decisions,
    new_experiment,
    read_alerts,
    read_decisions,
    read_to_end,
)
from feedbackloop.cli import app
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.settings import ClickHouseSettings, KafkaSettings, PipelineSettings, Settings
from producers import FeedbackClient
from producers.assignment import ExperimentNotFoundError, read_experiment
from producers.client import EventPublisher
from producers.synthetic import DEFAULT_PROFILES, VersionProfile, Workload, WorkloadSpec, generate
from schemas import FeedbackEvent, FeedbackType, InteractionEvent, InteractionOutcome
from schemas.assignment import assign_variant
from schemas.experiments import (
    AlertKind,
    DecisionAction,
    DecisionRule,
    Experiment,
    ExperimentDecision,
    ExperimentStatus,
    OutcomeMetric,
    RegressionAlert,
)

#: v1.1 regenerates 18 % instead of 35 % and is no worse on anything else (more copies and accepts,
#: so fewer regenerations do not show up as more abandoned answers).
BETTER = VersionProfile(regenerate=0.18, edit=0.25, thumbs_down=0.12, rephrase=0.08, copy=0.55, accept=0.3)
#: v1.1 regenerates half the time.
WORSE = VersionProfile(regenerate=0.50, edit=0.25, thumbs_down=0.12, rephrase=0.08)


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


def _start(
    settings: Settings,
    workers: list[WorkerProcess],
    tmp_path: Path,
    stage: str = "all",
    idle_flush_s: float = 2.0,
) -> WorkerProcess:
    env = {**settings_env(settings), "FEEDBACKLOOP_EXPERIMENTS__IDLE_FLUSH_S": str(idle_flush_s)}
    worker = WorkerProcess(stage, tmp_path / f"worker-{len(workers)}-{stage}.log", env).start()
    workers.append(worker)
    return worker


def _logs(workers: Sequence[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.log_path.name}\n" + w.log_path.read_text()[-4000:] for w in workers)


def _publish(settings: Settings, events: Sequence[InteractionEvent | FeedbackEvent | bytes]) -> None:
    with EventPublisher(settings.kafka) as publisher:
        for event in events:
            if not isinstance(event, bytes):
                publisher.publish(event)


def _drain(settings: Settings, workers: Sequence[WorkerProcess], expected: int) -> None:
    try:
        wait_until_drained(settings, expected, timeout_s=300, alive=lambda: all(w.alive() for w in workers))
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{exc}\n{_logs(workers)}")


T = TypeVar("T")


def _wait_for(
    read: Callable[[], T], done: Callable[[T], bool], workers: Sequence[WorkerProcess], timeout_s: float = 120
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout_s}s; last read: {value}\n{_logs(workers)}")
        time.sleep(1.0)


def _experiment(experiment_id: str, **fields: Any) -> Experiment:
    """An 80/20 experiment of v1.1 against v1.0; the workloads have 250 users (about 50 in treatment), so
    30 users per arm is the minimum."""
    return new_experiment(experiment_id, "v1.0", "v1.1", **{"min_users_per_arm": 30, **fields})


def _ab_workload(experiment_id: str, treatment: VersionProfile, seed: int) -> Workload:
    return generate(
        WorkloadSpec(
            interactions=5000,
            users=250,
            seed=seed,
            span=timedelta(hours=2),
            experiment_id=experiment_id,
            split={"v1.0": 80, "v1.1": 20},
            profiles={"v1.0": DEFAULT_PROFILES["v1.0"], "v1.1": treatment},
        )
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "FEEDBACKLOOP_KAFKA__TOPIC_NAMESPACE": settings.kafka.topic_namespace,
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


# ----------------------------------------------------------------------------------- decisions


def test_a_treatment_that_lowers_regeneration_is_promoted(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    experiment_id = f"exp-{uuid.uuid4().hex[:6]}"
    create_experiment(settings.kafka, _experiment(experiment_id))
    workload = _ab_workload(experiment_id, BETTER, seed=21)
    worker = _start(settings, workers, tmp_path)
    _publish(settings, workload.messages)
    _drain(settings, [worker], len(workload.interactions))
    made = _wait_for(
        lambda: read_decisions(settings.kafka, experiment_id),
        lambda found: any(d.action is not DecisionAction.CONTINUE for d in found),
        [worker],
    )
    _drain(settings, [worker], len(workload.interactions))  # the sink takes the decisions too
    assert worker.stop() == 0, _logs([worker])

    # Continue (too few users first, perhaps better but not yet credibly by 10 %), then promote.
    assert [d.action for d in made[:-1]] == [DecisionAction.CONTINUE] * (len(made) - 1)
    assert made[0].rule is DecisionRule.INSUFFICIENT_SAMPLE
    promote = made[-1]
    assert promote.action is DecisionAction.PROMOTE
    assert promote.rule is DecisionRule.PRIMARY_BETTER
    assert promote.primary is not None
    assert promote.primary.control_mean == pytest.approx(0.35, abs=0.05)
    # The decision is taken at the first look where the evidence crosses the bar, on whatever part of the
    # stream has settled by then (100 to 180 treatment interactions in local runs), so the treatment's
    # estimate carries that sample's noise, and a little more since users repeat: four standard errors.
    treatment_se = (0.18 * 0.82 / promote.treatment.interactions) ** 0.5
    assert promote.primary.treatment_mean == pytest.approx(0.18, abs=max(0.05, 4 * treatment_se))
    assert promote.primary.ci_high is not None
    assert promote.primary.ci_high < 0
    assert min(promote.control.users, promote.treatment.users) >= 30
    assert not promote.srm.mismatch
    assert promote.srm.confirmed
    # The workload assigns users with the consistent hash, as the record says: nobody is misplaced.
    assert promote.assignment is not None
    assert promote.assignment.mismatched_users == 0
    assert promote.assignment.users == promote.control.users + promote.treatment.users
    assert promote.primary.credible_improvement is not None
    assert promote.primary.credible_improvement > 0.10
    assert latest_decisions(settings) == [promote]

    client = connect(settings.clickhouse)
    rows = client.query(
        "SELECT decision_id, action, treatment_interactions "
        f"FROM {settings.clickhouse.database}.experiment_current_decisions"
    ).result_rows
    assert rows == [(promote.decision_id, "promote", promote.treatment.interactions)]
    client.close()

    # A person applies the recommendation; it is recorded with the numbers on the experiments topic.
    code, output = _cli(settings, "experiments", "show", experiment_id)
    assert code == 0, output
    assert "PROMOTE" in output
    assert experiment_id in output
    code, output = _cli(settings, "experiments", "promote", experiment_id, "--note", "v1.1 wins")
    assert code == 0, output
    applied = get_experiment(settings.kafka, experiment_id)
    assert applied.status is ExperimentStatus.PROMOTED
    assert applied.applied is not None
    assert applied.applied.decision == promote
    assert (applied.applied.production_version, applied.applied.note) == ("v1.1", "v1.1 wins")
    code, output = _cli(settings, "experiments", "revert", experiment_id)
    assert code == 2, output  # promoted already


def test_a_treatment_that_regenerates_more_is_reverted(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    experiment_id = f"exp-{uuid.uuid4().hex[:6]}"
    create_experiment(settings.kafka, _experiment(experiment_id))
    workload = _ab_workload(experiment_id, WORSE, seed=22)
    worker = _start(settings, workers, tmp_path)
    _publish(settings, workload.messages)
    _drain(settings, [worker], len(workload.interactions))
    made = _wait_for(
        lambda: read_decisions(settings.kafka, experiment_id),
        lambda found: any(d.action is not DecisionAction.CONTINUE for d in found),
        [worker],
    )
    assert worker.stop() == 0, _logs([worker])
    revert = made[-1]
    assert (revert.action, revert.rule) == (DecisionAction.REVERT, DecisionRule.PRIMARY_WORSE)
    assert revert.primary is not None
    assert revert.primary.ci_low is not None
    assert revert.primary.ci_low > 0
    code, output = _cli(settings, "experiments", "promote", experiment_id)
    assert code == 3, output  # not what the evaluator recommends


def test_the_sdk_assigns_from_the_experiment_record(settings: Settings) -> None:
    """The split is set once, by `experiments create`; the SDK reads it from ai.experiments.v1 and assigns
    exactly as the evaluator's check recomputes."""
    experiment_id = f"exp-{uuid.uuid4().hex[:6]}"
    code, output = _cli(
        settings, "experiments", "create", experiment_id, "--control", "v1.0", "--treatment", "v1.1",
        "--split", "70/30", "--min-users", "40",
    )  # fmt: skip
    assert code == 0, output
    assert "FeedbackClient.experiment" in output
    record = get_experiment(settings.kafka, experiment_id)
    assert (record.split, record.min_users_per_arm) == ((70, 30), 40)
    with FeedbackClient(settings.kafka) as client:
        experiment = client.experiment(experiment_id)
    assert dict(experiment.variants) == {"v1.0": 70, "v1.1": 30}
    users = [f"user-{i}" for i in range(1_000)]
    by_hand = [assign_variant(experiment_id, u, {"v1.0": 70, "v1.1": 30}).variant for u in users]
    assert [experiment.assign(u).variant for u in users] == by_hand
    assert 0.25 < by_hand.count("v1.1") / len(users) < 0.35
    with pytest.raises(ExperimentNotFoundError):
        read_experiment(settings.kafka, "no-such-experiment", timeout_s=10)


# ----------------------------------------------------------------------------------- regression alerts


def _abandonment_jump(
    rng: random.Random, version: str, start: datetime, minutes: int, jump: range, per_minute: int = 60
) -> tuple[list[InteractionEvent | FeedbackEvent], int]:
    """``per_minute`` interactions a minute; users regenerate 10 % and edit 10 % of answers and copy 88 %
    of the others (abandonment ~10 %), except in the ``jump`` minutes, where they copy 40 % (~49 %)."""
    events: list[InteractionEvent | FeedbackEvent] = []
    made = 0
    for minute in range(minutes):
        copy = 0.40 if minute in jump else 0.88
        for _ in range(per_minute):
            at = start + timedelta(minutes=minute, milliseconds=rng.randrange(60_000))
            user = f"user-{rng.randrange(80):03d}"
            iid = uuid.UUID(int=rng.getrandbits(128), version=4)
            session = f"{user}-{iid.hex[:8]}"  # one call per session: no rephrases or follow-ups
            response = "Use sorted(items, key=len) to sort the list by length. " * rng.randint(1, 4)
            events.append(
                InteractionEvent(
                    event_id=uuid.uuid4(), interaction_id=iid, user_id=user, session_id=session,
                    prompt="How do I sort a list by length?", prompt_version=version, model="m",
                    response=response, response_time_ms=rng.randint(300, 900), created_at=at,
                )
            )  # fmt: skip
            made += 1

            roll = rng.random()
            action: tuple[FeedbackType, float, dict[str, Any]] | None = None
            if roll < 0.10:
                action = (FeedbackType.REGENERATE, 5, {})
            elif roll < 0.20:
                action = (
                    FeedbackType.EDIT,
                    30,
                    {"corrected_output": response[: len(response) // rng.randint(2, 4)]},
                )
            elif rng.random() < copy:
                action = (FeedbackType.COPY, 10, {"copied_chars": len(response)})
            if action is not None:
                kind, after_s, extra = action
                events.append(
                    FeedbackEvent(
                        event_id=uuid.uuid4(), interaction_id=iid, user_id=user, session_id=session,
                        created_at=at + timedelta(seconds=after_s), feedback_type=kind, **extra,
                    )
                )  # fmt: skip
    events.sort(key=lambda e: e.created_at)
    return events, made


def test_an_abandonment_jump_alerts_once_and_resolves_once(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=75)).replace(second=0, microsecond=0)
    events, interactions = _abandonment_jump(random.Random(31), "v3.0", start, 40, range(15, 21))
    worker = _start(settings, workers, tmp_path)
    _publish(settings, events)
    _drain(settings, [worker], interactions)
    found = _wait_for(
        lambda: read_alerts(settings.kafka),
        lambda found: any(a.kind is AlertKind.RESOLVE for a in found),
        [worker],
    )
    _drain(settings, [worker], interactions)
    assert worker.stop() == 0, _logs([worker])

    found = read_alerts(settings.kafka)  # everything, after the evaluator's last looks on stop
    assert [(a.kind, a.prompt_version, a.metric) for a in found] == [
        (AlertKind.ALERT, "v3.0", OutcomeMetric.ABANDONMENT_RATE),
        (AlertKind.RESOLVE, "v3.0", OutcomeMetric.ABANDONMENT_RATE),
    ]
    alert, resolve = found
    assert alert.incident_id == resolve.incident_id
    assert alert.opened_at == start + timedelta(minutes=15)
    assert start + timedelta(minutes=15) < alert.window_end <= start + timedelta(minutes=18)
    assert start + timedelta(minutes=25) <= resolve.window_start < start + timedelta(minutes=35)
    assert alert.expected == pytest.approx(0.10, abs=0.04)
    assert alert.observed > 0.3
    assert alert.observed > alert.expected_high

    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    stored = client.query(f"SELECT kind, incident_id FROM {db}.regression_alerts FINAL ORDER BY window_end")
    assert stored.result_rows == [("alert", alert.incident_id), ("resolve", alert.incident_id)]
    evidence = client.query(alert.evidence_sql).result_rows
    by_window = {_utc(row[0]): row[-1] for row in evidence}
    assert by_window[alert.window_start] == pytest.approx(alert.observed)
    client.close()

    code, output = _cli(settings, "alerts", "tail", "--from-beginning", "--no-follow", "--format", "json")
    assert code == 0, output
    tailed = [
        RegressionAlert.model_validate_json(line) for line in output.splitlines() if line.startswith("{")
    ]
    assert tailed == found


# ----------------------------------------------------------------------------------- restart safety


def _replay(settings: Settings) -> list[Emission]:
    """What a fresh evaluator derives from the topics as they are now (read partition after partition)."""
    kafka = settings.kafka
    names = ExperimentTopics.of(kafka)
    messages = list(read_to_end(kafka, names.outcomes, timeout_s=120))
    evaluator = Evaluator(
        EvaluatorConfig.from_settings(settings), sorted({m.partition() or 0 for m in messages})
    )
    for message in read_to_end(kafka, names.experiments):
        evaluator.observe_experiment(Experiment.model_validate_json(message.value() or b""))
    emitted: list[Emission] = []
    for message in sorted(messages, key=lambda m: (m.partition() or 0, m.offset() or 0)):
        outcome = InteractionOutcome.model_validate_json(message.value() or b"")
        evaluator.offer(message.partition() or 0, message.offset() or 0, outcome)
        emitted.extend(evaluator.advance())
    emitted.extend(evaluator.advance(flush=True))
    return emitted


def test_a_sigkilled_evaluator_restarts_to_the_same_records_and_repeats_none(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    experiment_id = f"exp-{uuid.uuid4().hex[:6]}"
    create_experiment(settings.kafka, _experiment(experiment_id, min_users_per_arm=20))
    workload = _ab_workload(experiment_id, BETTER, seed=23)
    half = len(workload.messages) // 2
    # Processors, sink and evaluator as separate processes, so the evaluator alone can be killed. Its
    # idle flush is off (a minute): the records then depend on the log only.
    _start(settings, workers, tmp_path, "process")
    _start(settings, workers, tmp_path, "sink")
    evaluator = _start(settings, workers, tmp_path, "experiments", idle_flush_s=60)
    _publish(settings, workload.messages[:half])
    _wait_for(lambda: read_decisions(settings.kafka, experiment_id), bool, workers)
    evaluator.kill()  # SIGKILL: no flush, no goodbye
    _publish(settings, workload.messages[half:])
    evaluator = _start(settings, workers, tmp_path, "experiments", idle_flush_s=60)
    _drain(settings, [w for w in workers if w.alive()], len(workload.interactions))
    assert evaluator.stop() == 0, _logs([evaluator])  # it reads the rest and makes its last looks
    skipped = re.search(r"(\d+) derived again were on the topics already", evaluator.log_path.read_text())
    assert skipped is not None, _logs([evaluator])
    assert int(skipped.group(1)) >= 1  # the restarted evaluator re-derived what its predecessor published

    decisions = read_decisions(settings.kafka)
    raw = list(read_to_end(settings.kafka, ExperimentTopics.of(settings.kafka).decisions))
    assert len(raw) == len(decisions), "a decision was published twice"
    assert [d.action for d in decisions][-1] is DecisionAction.PROMOTE
    replayed = _replay(settings)
    assert [d.model_dump() for d in decisions] == [
        e.model_dump() for e in replayed if isinstance(e, ExperimentDecision)
    ]
    assert [a.model_dump() for a in read_alerts(settings.kafka)] == [
        e.model_dump() for e in replayed if isinstance(e, RegressionAlert)
    ]
