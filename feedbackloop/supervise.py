"""Start worker processes and tell when the pipeline has caught up — for the demo, benchmarks and tests.

chdb allows one process per directory, so while the sink runs nobody else can look inside
ClickHouse. Progress is therefore read from Kafka: the consumer groups' lag, and the outcomes
topic itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
from confluent_kafka import Consumer, TopicPartition

from infra.groups import app_id, contributions_topic, sink_group_id
from infra.kafka import client_config, group_lag
from infra.settings import Settings
from schemas import topics
from sinks.runner import sink_topics


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce the parts of ``settings`` tests and the demo change.

    The ClickHouse password travels apart from the url (which never holds it): only in the child's
    environment, never on a command line or in a log."""
    password = settings.clickhouse.password
    secret = (
        {"FEEDBACKLOOP_CLICKHOUSE__PASSWORD": password.get_secret_value()} if password is not None else {}
    )
    return {
        **secret,
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "FEEDBACKLOOP_KAFKA__TOPIC_NAMESPACE": settings.kafka.topic_namespace,
        "FEEDBACKLOOP_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "FEEDBACKLOOP_CLICKHOUSE__URL": settings.clickhouse.url,
        "FEEDBACKLOOP_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "FEEDBACKLOOP_CLICKHOUSE__FLUSH_INTERVAL_S": str(settings.clickhouse.flush_interval_s),
        "FEEDBACKLOOP_PIPELINE__APP_ID": settings.pipeline.app_id,
        "FEEDBACKLOOP_PIPELINE__IDLE_ADVANCE_S": str(settings.pipeline.idle_advance_s),
        "FEEDBACKLOOP_PIPELINE__LATE_HORIZON_S": str(settings.pipeline.late_horizon_s),
        "FEEDBACKLOOP_PIPELINE__MAX_FUTURE_SKEW_S": str(settings.pipeline.max_future_skew_s),
        "FEEDBACKLOOP_PIPELINE__SESSION_TIMEOUT_S": str(settings.pipeline.session_timeout_s),
        "FEEDBACKLOOP_PIPELINE__WEB_PORT": str(settings.pipeline.web_port),
    }


@dataclass
class WorkerProcess:
    """One ``feedbackloop worker`` child process."""

    stage: str
    log_path: Path
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start it (logs go to ``log_path``)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "feedbackloop.cli", "worker", "--stage", self.stage, "--loglevel", "info"],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye (a crash)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.wait()

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM and wait for a graceful exit; return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 120.0) -> int:
        """Wait for the exit; SIGKILL after ``timeout_s``."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.process is not None and self.process.poll() is None


@dataclass
class OutcomeWatch:
    """Reads the outcomes topic from the start and keeps each interaction's highest version."""

    settings: Settings
    versions: dict[str, int] = field(default_factory=dict)
    _consumer: Consumer | None = None

    def poll(self, seconds: float = 0.5) -> int:
        """Read what is new; return how many distinct interactions have an outcome."""
        if self._consumer is None:
            name = topics.topic_name(topics.OUTCOMES, self.settings.kafka.topic_namespace)
            self._consumer = Consumer(
                client_config(
                    self.settings.kafka, **{"group.id": "outcome-watch", "enable.auto.commit": False}
                )
            )
            meta = self._consumer.list_topics(name, timeout=10).topics[name]
            self._consumer.assign([TopicPartition(name, p, 0) for p in meta.partitions])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(num_messages=10_000, timeout=0.1):
                if message.error() is None and message.value():
                    value = orjson.loads(message.value() or b"{}")
                    iid = value["interaction_id"]
                    self.versions[iid] = max(self.versions.get(iid, 0), value["version"])
        return len(self.versions)

    def close(self) -> None:
        """Release the consumer."""
        if self._consumer is not None:
            self._consumer.close()


def pipeline_lag(settings: Settings) -> tuple[int, int]:
    """(processors' lag on their inputs, sink's lag on its topics), in messages."""
    ns = settings.kafka.topic_namespace
    inputs = [topics.topic_name(topics.INTERACTIONS, ns), topics.topic_name(topics.FEEDBACK, ns)]
    processing = group_lag(settings.kafka, app_id(settings), [*inputs, contributions_topic(settings)])
    sink = group_lag(settings.kafka, sink_group_id(settings), sink_topics(settings))
    return processing.total, sink.total


def wait_until_drained(
    settings: Settings,
    expected_interactions: int,
    *,
    timeout_s: float = 600.0,
    quiet_s: float = 4.0,
    on_progress: Callable[[int, int, int], None] | None = None,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Block until every interaction has an outcome and every stage has committed all it read, with
    nothing changing for ``quiet_s``; return the ``time.monotonic()`` at which that state was first
    seen. Raises TimeoutError (or RuntimeError if ``alive`` says the workers died)."""
    watch = OutcomeWatch(settings)
    deadline = time.monotonic() + timeout_s
    last: tuple[int, int, int, int] | None = None
    first_seen = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise RuntimeError("a worker process exited while the pipeline was still working")
            settled = watch.poll()
            lag_processing, lag_sink = pipeline_lag(settings)
            seen_at = time.monotonic()
            if on_progress is not None:
                on_progress(settled, lag_processing, lag_sink)
            state = (settled, lag_processing, lag_sink, sum(watch.versions.values()))
            if state != last:
                first_seen, last = seen_at, state
            done = settled >= expected_interactions and lag_processing == 0 and lag_sink == 0
            if done and seen_at - first_seen >= quiet_s:
                return first_seen
            time.sleep(0.5)
    finally:
        watch.close()
    raise TimeoutError(
        f"pipeline not drained after {timeout_s}s: {last and last[0]}/{expected_interactions} outcomes, "
        f"lag {last and last[1]} (processors) / {last and last[2]} (sink)"
    )
