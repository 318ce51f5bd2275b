"""Support tickets in the contract, the SDK and the collector (no broker: the SDK spools to disk), and
the sink's row mapping of tickets and experiment revisions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from infra.settings import KafkaSettings, ProducerSettings, Settings
from producers import EventTimeError, FeedbackClient
from producers.collector import create_app, parse_batch, parse_event
from producers.sender.spool import Spool
from producers.signing import InteractionSigner
from schemas import Experiment, ExperimentStatus, SupportTicket, to_epoch_ms, topics
from schemas.experiments import ExperimentAction
from sinks.rows import TABLES
from sinks.runner import Sink
from tests.unit.test_producer_sdk import closed_port

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def ticket(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "ticket_id": "ZD-1",
        "user_id": "u1",
        "created_at": "2026-11-26T10:00:00.123Z",
        "category": "wrong answer",
        "ai_quality": True,
        **overrides,
    }


def test_a_ticket_needs_a_category_and_a_strict_ai_quality_flag() -> None:
    t = SupportTicket.model_validate(ticket(interaction_id=str(uuid.uuid4())))
    assert t.ai_quality is True
    assert SupportTicket.model_validate(ticket(ai_quality=False)).interaction_id is None
    for bad, field in (
        ({"ai_quality": "yes"}, "ai_quality"),
        ({"ai_quality": 1}, "ai_quality"),
        ({"category": ""}, "category"),
        ({"ticket_id": ""}, "ticket_id"),
        ({"interaction_id": "nope"}, "interaction_id"),
        ({"subject": "extra"}, "subject"),
    ):
        with pytest.raises(ValidationError) as raised:
            SupportTicket.model_validate(ticket(**bad))
        assert raised.value.errors()[0]["loc"][0] == field


def test_a_ticket_follows_the_contracts_event_time_rules() -> None:
    with pytest.raises(ValidationError, match="not a number"):
        SupportTicket.model_validate(ticket(created_at=1_764_000_000))
    with pytest.raises(ValidationError, match="before 2000"):
        SupportTicket.model_validate(ticket(created_at="1999-12-31T23:59:59Z"))
    with pytest.raises(ValidationError, match="created_at"):
        SupportTicket.model_validate(ticket(created_at="2026-11-26T10:00:00"))  # no zone
    kept = SupportTicket.model_validate(ticket(created_at="2026-11-26T10:00:00.123456+01:00"))
    assert kept.model_dump(mode="json")["created_at"] == "2026-11-26T09:00:00.123Z"


def _spooled(directory: Path) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    spool = Spool(directory, max_bytes=1 << 30, segment_bytes=1 << 24, fsync_interval_s=0)
    try:
        out: list[tuple[str, bytes | None, dict[str, Any]]] = []
        while batch := spool.read(1000):
            out.extend((r.topic, r.key, json.loads(r.value)) for r in batch)
        return out
    finally:
        spool.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FeedbackClient]:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")
    settings = ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.2, spool_fsync_interval_s=0.0)
    with FeedbackClient(kafka, settings) as c:
        yield c


def test_the_sdk_records_a_ticket_on_its_topic_keyed_by_user(client: FeedbackClient) -> None:
    about = uuid.uuid4()
    linked = client.record_support_ticket(
        user_id="u1", category="wrong answer", ai_quality=True, ticket_id="ZD-7", interaction_id=about
    )
    other = client.record_support_ticket(user_id="u2", category="billing", ai_quality=False)
    assert other.ticket_id == str(other.event_id)  # no help-desk id: the event's
    assert abs(other.created_at - datetime.now(UTC)) < timedelta(seconds=5)
    client.close()
    spooled = _spooled(client.spool_dir)
    assert [(topic, key) for topic, key, _ in spooled] == [
        ("unit." + topics.SUPPORT_TICKETS, b"u1"),
        ("unit." + topics.SUPPORT_TICKETS, b"u2"),
    ]
    assert SupportTicket.model_validate_json(json.dumps(spooled[0][2])) == linked
    assert spooled[0][2]["interaction_id"] == str(about)


def test_the_sdk_refuses_a_ticket_from_the_future_naming_created_at(client: FeedbackClient) -> None:
    with pytest.raises(EventTimeError, match=r"created_at .* ahead of the wall clock"):
        client.record_support_ticket(
            user_id="u1", category="tone", ai_quality=True, created_at=datetime.now(UTC) + timedelta(hours=1)
        )
    with pytest.raises(ValidationError, match="category"):
        client.record_support_ticket(user_id="u1", category="", ai_quality=True)
    late = client.record_support_ticket(
        user_id="u1", category="tone", ai_quality=True, created_at=datetime.now(UTC) - timedelta(days=40)
    )
    client.close()
    assert [t["event_id"] for _, _, t in _spooled(client.spool_dir)] == [str(late.event_id)]


def test_the_collector_takes_tickets_beside_the_other_events() -> None:
    given = parse_event({"type": "support_ticket", **ticket()})
    assert isinstance(given, SupportTicket)
    bare = parse_event({"type": "support_ticket", "user_id": "u", "category": "tone", "ai_quality": True})
    assert isinstance(bare, SupportTicket)
    assert bare.ticket_id == str(bare.event_id)
    now = datetime.now(UTC)
    batch = parse_batch(
        [
            {"type": "support_ticket", **ticket(created_at=(now + timedelta(hours=1)).isoformat())},
            {"type": "support_ticket", **ticket(created_at=1_764_000_000)},
            {"type": "support_ticket", **ticket(ai_quality="true")},
            {"type": "support_ticket", **ticket(created_at=(now - timedelta(days=3)).isoformat())},
        ],
        max_events=10,
        max_future_skew_ms=300_000,
    )
    assert [i for i, _ in batch.events] == [3]
    reasons = {e["index"]: e["errors"][0] for e in batch.errors}
    assert reasons[0]["field"] == "created_at"
    assert "ahead of the wall clock" in reasons[0]["message"]
    assert "not a number" in reasons[1]["message"]
    assert reasons[2]["field"] == "ai_quality"


def test_a_posted_ticket_is_accepted_and_spooled_on_the_ticket_topic(tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")
    producer = ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.2, spool_fsync_interval_s=0)
    client = FeedbackClient(kafka, producer)
    try:
        app = create_app(Settings(kafka=kafka, producer=producer), client)
        # An address as the Host: without a token, names other than localhost are refused.
        with TestClient(app, base_url="http://127.0.0.1:8080", client=("127.0.0.1", 1)) as http:
            body = {"type": "support_ticket", "user_id": "u9", "category": "too long", "ai_quality": True}
            response = http.post("/v1/events", json=[body, {**body, "ai_quality": None}])
            assert response.status_code == 400
            assert response.json()["rejected"][0]["index"] == 1
            accepted = response.json()["accepted"]
    finally:
        client.close()
    assert [(t, k, v["event_id"]) for t, k, v in _spooled(client.spool_dir)] == [
        ("unit." + topics.SUPPORT_TICKETS, b"u9", accepted[0]["event_id"])
    ]


def test_where_references_must_be_signed_the_collector_refuses_tickets_saying_why() -> None:
    signer = InteractionSigner(b"k" * 32)
    batch = parse_batch([{"type": "support_ticket", **ticket()}], max_events=10, signer=signer)
    assert batch.events == []
    assert batch.forbidden == 1
    [error] = batch.errors[0]["errors"]
    assert error["field"] == "type"
    assert "record_support_ticket" in error["message"]


def _spec(table: str) -> Any:
    return next(s for s in TABLES if s.table == table)


def test_the_sink_maps_tickets_and_experiment_revisions_to_rows() -> None:
    spec = _spec("support_tickets")
    assert spec.topic == topics.SUPPORT_TICKETS
    t = SupportTicket.model_validate(ticket(interaction_id=str(uuid.uuid4())))
    row = dict(zip(spec.columns, spec.to_row(t.model_dump_json().encode()), strict=True))
    assert row["ticket_id"] == "ZD-1"
    # The sink's rows hold ids as text and times as epoch ms (sinks/rows.py), what ClickHouse takes as is.
    assert row["interaction_id"] == str(t.interaction_id)
    assert row["created_at"] == to_epoch_ms(t.created_at)
    assert "schema_version" not in row
    with pytest.raises(ValidationError):
        spec.to_row(json.dumps(ticket(ai_quality="no")).encode())

    spec = _spec("experiments")
    running = Experiment(
        experiment_id="e1", revision=1, control="v1", treatment="v2", created_at=NOW, updated_at=NOW
    )
    row = dict(zip(spec.columns, spec.to_row(running.model_dump_json().encode()), strict=True))
    assert (row["status"], row["applied_action"], row["production_version"]) == ("running", None, None)
    applied = ExperimentAction(
        action="promote",
        applied_at=NOW + timedelta(days=9),
        applied_by="alice",
        production_version="v2",
        retired_version="v1",
        decision=None,
    )
    promoted = running.model_copy(
        update={"revision": 2, "status": ExperimentStatus.PROMOTED, "applied": applied, "updated_at": NOW}
    )
    row = dict(zip(spec.columns, spec.to_row(promoted.model_dump_json().encode()), strict=True))
    assert (row["applied_action"], row["applied_at"], row["production_version"]) == (
        "promote",
        NOW + timedelta(days=9),
        "v2",
    )
    assert (row["split_control"], row["split_treatment"]) == (80, 20)


def test_the_sinks_future_check_reads_a_tickets_time_as_its_row_holds_it() -> None:
    # A ticket's row holds created_at as epoch ms (the fast decoder) or a datetime (the model's path).
    sink: Any = SimpleNamespace(_future_skew_ms=60_000)
    now_ms = int(time.time() * 1000)
    for ahead in (now_ms + 3_600_000, datetime.fromtimestamp(now_ms / 1000 + 3600, UTC)):
        reason = Sink._ahead(sink, ahead)
        assert reason is not None
        assert "future" in reason or "ahead" in reason
    assert Sink._ahead(sink, now_ms) is None
    assert Sink._ahead(sink, datetime.fromtimestamp(now_ms / 1000, UTC)) is None
