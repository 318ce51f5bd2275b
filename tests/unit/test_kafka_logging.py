"""librdkafka's log lines go through Python logging, and a broker that is not up yet is no noise."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.kafka import (
    AIOKAFKA_LOGGER,
    LIBRDKAFKA_LOGGER,
    AiokafkaOutageFilter,
    LibrdkafkaLog,
    client_config,
    librdkafka_transient,
    quiet_client_outages,
)
from infra.settings import KafkaSettings, ProducerSettings
from producers.sender import loop as sender_loop
from producers.sender.process import sender_config

FMT = "%s [%s] %s"
REFUSED = ("FAIL", "rdkafka#producer-1", "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: "
           "Connection refused (after 0ms in state CONNECT)")  # fmt: skip
LINES = {
    REFUSED[2]: True,
    "1/1 brokers are down": True,
    "Failed to resolve 'kafka:19092': Name or service not known (after 2ms in state CONNECT)": True,
    "127.0.0.1:9092/1: Disconnected: connection closed by peer: receive 0 after POLLIN": True,
    "Failed to acquire idempotence PID from broker: Coordinator load in progress: retrying": True,
    "Purging 1 unserved events from background queue": True,
    "Topic ai.interactions.v1 partition count changed from 4 to 2": False,
    "SASL authentication error: Authentication failed during authentication": False,
    "Configuration property `foo` is unknown": False,
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("line", "transient"), LINES.items())
def test_transient_lines_are_told_apart_alike_here_and_in_the_sender(line: str, transient: bool) -> None:
    assert librdkafka_transient(line) is transient
    assert (sender_loop._TRANSIENT.search(line) is not None) is transient


def test_a_starting_broker_is_debug_and_a_lasting_outage_one_warning_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    adapter = LibrdkafkaLog(outage_warn_s=30, clock=clock)
    caplog.set_level(logging.DEBUG, logger=LIBRDKAFKA_LOGGER)
    for _ in range(25):  # 25 s of refused connects: a broker starting up
        adapter.log(logging.ERROR, FMT, *REFUSED)
        clock.now += 1
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
    for _ in range(60):  # it stays away: said once at 30 s, again at 60 s
        adapter.log(logging.ERROR, FMT, *REFUSED)
        clock.now += 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "no connection to Kafka for 30 s" in warnings[0].getMessage()
    assert "Connection refused" in warnings[0].getMessage()
    assert "(30 similar lines" in warnings[0].getMessage()
    caplog.clear()
    clock.now += 120  # back for a while, then one more refused connect: a new outage, not yet said
    adapter.log(logging.ERROR, FMT, *REFUSED)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_other_warnings_keep_their_level_and_notices_go_to_debug(caplog: pytest.LogCaptureFixture) -> None:
    adapter = LibrdkafkaLog()
    caplog.set_level(logging.DEBUG, logger=LIBRDKAFKA_LOGGER)
    adapter.log(logging.ERROR, FMT, "SASL", "rdkafka#consumer-2", "SASL authentication error: denied")
    adapter.log(logging.WARNING, FMT, "CONFWARN", "rdkafka#consumer-2", "Configuration property is unknown")
    adapter.log(logging.INFO, FMT, "BGQUEUE", "rdkafka#producer-6", "Purging 1 unserved events")
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING, logging.DEBUG]


def test_client_config_routes_librdkafka_through_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    caplog.set_level(logging.DEBUG, logger=LIBRDKAFKA_LOGGER)
    admin = AdminClient(client_config(kafka))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=1.0)
    admin.poll(0.5)  # an admin client's log lines are served by poll, like its callbacks
    refused = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert refused, "librdkafka's lines should reach the librdkafka logger"
    assert all(r.levelno == logging.DEBUG for r in refused)


def test_a_client_made_before_the_broker_is_up_prints_nothing() -> None:
    # What `make demo` showed: ~80 lines on stderr while the broker started. Now: none, in a
    # process with Python logging left as it is by default (WARNING and up to stderr).
    code = textwrap.dedent(
        f"""
        from confluent_kafka.admin import AdminClient
        from infra.kafka import client_config
        from infra.settings import KafkaSettings
        admin = AdminClient(client_config(KafkaSettings(bootstrap_servers="127.0.0.1:{_closed_port()}")))
        try:
            admin.list_topics(timeout=2.0)
        except Exception:
            pass
        admin.poll(0.5)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""


def test_the_sender_demotes_an_outage_and_its_config_stays_json(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="producers.librdkafka")
    log = sender_loop._LibrdkafkaLog()
    log.log(logging.ERROR, FMT, *REFUSED)
    log.log(logging.CRITICAL, FMT, "SASL", "feedbackloop-sdk#producer-1", "SASL authentication error")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.WARNING]
    config = sender_config(KafkaSettings(), ProducerSettings()).to_dict()
    assert "logger" not in config["kafka_config"]
    assert json.loads(json.dumps(config))["kafka_config"]["bootstrap.servers"] == "127.0.0.1:9092"


def test_aiokafka_outage_lines_are_demoted_and_summarised(caplog: pytest.LogCaptureFixture) -> None:
    """Before: aiokafka (inside Faust) logged "Unable connect to node" at ERROR every 100 ms while a
    broker was down."""
    now = [0.0]
    logger = logging.getLogger("aiokafka.test-outage")  # a child: the filter sits on the logger itself
    logger.addFilter(AiokafkaOutageFilter(outage_warn_s=30, clock=lambda: now[0]))
    caplog.set_level(logging.DEBUG, logger="aiokafka.test-outage")
    for _ in range(400):  # 40 s of a line every 100 ms
        logger.error("Unable connect to node with id %s: %s", 1, "[Errno 111] Connect call failed")
        now[0] += 0.1
    logger.error("Unexpected error in the coordinator")  # anything else keeps its level
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 1
    assert levels.count(logging.ERROR) == 1
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage().startswith("no connection to Kafka for 30 s (300 similar lines")
    assert "Unable connect to node with id 1" in warning.getMessage()
    assert caplog.records[-1].getMessage() == "Unexpected error in the coordinator"


def test_the_worker_installs_the_aiokafka_filter_once() -> None:
    quiet_client_outages()
    quiet_client_outages()
    filters = logging.getLogger(AIOKAFKA_LOGGER).filters
    assert sum(isinstance(f, AiokafkaOutageFilter) for f in filters) == 1
