"""``feedbackloop doctor`` against the real broker and chdb, and against services that do not answer."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from feedbackloop.doctor import Scope, Status, run_checks, run_doctor
from infra.clickhouse import connect
from infra.groups import contributions_topic
from infra.kafka import delete_topics, ensure_topics
from infra.settings import (
    ClickHouseSettings,
    KafkaSettings,
    PipelineSettings,
    ProducerSettings,
    Settings,
)
from sinks.clickhouse import migrate


@pytest.fixture
def settings(kafka: KafkaSettings, clickhouse: ClickHouseSettings, tmp_path: Path) -> Settings:
    return Settings(
        kafka=kafka,
        clickhouse=clickhouse,
        pipeline=PipelineSettings(data_dir=tmp_path / "faust"),
        producer=ProducerSettings(spool_dir=tmp_path / "spool"),
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_ready_deployment_passes_every_check(settings: Settings) -> None:
    client = connect(settings.clickhouse)
    migrate(client, settings.clickhouse.database)
    checks = run_checks(settings)
    assert [c for c in checks if c.status is not Status.ok] == []
    names = {f"{c.area}: {c.name}" for c in checks}
    assert {
        "kafka: brokers reachable",
        "kafka: advertised listeners",
        "kafka: security",
        "kafka: topics",
        "kafka: group sink",
        "clickhouse: version",
        "clickhouse: SQL features",
        "clickhouse: migrations",
        "clickhouse: insert permission",
        "host: worker state folder",
    } <= names
    console = Console(record=True, width=200)
    assert run_doctor(settings, console) == 0
    assert "0 failed" in console.export_text()


def test_running_wants_a_worker_in_every_stage_group(settings: Settings) -> None:
    checks = run_checks(settings, scope=Scope.kafka, running=True)
    failed = {c.name: c.fix for c in checks if c.status is Status.fail}
    assert set(failed) == {"group processors", "group sink", "group evaluator lease"}
    assert all("feedbackloop worker" in fix for fix in failed.values())


def test_topics_must_have_one_partition_count(settings: Settings) -> None:
    more = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"partitions": 8})})
    (topics,) = [c for c in run_checks(more, scope=Scope.kafka) if c.name == "topics"]
    assert topics.status is Status.fail
    assert "FEEDBACKLOOP_KAFKA__PARTITIONS=4" in topics.fix  # what every existing topic has

    odd = contributions_topic(settings)
    ensure_topics(settings.kafka, [odd], partitions=2)
    try:
        (topics,) = [c for c in run_checks(settings, scope=Scope.kafka) if c.name == "topics"]
    finally:
        with contextlib.suppress(Exception):
            delete_topics(settings.kafka, [odd])
    assert topics.status is Status.fail
    assert f"{odd} has 2" in topics.detail
    assert "recreate" in topics.fix


def test_the_command_says_which_setting_to_change_when_nothing_answers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "COLUMNS": "250",
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
        "FEEDBACKLOOP_CLICKHOUSE__URL": f"http://fl:s3cret@127.0.0.1:{_closed_port()}",
        "FEEDBACKLOOP_PIPELINE__DATA_DIR": str(tmp_path / "faust"),
        "FEEDBACKLOOP_PRODUCER__SPOOL_DIR": str(tmp_path / "spool"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "feedbackloop.cli", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS" in run.stdout
    assert "FEEDBACKLOOP_CLICKHOUSE__URL" in run.stdout
    assert "s3cret" not in run.stdout + run.stderr
    assert run.stderr == "", "no client noise: the table says it all"
