"""The producer SDK without a broker: validation, typed calls, spooling, metrics, threads and asyncio.

"No broker" here means the SDK points at a closed port on 127.0.0.1: librdkafka's connects are
refused at once, which is what an outage looks like to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr, ValidationError

from infra.settings import FieldCaps, KafkaSettings, ProducerSettings, RedactionSettings
from producers import (
    BufferFullError,
    ClientClosedError,
    EventTimeError,
    EventTooLargeError,
    Experiment,
    FeedbackClient,
    InteractionRef,
    Mode,
    NotAcceptingError,
    SpoolError,
    sdk,
)
from producers.sender import process
from producers.sender.loop import SenderConfig
from producers.sender.spool import Spool
from producers.signing import InteractionSigner
from schemas import FeedbackEvent, FeedbackType, InteractionEvent


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def dead_kafka() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")


@pytest.fixture
def settings(tmp_path: Path) -> ProducerSettings:
    return ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.2, spool_fsync_interval_s=0.0)


@pytest.fixture
def client(dead_kafka: KafkaSettings, settings: ProducerSettings) -> Iterator[FeedbackClient]:
    with FeedbackClient(dead_kafka, settings) as c:
        yield c


def _interaction(client: FeedbackClient, **overrides: object) -> InteractionEvent:
    fields: dict[str, object] = {
        "user_id": "u1",
        "session_id": "s1",
        "prompt": "Summarise this",
        "response": "A summary.",
        "prompt_version": "v1.1",
        "model": "gpt-4o-mini",
        "response_time_ms": 420,
        **overrides,
    }
    return client.record_interaction(**fields)  # type: ignore[arg-type]


def spooled_values(directory: Path) -> list[dict[str, object]]:
    """Every record a closed client left in its spool slot, decoded, in spool order."""
    spool = Spool(directory, max_bytes=1 << 30, segment_bytes=1 << 24, fsync_interval_s=0)
    try:
        out: list[dict[str, object]] = []
        while batch := spool.read(1000):
            out.extend(json.loads(record.value) for record in batch)
        return out
    finally:
        spool.close()


def test_ids_and_timestamps_are_filled_in(client: FeedbackClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    event = _interaction(client)
    assert isinstance(event.event_id, uuid.UUID)
    assert event.interaction_id != event.event_id
    assert before <= event.created_at <= datetime.now(UTC)
    given = uuid.uuid4()
    assert _interaction(client, event_id=given).event_id == given


def test_typed_feedback_calls_build_the_contract_events(client: FeedbackClient) -> None:
    first = _interaction(client)
    link = client.record_regenerate(first)
    assert link == first.interaction_id
    second = _interaction(client, regenerated_from=link)
    assert second.regenerated_from == first.interaction_id
    events = [
        client.record_edit(second, "A better summary."),
        client.record_thumbs_up(second, comment="nice"),
        client.record_thumbs_down(second),
        client.record_copy(second, 12),
        client.record_accept(second),
        client.record_view_end(second, 5400),
    ]
    assert [e.feedback_type for e in events] == [
        FeedbackType.EDIT,
        FeedbackType.THUMBS_UP,
        FeedbackType.THUMBS_DOWN,
        FeedbackType.COPY,
        FeedbackType.ACCEPT,
        FeedbackType.VIEW_END,
    ]
    assert events[0].corrected_output == "A better summary."
    assert events[1].comment == "nice"
    assert (events[3].copied_chars, events[5].dwell_ms) == (12, 5400)
    assert all(e.interaction_id == second.interaction_id and e.session_id == "s1" for e in events)


def test_feedback_from_stored_ids(client: FeedbackClient) -> None:
    ref = InteractionRef(interaction_id=uuid.uuid4(), user_id="u9", session_id="s9")
    event = client.record_copy(ref, 3)
    assert (event.interaction_id, event.user_id, event.session_id) == (ref.interaction_id, "u9", "s9")


@pytest.mark.parametrize(
    "call",
    [
        lambda c, i: c.record_copy(i, -1),
        lambda c, i: c.record_view_end(i, "5400"),
        lambda c, i: c.record_edit(i, None),
        lambda c, i: c.record_thumbs_up(InteractionRef(i.interaction_id, "", "s1")),
        lambda c, i: c.record_feedback(i, FeedbackType.COPY),
        lambda c, i: _interaction(c, response_time_ms="12"),
        lambda c, i: _interaction(c, experiment_id="exp-1"),
        lambda c, i: _interaction(c, prompt_version=""),
    ],
)
def test_invalid_events_raise_at_the_call_site(
    client: FeedbackClient, call: Callable[[FeedbackClient, InteractionEvent], object]
) -> None:
    interaction = _interaction(client)
    with pytest.raises(ValidationError):
        call(client, interaction)
    client.close()
    assert [e["event_id"] for e in spooled_values(client.spool_dir)] == [str(interaction.event_id)]


def test_experiment_assignment_is_logged_on_the_interaction(client: FeedbackClient) -> None:
    experiment = Experiment("checkout-prompt", {"v1.1": 20, "v1.2": 80})
    assignment = experiment.assign("u1")
    event = _interaction(client, prompt_version=assignment.variant, assignment=assignment)
    assert (event.experiment_id, event.variant) == ("checkout-prompt", assignment.variant)
    with pytest.raises(ValueError, match="either assignment"):
        _interaction(client, assignment=assignment, experiment_id="other", variant="x")


def test_time_interaction_measures_the_call(client: FeedbackClient, settings: ProducerSettings) -> None:
    with client.time_interaction(
        user_id="u1", session_id="s1", prompt="hi", prompt_version="v1", model="m"
    ) as call:
        known_before = call.interaction_id
        time.sleep(0.02)
        call.response = "hello"
        call.metadata["route"] = "chat"
    assert call.event is not None
    assert call.event.interaction_id == known_before
    assert call.event.response_time_ms >= 20
    assert call.event.metadata == {"route": "chat"}


def test_time_interaction_records_nothing_when_the_call_fails(client: FeedbackClient) -> None:
    with (
        pytest.raises(RuntimeError, match="model down"),
        client.time_interaction(
            user_id="u1", session_id="s1", prompt="hi", prompt_version="v1", model="m"
        ) as call,
    ):
        raise RuntimeError("model down")
    assert call.event is None
    with (
        pytest.raises(ValueError, match=r"set \.response"),
        client.time_interaction(user_id="u1", session_id="s1", prompt="hi", prompt_version="v1", model="m"),
    ):
        pass


def test_broker_down_spools_everything_in_order(
    dead_kafka: KafkaSettings, settings: ProducerSettings
) -> None:
    client = FeedbackClient(dead_kafka, settings)
    sent: list[InteractionEvent | FeedbackEvent] = []
    for i in range(300):
        event = _interaction(client, session_id=f"s{i % 3}", metadata={"seq": str(i)})
        sent.append(event)
        sent.append(client.record_thumbs_down(event))
    wait_for(lambda: client.mode is Mode.SPOOL)
    assert client.flush(0.2) is False  # nothing can be acknowledged
    client.close()
    metrics = client.metrics()
    assert metrics["sent"] == 0
    assert metrics["dropped"] == 0
    assert metrics["spooled"] == 600
    on_disk = spooled_values(client.spool_dir)
    assert [e["event_id"] for e in on_disk] == [str(e.event_id) for e in sent]
    assert InteractionEvent.model_validate_json(json.dumps(on_disk[0])) == sent[0]
    assert FeedbackEvent.model_validate_json(json.dumps(on_disk[1])) == sent[1]


def test_a_full_spool_refuses_at_the_call_site_and_drops_nothing(
    dead_kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Before: events past the bound were accepted, then dropped by the sender process."""
    settings = ProducerSettings(
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 16,
        spool_segment_bytes=1 << 12,
        close_timeout_s=0.1,
    )
    accepted: list[str] = []
    with FeedbackClient(dead_kafka, settings) as client:
        accepted.append(str(_interaction(client).event_id))
        wait_for(lambda: client.mode is Mode.SPOOL)
        refusal = _record_until_refused(client, accepted, response="x" * 300)
        assert "spool_max_bytes" in str(refusal)
        assert not client.accepting
        assert not client.spool_has_room
        assert "spool" in client.not_accepting_reason()
        refused = client.metrics()["refused"]
        assert refused == 1
    metrics = client.metrics()
    assert metrics["dropped"] == 0
    assert metrics["spooled"] == len(accepted)  # every event accepted is kept, once
    assert metrics["spool_bytes"] <= 1 << 16
    assert [e["event_id"] for e in spooled_values(client.spool_dir)] == accepted


def test_the_spool_bound_holds_under_concurrency(dead_kafka: KafkaSettings, tmp_path: Path) -> None:
    """Before: 4 clients against a 64 KiB bound: 360 events accepted, 46 spooled, 314 dropped
    (the room check and the write raced)."""
    settings = ProducerSettings(
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 16,
        spool_segment_bytes=1 << 12,
        close_timeout_s=0.1,
    )
    client = FeedbackClient(dead_kafka, settings)
    accepted: list[list[str]] = [[] for _ in range(4)]
    refused = [0] * 4

    def worker(n: int) -> None:
        for i in range(150):
            try:
                event = _interaction(client, session_id=f"t{n}", response="y" * 400, metadata={"seq": str(i)})
            except NotAcceptingError:
                refused[n] += 1
            else:
                accepted[n].append(str(event.event_id))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    metrics = client.metrics()
    assert sum(refused) > 0  # the bound was reached
    assert metrics["refused"] == sum(refused)
    assert metrics["dropped"] == 0
    on_disk = [str(e["event_id"]) for e in spooled_values(client.spool_dir)]
    assert sorted(on_disk) == sorted(event_id for ids in accepted for event_id in ids)
    assert metrics["spooled"] == len(on_disk)


@pytest.fixture
def spool_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that, while it exists, makes the client's spool writes fail with the errno named in it
    (the spool's fault seam, set through the sender's configuration)."""
    path = tmp_path / "spool-fault"
    build = process.sender_config

    def with_fault(kafka: KafkaSettings, producer: ProducerSettings) -> SenderConfig:
        return dataclasses.replace(build(kafka, producer), spool_fault_file=str(path))

    monkeypatch.setattr(sdk, "sender_config", with_fault)
    return path


def _record_until_refused(
    client: FeedbackClient, accepted: list[str], timeout_s: float = 10, **fields: object
) -> NotAcceptingError:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            accepted.append(str(_interaction(client, **fields).event_id))
        except NotAcceptingError as exc:
            return exc
        time.sleep(0.001)
    raise AssertionError("never refused")


@pytest.mark.parametrize("error", ["ENOSPC", "EROFS", "EACCES"])
def test_a_failing_spool_refuses_new_events_at_once_and_loses_none(
    dead_kafka: KafkaSettings, settings: ProducerSettings, spool_fault: Path, error: str
) -> None:
    """Before: with the disk full below spool_max_bytes, 500 of 600 events were accepted and lost,
    /healthz stayed 200, and the only trace was one log line."""
    accepted: list[str] = []
    with FeedbackClient(dead_kafka, settings) as client:
        for _ in range(50):
            accepted.append(str(_interaction(client).event_id))
        wait_for(lambda: client.metrics()["spooled"] == 50)
        spool_fault.write_text(error)
        refusal = _record_until_refused(client, accepted)
        assert os.strerror(getattr(errno, error)) in str(refusal)
        assert str(client.spool_dir) in str(refusal)
        metrics = client.metrics()
        assert metrics["spool_fault"] == getattr(errno, error)
        assert metrics["accepting"] == 0
        assert metrics["spool_write_errors"] >= 1
        assert metrics["dropped"] == 0
        assert not client.accepting
        held = len(accepted) - 50
        assert held >= 1  # accepted before the fault was known: kept in memory, not dropped
        spool_fault.unlink()  # space freed, or the disk remounted writable
        wait_for(lambda: client.accepting, timeout_s=10)
        for _ in range(20):
            accepted.append(str(_interaction(client).event_id))
    metrics = client.metrics()
    assert metrics["dropped"] == 0
    assert metrics["refused"] >= 1
    assert [e["event_id"] for e in spooled_values(client.spool_dir)] == accepted


def test_a_spool_that_cannot_be_opened_keeps_the_sender_alive_and_the_events(
    dead_kafka: KafkaSettings, settings: ProducerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the sender process exited with code 2 and was restarted in a loop, each restart
    losing what it had been handed, while the client went on accepting events."""
    root = settings.spool_dir
    root.mkdir(parents=True)
    (root / "slot-0").write_text("not a folder")  # a real error from the kernel when it is opened
    client = FeedbackClient(dead_kafka, settings)
    accepted = [str(_interaction(client, metadata={"seq": str(i)}).event_id) for i in range(20)]
    refusal = _record_until_refused(client, accepted)
    assert "cannot be written" in str(refusal)
    pid = client.sender_pid
    time.sleep(1.5)  # it retries; it does not exit
    assert client.sender_pid == pid
    assert not client.accepting
    assert "cannot open the spool" in caplog.text
    (root / "slot-0").unlink()
    wait_for(lambda: client.accepting, timeout_s=30)
    accepted.append(str(_interaction(client).event_id))
    client.close()
    metrics = client.metrics()
    assert (metrics["dropped"], metrics["spooled"]) == (0, len(accepted))
    assert [e["event_id"] for e in spooled_values(root / "slot-0")] == accepted


def test_oversized_fields_are_refused_naming_the_field(dead_kafka: KafkaSettings, tmp_path: Path) -> None:
    caps = FieldCaps(prompt=100, response=200, corrected_output=50, comment=20, metadata=30)
    settings = ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.1, field_caps=caps)
    with FeedbackClient(dead_kafka, settings) as client:
        ok = _interaction(client, prompt="p" * 100, response="r" * 200, metadata={"k" * 10: "v" * 20})
        cases: list[tuple[str, Callable[[], object]]] = [
            ("prompt", lambda: _interaction(client, prompt="p" * 101)),
            ("response", lambda: _interaction(client, response="r" * 201)),
            ("metadata", lambda: _interaction(client, metadata={"k" * 10: "v" * 21})),
            ("corrected_output", lambda: client.record_edit(ok, "e" * 51)),
            ("comment", lambda: client.record_thumbs_down(ok, comment="c" * 21)),
        ]
        for name, call in cases:
            with pytest.raises(EventTooLargeError, match=f"{name} has .* characters; the cap is") as caught:
                call()
            assert caught.value.field == name
            assert f"producer.field_caps.{name}" in str(caught.value)
        prebuilt = FeedbackEvent(
            event_id=uuid.uuid4(),
            interaction_id=ok.interaction_id,
            user_id="u",
            session_id="s",
            created_at=datetime.now(UTC),
            feedback_type=FeedbackType.EDIT,
            corrected_output="e" * 51,
        )
        with pytest.raises(EventTooLargeError, match="corrected_output"):
            client.publish_many([prebuilt])
    assert [e["event_id"] for e in spooled_values(client.spool_dir)] == [str(ok.event_id)]


def test_an_event_over_the_message_limit_is_refused_before_it_is_accepted(
    dead_kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Before: an event just under 1 MiB was accepted, then refused by librdkafka
    (MSG_SIZE_TOO_LARGE) in the sender process, and lost."""
    caps = FieldCaps(prompt=2_000_000, response=2_000_000)
    settings = ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.1, field_caps=caps)
    with FeedbackClient(dead_kafka, settings) as client:
        with pytest.raises(
            EventTooLargeError, match=r"bytes as a Kafka message; the limit is 1,000,000"
        ) as caught:
            _interaction(client, response="r" * 1_000_000)
        assert caught.value.field is None
        assert caught.value.size > caught.value.limit == 1_000_000
        fits = _interaction(client, response="r" * 990_000)  # librdkafka takes it: kept
        with pytest.raises(EventTooLargeError, match="Kafka message"):
            client.publish_raw("unit.raw", b"k", b"v" * 1_000_000)
    assert [e["event_id"] for e in spooled_values(client.spool_dir)] == [str(fits.event_id)]


@pytest.mark.parametrize(
    "call",
    [
        lambda c, i: _interaction(c, response_time_ms=18_446_744_073_709_551_615),  # 1.8e19, stored before
        lambda c, i: _interaction(c, response_time_ms=24 * 3600 * 1000 + 1),
        lambda c, i: c.record_view_end(i, 24 * 3600 * 1000 + 1),
        lambda c, i: c.record_copy(i, 10_000_001),
    ],
    ids=["1.8e19-ms", "over-24h", "dwell-over-24h", "copied-chars"],
)
def test_implausible_numbers_are_invalid(
    client: FeedbackClient, call: Callable[[FeedbackClient, InteractionEvent], object]
) -> None:
    interaction = _interaction(client)
    with pytest.raises(ValidationError, match="less than or equal to"):
        call(client, interaction)


def test_a_spool_folder_that_cannot_be_created_fails_the_constructor(
    dead_kafka: KafkaSettings, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    spool_dir = tmp_path / "file" / "spool"
    with pytest.raises(SpoolError, match=re.escape(str(spool_dir))):
        FeedbackClient(dead_kafka, ProducerSettings(spool_dir=spool_dir))


def test_buffer_full_refuses_at_the_call_site(dead_kafka: KafkaSettings, tmp_path: Path) -> None:
    settings = ProducerSettings(spool_dir=tmp_path / "spool", buffer_max_events=5, close_timeout_s=0.1)
    with FeedbackClient(dead_kafka, settings) as client:
        events = [
            FeedbackEvent(
                event_id=uuid.uuid4(),
                interaction_id=uuid.uuid4(),
                user_id="u",
                session_id="s",
                created_at=datetime.now(UTC),
                feedback_type=FeedbackType.ACCEPT,
            )
            for _ in range(6)
        ]
        with pytest.raises(BufferFullError, match="buffer"):
            client.publish_many(events)
        assert client.metrics()["rejected"] == 6
        client.publish_many(events[:5])
    assert client.metrics()["spooled"] == 5


def test_closed_client_refuses(client: FeedbackClient) -> None:
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientClosedError):
        _interaction(client)


def test_metrics_as_dict_and_prometheus(client: FeedbackClient) -> None:
    _interaction(client)
    wait_for(lambda: client.metrics()["spooled"] + client.metrics()["in_flight"] >= 1)
    metrics = client.metrics()
    for name in (
        "sent",
        "failed",
        "spooled",
        "dropped",
        "replayed",
        "rejected",
        "buffered",
        "unwritten",
        "in_flight",
    ):
        assert isinstance(metrics[name], int)
    registry = CollectorRegistry()
    client.register_metrics(registry)
    text = generate_latest(registry).decode()
    names = (
        "sent_total",
        "failed_total",
        "spooled_total",
        "dropped_total",
        "spool_bytes",
        "spooling",
        "unwritten",
    )
    for name in names:
        assert f'feedbackloop_producer_{name}{{client="feedbackloop-sdk"}}' in text


def test_threads_share_one_client(dead_kafka: KafkaSettings, settings: ProducerSettings) -> None:
    client = FeedbackClient(dead_kafka, settings)

    def worker(n: int) -> None:
        for i in range(250):
            _interaction(client, session_id=f"thread-{n}", metadata={"seq": str(i)})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    on_disk = spooled_values(client.spool_dir)
    assert len(on_disk) == 1000
    for n in range(4):
        seqs = [int(e["metadata"]["seq"]) for e in on_disk if e["session_id"] == f"thread-{n}"]  # type: ignore[index]
        assert seqs == list(range(250))


def test_usable_from_asyncio_without_blocking_the_loop(
    dead_kafka: KafkaSettings, settings: ProducerSettings
) -> None:
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def main() -> FeedbackClient:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        async with FeedbackClient(dead_kafka, settings.model_copy(update={"close_timeout_s": 0.5})) as client:
            async with client.time_interaction(
                user_id="u", session_id="s", prompt="p", prompt_version="v1", model="m"
            ) as call:
                await asyncio.sleep(0.01)
                call.response = "r"
            assert call.event is not None
            client.record_accept(call.event)
            ticks_before_close = ticks
            assert await client.aflush(0.2) is False
        # close waited for the broker off the loop: the ticker kept running meanwhile.
        assert ticks > ticks_before_close
        stop.set()
        await task
        return client

    client = asyncio.run(main())
    assert [e["event_id"] is not None for e in spooled_values(client.spool_dir)] == [True, True]


def test_raw_records_and_restart_keeps_the_spool(
    dead_kafka: KafkaSettings, settings: ProducerSettings
) -> None:
    with FeedbackClient(dead_kafka, settings) as client:
        client.publish_raw("unit.custom", b"k", b'{"x": 1}')
        directory = client.spool_dir
    with FeedbackClient(dead_kafka, settings) as again:
        assert again.spool_dir == directory
        _interaction(again)
    values = spooled_values(directory)
    assert values[0] == {"x": 1}
    assert values[1]["prompt"] == "Summarise this"


def _private_tmpfs_available() -> bool:
    """Whether this process may mount a tmpfs in a mount namespace of its own (root with
    CAP_SYS_ADMIN; the mount is invisible outside that namespace and gone when it ends)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = tempfile.mkdtemp(prefix="fl-tmpfs-probe-")
    try:
        command = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=4k",
            "tmpfs",
        ]
        return subprocess.run([*command, probe], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.rmdir(probe)


DISK_FULL = """
import json, subprocess, sys, time
from pathlib import Path
from infra.settings import KafkaSettings, ProducerSettings
from producers import FeedbackClient, NotAcceptingError
from producers.sender.spool import Spool

mnt, port = Path(sys.argv[1]), int(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True)
filler = mnt / "filler"
filler.write_bytes(bytes(928 << 10))  # 96 KiB left: far below spool_max_bytes
client = FeedbackClient(
    KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_namespace="unit"),
    ProducerSettings(spool_dir=mnt / "spool", spool_max_bytes=64 << 20, spool_segment_bytes=16 << 10,
                     close_timeout_s=0.2, spool_fsync_interval_s=0),
)
accepted, refusals = [], []

def record(count):
    for _ in range(count):
        try:
            event = client.record_interaction(user_id="u", session_id="s", prompt="p", response="r" * 500,
                                              prompt_version="v1", model="m", response_time_ms=1)
        except NotAcceptingError as exc:
            refusals.append(str(exc))
            return
        accepted.append(str(event.event_id))
        time.sleep(0.001)

record(2000)
full, accepting_when_full = client.metrics(), client.accepting
filler.unlink()
deadline = time.monotonic() + 15
while not client.accepting and time.monotonic() < deadline:
    time.sleep(0.05)
recovered = client.accepting
record(30)
client.close()
spool = Spool(client.spool_dir, max_bytes=64 << 20, segment_bytes=16 << 10, fsync_interval_s=0)
on_disk = []
while batch := spool.read(1000):
    on_disk += [json.loads(r.value)["event_id"] for r in batch]
spool.close()
print(json.dumps({"accepted": accepted, "on_disk": on_disk, "refusals": refusals, "full": full,
                  "accepting_when_full": accepting_when_full, "recovered": recovered,
                  "final": client.metrics()}))
"""


@pytest.mark.skipif(
    not _private_tmpfs_available(), reason="needs to mount a tmpfs in a private mount namespace"
)
def test_a_really_full_disk_refuses_and_loses_nothing(tmp_path: Path) -> None:
    """The disk full below spool_max_bytes, for real: a 1 MiB tmpfs with 96 KiB left, mounted in a
    mount namespace of the test's own (nobody else sees it). Before: 500 of 600 events lost."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            DISK_FULL,
            str(mnt),
            str(closed_port()),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["refusals"], "the disk never filled"
    assert "No space left on device" in out["refusals"][0]
    assert out["full"]["spool_fault"] == errno.ENOSPC
    assert out["full"]["accepting"] == 0
    assert out["accepting_when_full"] is False
    assert out["recovered"] is True
    assert out["final"]["dropped"] == 0
    assert out["final"]["spool_write_errors"] >= 1
    assert len(out["accepted"]) > 30
    assert out["on_disk"] == out["accepted"]  # every accepted event, once, in order


# -- redaction and signed references (issue 12) --------------------------------------------------

PII_REDACTION = RedactionSettings(detectors=("email", "card", "ip", "phone"))


def test_redaction_is_off_by_default(client: FeedbackClient) -> None:
    assert client.redactor is None
    event = _interaction(client, prompt="mail ann@example.com")
    assert event.prompt == "mail ann@example.com"


def test_events_are_redacted_before_they_leave_the_app(dead_kafka: KafkaSettings, tmp_path: Path) -> None:
    settings = ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.2, redaction=PII_REDACTION)
    metadata = {"client_ip": "203.0.113.9"}
    with FeedbackClient(dead_kafka, settings) as client:
        event = _interaction(
            client, prompt="Reply to ann@example.com", response="Sent to ann@example.com.", metadata=metadata
        )
        edit = client.record_edit(event, "Sent to ann@example.com today.", comment="call +1 555 123 4567")
        prebuilt = InteractionEvent.model_validate(
            {**event.model_dump(), "event_id": uuid.uuid4(), "prompt": "card 4111 1111 1111 1111"}
        )
        client.publish(prebuilt)
        spool_dir = client.spool_dir
    # What the calls return is what was sent.
    assert event.prompt == "Reply to [email]"
    assert event.response == "Sent to [email]."
    assert event.metadata == {
        "client_ip": "[ip]",
        "redacted.prompt": "email",
        "redacted.response": "email",
        "redacted.metadata.client_ip": "ip",
    }
    assert metadata == {"client_ip": "203.0.113.9"}  # the caller's dict is not changed
    assert (edit.corrected_output, edit.comment) == ("Sent to [email] today.", "call [phone]")
    stored = spooled_values(spool_dir)
    assert [e["event_id"] for e in stored] == [
        str(event.event_id),
        str(edit.event_id),
        str(prebuilt.event_id),
    ]
    text = json.dumps(stored)
    for secret in ("ann@example.com", "203.0.113.9", "555 123 4567", "4111"):
        assert secret not in text


def test_a_placeholder_that_pushes_a_field_over_its_cap_is_refused_naming_it(
    dead_kafka: KafkaSettings, tmp_path: Path
) -> None:
    keyed = RedactionSettings(detectors=("email",), key=SecretStr("a-redaction-key-16+"))
    settings = ProducerSettings(
        spool_dir=tmp_path / "spool", redaction=keyed, field_caps=FieldCaps(comment=10)
    )
    with FeedbackClient(dead_kafka, settings) as client:
        ref = InteractionRef(uuid.uuid4(), "u", "s")
        with pytest.raises(EventTooLargeError, match="comment") as raised:
            client.record_thumbs_up(ref, comment="a@b.cd")  # 6 characters; "[email:xxxxxxxx]" is 16
        assert raised.value.field == "comment"


def test_interaction_tokens_need_a_secret(client: FeedbackClient) -> None:
    event = _interaction(client)
    with pytest.raises(RuntimeError, match=r"producer\.interaction_secret"):
        client.interaction_token(event)


def test_interaction_tokens_sign_interaction_user_and_session(
    dead_kafka: KafkaSettings, tmp_path: Path
) -> None:
    secret = "an-interaction-secret-of-at-least-32-chars"
    settings = ProducerSettings(spool_dir=tmp_path / "spool", interaction_secret=SecretStr(secret))
    with FeedbackClient(dead_kafka, settings) as client:
        event = _interaction(client)
        assert type(event) is InteractionEvent  # the return type is unchanged
        token = client.interaction_token(event)
        ref = InteractionRef(event.interaction_id, event.user_id, event.session_id)
        assert client.interaction_token(ref) == token  # from stored ids, in a later request
    signer = InteractionSigner(secret.encode())
    assert signer.check(token, event.interaction_id, "u1", "s1") is None
    assert signer.check(token, event.interaction_id, "u2", "s1") is not None
    assert signer.check(token, uuid.uuid4(), "u1", "s1") is not None
    assert InteractionSigner(b"another-secret-of-at-least-32-chars").check(
        token, event.interaction_id, "u1", "s1"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interaction_secret": "too-short"}, "at least 32 characters"),
        (
            {"interaction_previous_secrets": ["an-old-secret-of-at-least-32-characters"]},
            "needs producer.interaction_secret",
        ),
    ],
)
def test_interaction_secret_settings_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        ProducerSettings.model_validate(fields)
    assert "too-short" not in str(raised.value)  # a refused secret is not repeated


def test_an_event_dated_in_the_future_is_refused_at_the_call_naming_created_at(
    client: FeedbackClient,
) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(EventTimeError, match=r"created_at .* ahead of the wall clock"):
        _interaction(client, created_at=ahead)
    interaction = _interaction(client)
    with pytest.raises(EventTimeError, match="MAX_FUTURE_SKEW_S"):
        client.record_thumbs_up(interaction, created_at=ahead)
    with pytest.raises(EventTimeError):
        client.publish(interaction.model_copy(update={"created_at": ahead}))
    # A few minutes of skew, and the past (a backfill, a spool replay), are fine.
    _interaction(client, created_at=datetime.now(UTC) + timedelta(minutes=1))
    client.record_thumbs_up(interaction, created_at=datetime.now(UTC) - timedelta(hours=30))


def test_an_event_before_2000_is_refused_by_the_contract(client: FeedbackClient) -> None:
    with pytest.raises(ValidationError, match="created_at"):
        _interaction(client, created_at=datetime(1999, 12, 31, tzinfo=UTC))
