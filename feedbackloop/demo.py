"""``make demo``: synthetic app traffic through real Kafka, Faust and ClickHouse, then the numbers.

Starts the local broker if it is not running (and stops it again at the end), gives the run
topics of its own and a fresh ``demo`` database, runs a worker, publishes the seed's scenario —
v1.0 and v1.1 in an 80/20 experiment, regenerated about 35 % and 18 % of the time — waits until
every interaction's outcome is in ClickHouse, stops the worker and prints what analysts see and
what the experiment evaluator decided.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.store import create_experiment, new_experiment
from feedbackloop import localstack
from feedbackloop.supervise import WorkerProcess, settings_env, wait_until_drained
from infra.clickhouse import connect
from infra.kafka import ensure_topics, public_topic_names
from infra.settings import Settings
from producers.client import EventPublisher
from producers.synthetic import WorkloadSpec, generate
from schemas import topics
from sinks.clickhouse import migrate

DEMO_DATABASE = "demo"
DEMO_EXPERIMENT = "exp-v1.1-vs-v1.0"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo's data lives and what it printed."""

    settings: Settings
    interactions: int
    users: int
    events: int
    log: Path


def demo_settings(base: Settings, run_id: str) -> Settings:
    """The demo's own topics, consumer groups and database, on the configured broker and ClickHouse."""
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_namespace": f"demo-{run_id}"}),
            "clickhouse": base.clickhouse.model_copy(
                update={"database": DEMO_DATABASE, "flush_interval_s": 0.5}
            ),
            "pipeline": base.pipeline.model_copy(update={"idle_advance_s": 2.0}),
        }
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
    home = base.stack.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"demo-{run_id}-worker.log"
    started_stack = False
    if (
        not localstack.status(base.stack).running
        and base.kafka.bootstrap_servers == f"127.0.0.1:{base.stack.port}"
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
        client = connect(settings.clickhouse)
        client.command(f"DROP DATABASE IF EXISTS {DEMO_DATABASE}")
        migrate(client, DEMO_DATABASE)
        client.close()
        where = settings.clickhouse.shown_url
        console.print(
            f"[green]✓[/green] ClickHouse database [bold]{DEMO_DATABASE}[/bold] migrated at {where}"
        )

        workload = generate(
            WorkloadSpec(
                interactions=interactions, users=users, seed=2, experiment_id=DEMO_EXPERIMENT,
                split={"v1.0": 80, "v1.1": 20},
            )
        )  # fmt: skip
        events = list(workload.events)
        worker = WorkerProcess("all", log, settings_env(settings)).start()
        console.print(f"[green]✓[/green] worker started (pid {worker.pid}); log: {log}")
        try:
            _publish_and_wait(settings, workload.messages, len(workload.interactions), worker, console)
        finally:
            code = worker.stop()
        if code != 0:
            raise RuntimeError(f"the worker exited with {code}; see {log}")
        console.print("[green]✓[/green] worker stopped cleanly (everything flushed and committed)")
        if after is not None:
            after(settings, console)
        return DemoResult(settings, len(workload.interactions), users, len(events), log)
    finally:
        if started_stack:
            localstack.down(base.stack)
            console.print("[green]✓[/green] Kafka stopped (the demo started it)")


def _publish_and_wait(
    settings: Settings, messages: list[Any], expected: int, worker: WorkerProcess, console: Console
) -> None:
    raw_topic = topics.topic_name(topics.INTERACTIONS, settings.kafka.topic_namespace)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        publishing = progress.add_task("publishing app events to Kafka", total=len(messages))
        with EventPublisher(settings.kafka) as publisher:
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
