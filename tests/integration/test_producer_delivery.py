"""The SDK against the real broker: exactly once, across an outage, a restart and a SIGKILL of the app.

Every check reads the topics back in full (up to their high watermarks), so a duplicate cannot
hide: ``event_id`` must be unique in the topic itself, not after some downstream dedup.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from feedbackloop import localstack
from infra.kafka import client_config
from infra.settings import KafkaSettings, ProducerSettings, StackSettings
from producers import FeedbackClient, InteractionRef, NotAcceptingError, sdk
from producers.sender import process
from producers.sender.spool import encode_record
from schemas import topics


def read_topic(kafka: KafkaSettings, base: str, timeout_s: float = 120.0) -> list[tuple[int, dict[str, Any]]]:
    """Every message of a topic, as (partition, decoded value), in offset order per partition."""
    name = topics.topic_name(base, kafka.topic_namespace)
    consumer = Consumer(
        client_config(kafka, **{"group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        positions = dict.fromkeys(partitions, 0)
        out: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        while any(positions[p] < ends[p] for p in partitions):
            assert time.monotonic() < deadline, f"could not read {name} to its end"
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            partition, offset, value = message.partition(), message.offset(), message.value()
            assert partition is not None
            assert offset is not None
            assert value is not None
            out.append((partition, json.loads(value)))
            positions[partition] = offset + 1
        return out
    finally:
        consumer.close()


def assert_in_order_per_session(messages: list[tuple[int, dict[str, Any]]]) -> None:
    """Within each session, ``metadata.seq`` grows (they were recorded in that order)."""
    by_session: dict[str, list[int]] = defaultdict(list)
    for _, value in messages:
        by_session[value["session_id"]].append(int(value["metadata"]["seq"]))
    for session, seqs in by_session.items():
        assert seqs == sorted(seqs), f"session {session} out of order"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(client: FeedbackClient, seq: int, sessions: int = 50) -> str:
    event = client.record_interaction(
        user_id=f"user-{seq % 97}",
        session_id=f"session-{seq % sessions}",
        prompt=f"question {seq}",
        response="an answer " * 20,
        prompt_version="v1",
        model="test-model",
        response_time_ms=seq % 1000,
        metadata={"seq": str(seq)},
    )
    return str(event.event_id)


def test_ten_thousand_events_arrive_exactly_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    sent: set[str] = set()
    with FeedbackClient(kafka, ProducerSettings(spool_dir=tmp_path / "spool")) as client:
        for seq in range(5000):
            sent.add(_record(client, seq))
            ref = InteractionRef(uuid.uuid4(), f"user-{seq % 97}", f"session-{seq % 50}")
            sent.add(str(client.record_copy(ref, copied_chars=seq).event_id))
        assert client.flush(timeout_s=120)
        metrics = client.metrics()
    assert metrics["sent"] == 10_000
    assert metrics["failed"] == metrics["dropped"] == metrics["refused"] == 0
    assert metrics["reserved_bytes"] == 0  # every accepted byte released once acknowledged
    interactions = read_topic(kafka, topics.INTERACTIONS)
    ids = [value["event_id"] for _, value in interactions + read_topic(kafka, topics.FEEDBACK)]
    assert len(ids) == 10_000
    assert set(ids) == sent
    assert_in_order_per_session(interactions)


def test_broker_outage_loses_nothing_and_duplicates_nothing(
    private_stack: StackSettings, namespace: str, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{private_stack.port}", topic_namespace=namespace)
    localstack.up(private_stack, kafka)
    client = FeedbackClient(kafka, ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=60))
    phase1_done, broker_down, phase2_done = threading.Event(), threading.Event(), threading.Event()
    total = 10_000
    errors: list[BaseException] = []

    def publish(start: int, stop: int) -> None:
        for seq in range(start, stop):
            _record(client, seq)
            if seq % 10 == 0:
                time.sleep(0.01)  # a steady trickle, so the outage lands mid-stream

    def publisher() -> None:
        try:
            publish(0, 3000)
            phase1_done.set()
            assert broker_down.wait(120)
            publish(3000, 7000)  # broker down
            phase2_done.set()
            publish(7000, total)  # broker coming back
        except BaseException as exc:
            errors.append(exc)
            phase1_done.set()
            phase2_done.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        assert phase1_done.wait(300)
        localstack.down(private_stack)
        broker_down.set()
        assert phase2_done.wait(300)
        localstack.up(private_stack, kafka)
        thread.join(300)
        assert not errors, errors
        assert client.flush(timeout_s=240), client.metrics()
    finally:
        broker_down.set()
        thread.join(300)
        client.close()
    metrics = client.metrics()
    assert metrics["spooled"] > 0, "the outage should have sent events through the spool"
    assert metrics["sent"] == total
    assert metrics["dropped"] == metrics["failed"] == 0
    received = read_topic(kafka, topics.INTERACTIONS)
    seqs = [int(value["metadata"]["seq"]) for _, value in received]
    ids = [value["event_id"] for _, value in received]
    assert len(ids) == len(set(ids)), "duplicates in the topic"
    assert sorted(seqs) == list(range(total))
    assert_in_order_per_session(received)


def test_events_spooled_before_a_restart_are_sent_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    settings = ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.5)
    dead = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{closed_port()}"})
    with FeedbackClient(dead, settings) as offline:
        sent = [_record(offline, seq, sessions=7) for seq in range(2000)]
    assert offline.metrics()["spooled"] == 2000
    with FeedbackClient(kafka, settings) as online:
        assert online.flush(timeout_s=120)
        assert online.metrics()["sent"] == 2000
    received = read_topic(kafka, topics.INTERACTIONS)
    assert sorted(value["event_id"] for _, value in received) == sorted(sent)
    assert_in_order_per_session(received)
    assert list((tmp_path / "spool" / "slot-0").glob("*.seg")) == []


def exited(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(condition: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


CHILD = """
import sys, time
from pathlib import Path
from infra.settings import KafkaSettings, ProducerSettings
from producers import FeedbackClient

port, spool_dir, namespace = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
client = FeedbackClient(
    KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_namespace=namespace),
    ProducerSettings(spool_dir=spool_dir, close_timeout_s=0.5),
)
client.spool_dir
print(client.sender_pid, flush=True)
seq = 0
while True:
    client.record_interaction(
        user_id="u", session_id="s", prompt="p", response="r" * 200, prompt_version="v1",
        model="m", response_time_ms=1, metadata={"seq": str(seq)},
    )
    seq += 1
    if seq % 100 == 0:
        print(client.metrics()["spooled"], flush=True)
        time.sleep(0.005)
"""


def test_sigkill_of_the_app_while_spooling_loses_only_what_the_app_still_held(
    kafka: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The app dies; its sender process spools everything the app had written to it, then exits.
    A torn record in the spool (a crash of the sender mid-write) costs that record only."""
    spool_root = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(closed_port()), str(spool_root), kafka.topic_namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    spooled_before_kill = 0
    try:
        assert child.stdout is not None
        sender = int(child.stdout.readline())
        for line in child.stdout:
            spooled_before_kill = int(line)
            if spooled_before_kill >= 3000:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(60)
    assert child.returncode == -signal.SIGKILL
    assert spooled_before_kill >= 3000
    wait_until(lambda: exited(sender))  # it spools what it was given, then lets the slot go
    # Make a crash land mid-write for sure: half of a next record at the end of the last segment.
    last_segment = max((spool_root / "slot-0").glob("*.seg"))
    with last_segment.open("ab") as file:
        file.write(encode_record("whatever", b"s", b'{"torn": true}')[:11])

    with (
        caplog.at_level(logging.WARNING),
        FeedbackClient(kafka, ProducerSettings(spool_dir=spool_root)) as recovered,
    ):
        assert recovered.flush(timeout_s=180)
    assert "torn record" in caplog.text
    received = read_topic(kafka, topics.INTERACTIONS)
    seqs = [int(value["metadata"]["seq"]) for _, value in received]
    # A gap-free prefix of what the child recorded, each once, in order: only records after the
    # last one written to the sender process (the app's buffer) are missing.
    assert seqs == list(range(len(seqs)))
    assert len(seqs) >= spooled_before_kill


APP = """
import sys, time
from pathlib import Path
from infra.settings import KafkaSettings, ProducerSettings
from producers import FeedbackClient

bootstrap, spool_dir, namespace, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = FeedbackClient(
    KafkaSettings(bootstrap_servers=bootstrap, topic_namespace=namespace),
    ProducerSettings(spool_dir=spool_dir),
)
for seq in range(count):
    client.record_interaction(
        user_id="u", session_id=f"s{seq % 7}", prompt="p", response="r" * 200, prompt_version="v1",
        model="m", response_time_ms=1, metadata={"seq": str(seq)},
    )
while client.metrics()["unwritten"]:
    time.sleep(0.005)
print(client.sender_pid, flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_app_with_the_broker_up_delivers_all_it_recorded(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Killed the instant its last event left it, the app loses nothing: the sender process
    delivers every event it was given, each once, then exits."""
    total = 5000
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            APP,
            kafka.bootstrap_servers,
            str(tmp_path / "spool"),
            kafka.topic_namespace,
            str(total),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        sender = int(app.stdout.readline())
        os.kill(app.pid, signal.SIGKILL)
        app.wait(60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(60)
    wait_until(lambda: exited(sender))
    received = read_topic(kafka, topics.INTERACTIONS)
    seqs = sorted(int(value["metadata"]["seq"]) for _, value in received)
    assert seqs == list(range(total)), "lost or duplicated events"
    assert_in_order_per_session(received)


@pytest.mark.parametrize(
    "cursor",
    [
        lambda segments: {"segment": max(segments) + 3, "offset": 8},
        lambda segments: {"segment": min(segments), "offset": -4},
    ],
    ids=["names-a-later-segment", "negative-offset"],
)
def test_a_bad_cursor_replays_the_spool_instead_of_skipping_or_wedging(
    kafka: KafkaSettings, tmp_path: Path, cursor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured before: a cursor naming a later segment silently skipped 8,153 spooled events; a
    negative offset wedged the sender (~10 tracebacks a second, SIGKILLed after 34 s at close)."""
    settings = ProducerSettings(
        spool_dir=tmp_path / "spool", close_timeout_s=0.5, spool_segment_bytes=1 << 16
    )
    dead = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{closed_port()}"})
    with FeedbackClient(dead, settings) as offline:
        sent = [_record(offline, seq, sessions=7) for seq in range(1500)]
    slot = tmp_path / "spool" / "slot-0"
    segments = [int(p.stem) for p in slot.glob("*.seg")]
    assert len(segments) > 2
    (slot / "cursor.json").write_text(json.dumps(cursor(segments)))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), FeedbackClient(kafka, settings) as online:
        assert online.flush(timeout_s=120)
        assert online.accepting
    assert time.monotonic() - started < 60
    assert "spool cursor" in caplog.text
    assert "unexpected error" not in caplog.text
    received = read_topic(kafka, topics.INTERACTIONS)
    assert sorted(value["event_id"] for _, value in received) == sorted(sent)


def test_events_held_while_the_spool_fails_reach_the_broker_when_it_answers(
    private_stack: StackSettings, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker away and the spool failing (disk full): accepted events are held in memory, new ones
    refused; once the broker answers, the held ones go to it directly, each once."""
    fault = tmp_path / "disk-full"
    build = process.sender_config
    monkeypatch.setattr(
        sdk,  # where FeedbackClient looks it up
        "sender_config",
        lambda k, p: dataclasses.replace(build(k, p), spool_fault_file=str(fault)),
    )
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{private_stack.port}", topic_namespace=namespace)
    fault.write_text("ENOSPC")
    sent: list[str] = []
    with FeedbackClient(kafka, ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=30)) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                sent.append(_record(client, len(sent), sessions=7))
            except NotAcceptingError:
                break
            time.sleep(0.002)
        assert client.metrics()["spool_fault"] == errno.ENOSPC
        assert sent
        localstack.up(private_stack, kafka)  # the broker answers; the disk is still full
        wait_until(lambda: client.metrics()["sent"] == len(sent), timeout_s=120)
        assert client.metrics()["spooled"] == 0
        fault.unlink()
        wait_until(lambda: client.accepting, timeout_s=30)
        sent += [_record(client, len(sent) + i, sessions=7) for i in range(100)]
        assert client.flush(60)
        assert client.metrics()["dropped"] == 0
    received = read_topic(kafka, topics.INTERACTIONS)
    assert sorted(value["event_id"] for _, value in received) == sorted(sent)
    assert_in_order_per_session(received)
