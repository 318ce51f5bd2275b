"""Real services for integration tests: never a mock of Kafka or ClickHouse.

The broker comes from, in order: ``FEEDBACKLOOP_TEST_BOOTSTRAP`` (an existing broker), a
testcontainers Kafka when a Docker engine answers, else the project's own local stack
(started here if it is not running, and left running for the next test run). Each test gets
its own topic namespace, consumer group id and chdb directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedbackloop import localstack
from infra.kafka import delete_topics, ensure_topics, public_topic_names, wait_for_broker
from infra.settings import ClickHouseSettings, KafkaSettings, Settings, StackSettings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is an integration test."""
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    """host:port of a real Kafka broker for this test session."""
    if env := os.environ.get("FEEDBACKLOOP_TEST_BOOTSTRAP"):
        yield env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    stack = Settings().stack
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{stack.port}")
    try:
        localstack.up(stack, kafka)
    except localstack.StackError as exc:
        pytest.fail(f"no Kafka broker for integration tests: {exc}")
    yield kafka.bootstrap_servers


@pytest.fixture
def namespace() -> str:
    """A topic namespace of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka(bootstrap_servers: str, namespace: str) -> Iterator[KafkaSettings]:
    """Kafka settings pointing at the test broker, with this test's public topics created."""
    settings = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_namespace=namespace)
    wait_for_broker(settings)
    ensure_topics(settings, public_topic_names(settings))
    yield settings
    with contextlib.suppress(Exception):  # cleanup only; a test may have stopped its broker
        delete_topics(settings, public_topic_names(settings))


@pytest.fixture
def chdb_dir(tmp_path: Path) -> Iterator[Path]:
    """A chdb data directory of this test's own."""
    path = tmp_path / "chdb"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clickhouse(chdb_dir: Path) -> ClickHouseSettings:
    """ClickHouse settings: a real server from ``FEEDBACKLOOP_TEST_CLICKHOUSE_URL``, else chdb."""
    url = os.environ.get("FEEDBACKLOOP_TEST_CLICKHOUSE_URL") or f"chdb:///{chdb_dir}"
    return ClickHouseSettings(url=url, database=f"fl_{uuid.uuid4().hex[:8]}", flush_interval_s=0.2)


def free_port() -> int:
    """A TCP port nothing listens on right now (for a private broker)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[StackSettings]:
    """A broker of this test's own (own ports and data), for tests that stop and restart it."""
    stack = Settings().stack.model_copy(
        update={
            "home": tmp_path / "stack",
            "port": free_port(),
            "controller_port": free_port(),
            "heap": "512m",
        }
    )
    yield stack
    localstack.down(stack)
