"""``make demo``: synthetic app traffic through real Kafka, Faust and ClickHouse, then the numbers.

Starts the local broker if it is not running (and stops it again at the end), gives the run
topics of its own and a fresh ``demo`` database, runs a worker, publishes the seed's scenario —
v1.0 and v1.1 in an 80/20 experiment, regenerated about 35 % and 18 % of the time — waits until
every interaction's outcome is in ClickHouse, stops the worker and prints what analysts see and
what the experiment evaluator decided.

Before the experiment's traffic comes its history (:func:`demo_history`): ten weeks of returning and
new users on the versions before v1.0 (v0.8, v0.9, v0.9.1 and a reverted v0.9-short), their support
tickets, the registry entries of every version with what each addresses, and the experiments that
promoted or reverted them — so the report's "Is the loop working?" section has real trends on a fresh
machine. v1.0 (v0.9.1 on a new model's template, rolled out without an experiment) serves only this
week. The history has prompt versions and sessions of its own, so the experiment's numbers (v1.0
4,996 / 1,740, v1.1 1,004 / 178) are exactly what they were without it. Its events are weeks old: the
demo's worker runs with ``pipeline.late_horizon_s`` raised to cover them (:data:`HISTORY_HORIZON`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.store import create_experiment, new_experiment, publish_experiment
from feedbackloop import localstack
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.kafka import KafkaUnavailableError, ensure_topics, public_topic_names, wait_for_broker
from infra.settings import Settings
from producers.client import EventPublisher
from producers.synthetic import (
    History,
    HistorySpec,
    HistoryWeek,
    TicketSpec,
    VersionProfile,
    Workload,
    WorkloadSpec,
    generate,
    generate_history,
    generate_tickets,
)
from reporting.prompts import PromptRegistry, PromptVersion, mirror
from schemas import Experiment, ExperimentStatus, SupportTicket, topics
from schemas.experiments import ExperimentAction
from sinks.clickhouse import migrate

DEMO_DATABASE = "demo"
DEMO_EXPERIMENT = "exp-v1.1-vs-v1.0"
#: The demo's prompt registry (in the stack's home, not the project's prompts.json).
DEMO_REGISTRY = "demo-prompts.json"
#: How far behind the wall clock the demo's worker takes events: its history is up to 11 weeks old.
HISTORY_HORIZON = timedelta(days=90)

#: The ten weeks before the experiment's: versions serving (user weights), new users, who returns. Only
#: versions before v1.0: the experiment's v1.0 and v1.1 get no traffic here (their rates stay exact).
HISTORY_WEEKS = (
    HistoryWeek({"v0.8": 1}, new_users=60, returning=0.0),
    HistoryWeek({"v0.8": 1}, new_users=20, returning=0.55),
    HistoryWeek({"v0.8": 80, "v0.9": 20}, new_users=20, returning=0.56),  # exp-v0.9-vs-v0.8 from Monday
    HistoryWeek({"v0.8": 80, "v0.9": 20}, new_users=18, returning=0.58),
    HistoryWeek({"v0.9": 1}, new_users=18, returning=0.6),  # v0.9 promoted on Monday
    HistoryWeek({"v0.9": 80, "v0.9-short": 20}, new_users=16, returning=0.62),  # exp-v0.9-short
    HistoryWeek({"v0.9": 80, "v0.9-short": 20}, new_users=16, returning=0.63),  # reverted on Friday
    HistoryWeek({"v0.9": 80, "v0.9.1": 20}, new_users=15, returning=0.64),  # exp-v0.9.1-vs-v0.9
    HistoryWeek({"v0.9": 80, "v0.9.1": 20}, new_users=15, returning=0.66),
    HistoryWeek({"v0.9.1": 1}, new_users=15, returning=0.67),  # v0.9.1 promoted on Monday
)
#: Each version a little better than its parent (the reverted v0.9-short a little worse).
HISTORY_PROFILES = {
    "v0.8": VersionProfile(0.46, 0.3, 0.15, 0.1, small_below=0.4, medium_below=0.7),
    "v0.9": VersionProfile(0.4, 0.27, 0.13, 0.09, small_below=0.45, medium_below=0.75),
    "v0.9-short": VersionProfile(0.43, 0.3, 0.14, 0.09, small_below=0.4, medium_below=0.72),
    "v0.9.1": VersionProfile(0.37, 0.25, 0.12, 0.08, small_below=0.55, medium_below=0.9),
}
#: AI-quality tickets per regenerated or thumbs-down interaction, by version: fewer as versions improve.
TICKET_RATES = {"v0.8": 0.2, "v0.9": 0.16, "v0.9-short": 0.2, "v0.9.1": 0.08, "v1.0": 0.08, "v1.1": 0.05}


@dataclass(frozen=True)
class DemoResult:
    """Where the demo's data lives and what it printed."""

    settings: Settings
    interactions: int
    users: int
    events: int
    log: Path


def demo_settings(base: Settings, run_id: str) -> Settings:
    """The demo's own topics, consumer groups and database, on the configured broker and ClickHouse;
    a late horizon that takes its weeks of history."""
    horizon = max(base.pipeline.late_horizon_s, HISTORY_HORIZON.total_seconds())
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_namespace": f"demo-{run_id}"}),
            "clickhouse": base.clickhouse.model_copy(
                update={"database": DEMO_DATABASE, "flush_interval_s": 0.5}
            ),
            "pipeline": base.pipeline.model_copy(update={"idle_advance_s": 2.0, "late_horizon_s": horizon}),
        }
    )


def demo_workload(interactions: int = 6000, users: int = 300, now: datetime | None = None) -> Workload:
    """The experiment's traffic: v1.0 and v1.1 80/20 by the experiment's hash, ending 15 minutes ago."""
    return generate(
        WorkloadSpec(
            interactions=interactions, users=users, seed=2, experiment_id=DEMO_EXPERIMENT,
            split={"v1.0": 80, "v1.1": 20}, now=now,
        )
    )  # fmt: skip


@dataclass(frozen=True)
class DemoHistory:
    """The weeks before the experiment: traffic, support tickets, registry entries and experiments."""

    history: History
    tickets: list[SupportTicket]
    prompts: list[PromptVersion]
    experiments: list[Experiment]

    @property
    def interactions(self) -> int:
        """Interactions of the history."""
        return len(self.history.interactions)


def demo_history(current: Workload, now: datetime) -> DemoHistory:
    """Ten weeks of history ending on the Monday before ``current`` (the experiment's traffic) starts,
    with tickets about those weeks and about ``current`` itself."""
    first = min(p.event.created_at for p in current.interactions.values())
    before = (first - timedelta(hours=1)).astimezone(UTC)
    end = datetime(before.year, before.month, before.day, tzinfo=UTC) - timedelta(days=before.weekday())
    history = generate_history(HistorySpec(HISTORY_WEEKS, end, HISTORY_PROFILES, seed=11, sessions=(1, 3)))
    week = history.week_starts  # week[0] is the oldest (ten weeks before the experiment's)
    hour, day = timedelta(hours=1), timedelta(days=1)
    tickets = generate_tickets(list(history.interactions.values()), TicketSpec(ai_rates=TICKET_RATES), now)
    tickets += generate_tickets(
        list(current.interactions.values()), TicketSpec(ai_rates=TICKET_RATES, seed=6, id_prefix="C"), now
    )
    prompts = [
        _prompt("v0.8", None, week[0] - 14 * day, "First prompt: answer, then summarize", "", ""),
        _prompt("v0.9", "v0.8", week[2] - 2 * day, "Prefer plain words: 'clear', not 'readable'",
                "Users keep replacing 'readable' with 'clear'", "edit: readable -> clear"),
        _prompt("v0.9-short", "v0.9", week[5] - day, "Keep answers under 120 words",
                "AI-quality tickets say the answers are too long", "ticket: too long"),
        _prompt("v0.9.1", "v0.9", week[7] - day, "Drop the closing summary",
                "Users delete the closing sentences", "delete: closing sentence"),
        _prompt("v1.0", "v0.9.1", week[9] + 4 * day, "The same prompt on the new model's chat template",
                "Platform upgrade, rolled out to everyone on Monday", "platform upgrade"),
        _prompt("v1.1", "v1.0", first - day, "Answer first, explain after",
                "AI-quality tickets say the answer is wrong", "ticket: wrong answer"),
    ]  # fmt: skip
    experiments = [
        _decided("exp-v0.9-vs-v0.8", "v0.8", "v0.9", week[2] + 9 * hour, week[4] + 10 * hour, "promote"),
        _decided("exp-v0.9-short", "v0.9", "v0.9-short", week[5] + 9 * hour, week[6] + 4 * day, "revert"),
        _decided("exp-v0.9.1-vs-v0.9", "v0.9", "v0.9.1", week[7] + 9 * hour, week[9] + 10 * hour, "promote"),
    ]  # fmt: skip
    return DemoHistory(history, tickets, prompts, experiments)


def _prompt(
    version: str, parent: str | None, at: datetime, change: str, reasoning: str, addresses: str
) -> PromptVersion:
    return PromptVersion(
        version=version, parent=parent, text=f"(the {version} prompt)", change=change, reasoning=reasoning,
        addresses=addresses, author="demo", created_at=at,
    )  # fmt: skip


def _decided(
    name: str, control: str, treatment: str, created: datetime, applied_at: datetime, action: str
) -> Experiment:
    """The last revision of an experiment that a person promoted or reverted."""
    promote = action == "promote"
    return Experiment(
        experiment_id=name,
        revision=2,
        control=control,
        treatment=treatment,
        status=ExperimentStatus.PROMOTED if promote else ExperimentStatus.REVERTED,
        created_at=created,
        updated_at=applied_at,
        applied=ExperimentAction(
            action="promote" if promote else "revert",
            applied_at=applied_at,
            applied_by="demo",
            production_version=treatment if promote else control,
            retired_version=control if promote else treatment,
            decision=None,
            note="the demo's history",
        ),
    )


def run_demo(
    base: Settings,
    console: Console,
    *,
    interactions: int = 6000,
    users: int = 300,
    after: Callable[[Settings, Console], None] | None = None,
) -> DemoResult:
    """Run the whole demo; ``after`` runs once the worker has stopped (chdb is free then)."""
    run_id = uuid.uuid4().hex[:8]
    settings = demo_settings(base, run_id)
    now = datetime.now(UTC)
    home = base.stack.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"demo-{run_id}-worker.log"
    started_stack = False
    if (
        not localstack.status(base.stack).running
        and base.kafka.bootstrap_servers == f"127.0.0.1:{base.stack.port}"
        and not _broker_answers(base)
    ):
        with console.status(f"starting Apache Kafka {base.stack.kafka_version} (KRaft) on 127.0.0.1 ..."):
            localstack.up(base.stack, base.kafka)
        started_stack = True
        console.print(
            f"[green]✓[/green] Kafka {base.stack.kafka_version} up at {base.kafka.bootstrap_servers}"
        )
    try:
        ensure_topics(settings.kafka, public_topic_names(settings.kafka))
        # The demo's few hundred users put ~50 in treatment: 30 users per arm is its minimum (default 500).
        experiment = new_experiment(DEMO_EXPERIMENT, "v1.0", "v1.1", split=(80, 20), min_users_per_arm=30)
        create_experiment(settings.kafka, experiment)
        console.print(
            f"[green]✓[/green] experiment [bold]{DEMO_EXPERIMENT}[/bold] created: v1.0 (control, 80 %) "
            "vs v1.1 (treatment, 20 %)"
        )
        workload = demo_workload(interactions, users, now)
        past = demo_history(workload, now)
        for record in past.experiments:
            publish_experiment(settings.kafka, record)
        registry = PromptRegistry(home / DEMO_REGISTRY, past.prompts)
        registry.save()
        client = connect(settings.clickhouse)
        client.command(f"DROP DATABASE IF EXISTS {DEMO_DATABASE}")
        migrate(client, DEMO_DATABASE)
        mirror(registry, client, DEMO_DATABASE)
        client.close()
        where = settings.clickhouse.shown_url
        console.print(
            f"[green]✓[/green] ClickHouse database [bold]{DEMO_DATABASE}[/bold] migrated at {where}; "
            f"prompt versions {', '.join(v.version for v in registry)} registered in {registry.path}"
        )

        messages = [*past.history.messages, *workload.messages]
        expected = len(workload.interactions) + past.interactions
        env = {
            **settings_env(settings),
            "FEEDBACKLOOP_PIPELINE__LATE_HORIZON_S": str(settings.pipeline.late_horizon_s),
        }
        worker = WorkerProcess("all", log, env).start()
        console.print(
            f"[green]✓[/green] worker started (pid {worker.pid}); log: {log}\n"
            f"  history: {len(HISTORY_WEEKS)} weeks from {past.history.week_starts[0]:%Y-%m-%d}, "
            f"{past.interactions:,} interactions, {len(past.tickets)} support tickets"
        )
        try:
            _publish_and_wait(settings, messages, past.tickets, expected, worker, console)
        finally:
            code = worker.stop()
        if code != 0:
            raise RuntimeError(f"the worker exited with {code}; see {log}")
        console.print("[green]✓[/green] worker stopped cleanly (everything flushed and committed)")
        if after is not None:
            after(settings, console)
        events = sum(not isinstance(m, bytes) for m in messages) + len(past.tickets)
        everyone = {p.event.user_id for p in workload.interactions.values()}
        everyone |= {p.event.user_id for p in past.history.interactions.values()}
        return DemoResult(settings, expected, len(everyone), events, log)
    finally:
        if started_stack:
            localstack.down(base.stack)
            console.print("[green]✓[/green] Kafka stopped (the demo started it)")


def _broker_answers(settings: Settings) -> bool:
    """Whether a broker answers at the configured address already (one not started by ``stack up``)."""
    try:
        wait_for_broker(settings.kafka, timeout_s=3.0)
    except KafkaUnavailableError:
        return False
    return True


def _publish_and_wait(
    settings: Settings,
    messages: list[Any],
    tickets: list[SupportTicket],
    expected: int,
    worker: WorkerProcess,
    console: Console,
) -> None:
    raw_topic = topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace)
    ticket_topic = topics.topic_name(topics.SUPPORT_TICKETS, settings.kafka.topic_namespace)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        publishing = progress.add_task("publishing app events to Kafka", total=len(messages))
        with EventPublisher(settings.kafka) as publisher:
            for ticket in tickets:  # what a help-desk integration would send (key: the user)
                publisher.publish_raw(
                    ticket_topic, ticket.user_id.encode(), ticket.model_dump_json().encode()
                )
            for index, message in enumerate(messages, 1):
                if isinstance(message, bytes):
                    publisher.publish_raw(
                        raw_topic, b"demo", message
                    )  # a broken client, for the dead letters
                else:
                    publisher.publish(message)
                if index % 500 == 0:
                    progress.update(publishing, completed=index)
        progress.update(publishing, completed=len(messages))
        settling = progress.add_task("outcomes in ClickHouse (settle by event time)", total=expected)

        def show(settled: int, lag_processing: int, lag_sink: int) -> None:
            progress.update(
                settling,
                completed=min(settled, expected),
                description=f"outcomes in ClickHouse (lag: processors {lag_processing}, sink {lag_sink})",
            )

        started = time.monotonic()
        wait_until_drained(settings, expected, timeout_s=900, on_progress=show, alive=worker.alive)
        progress.update(
            settling,
            completed=expected,
            description=f"outcomes in ClickHouse ({time.monotonic() - started:.0f}s)",
        )
