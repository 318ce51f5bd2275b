"""The producer SDK without a broker: validation, typed calls, spooling, metrics, threads and asyncio.

"No broker" here means the SDK points at a closed port on 127.0.0.1: librdkafka's connects are
refused at once, which is what an outage looks like to it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from infra.settings import KafkaSettings, ProducerSettings
from producers import (
    BufferFullError,
    ClientClosedError,
    Experiment,
    FeedbackClient,
    InteractionRef,
    Mode,
)
from producers.sender.spool import Spool
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


def test_a_full_spool_drops_loudly(
    dead_kafka: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ProducerSettings(
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 16,
        spool_segment_bytes=1 << 12,
        close_timeout_s=0.1,
    )
    with FeedbackClient(dead_kafka, settings) as client:
        _interaction(client)
        wait_for(lambda: client.mode is Mode.SPOOL)
        for _ in range(400):
            _interaction(client, response="x" * 300)
        wait_for(lambda: client.metrics()["dropped"] > 0)
        wait_for(lambda: not client.accepting)
        assert not client.spool_has_room
    metrics = client.metrics()
    assert metrics["spooled"] + metrics["dropped"] == 401  # every event accounted for, once
    assert metrics["spool_bytes"] <= 1 << 16
    assert "spool full" in caplog.text
    assert any(r.levelname == "ERROR" for r in caplog.records)


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
