"""The collector's request logic that needs no server: parsing, validation, limits, client checks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from infra.settings import CollectorSettings, FieldCaps, KafkaSettings, ProducerSettings, Settings
from producers import FeedbackClient, SpoolError
from producers.collector import (
    BatchTooLargeError,
    bearer_token,
    create_app,
    is_loopback,
    parse_batch,
    parse_event,
    serve,
)
from producers.limits import EventLimits
from schemas import FeedbackEvent, FeedbackType, InteractionEvent
from tests.unit.test_producer_sdk import closed_port, spool_fault, spooled_values, wait_for

__all__ = ["spool_fault"]  # a fixture, used by name


def _feedback(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "feedback",
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u",
        "session_id": "s",
        "feedback_type": "copy",
        "copied_chars": 4,
        **overrides,
    }


def test_one_object_or_an_array() -> None:
    assert len(parse_batch(_feedback(), max_events=10).events) == 1
    batch = parse_batch([_feedback(), _feedback(feedback_type="accept", copied_chars=None)], max_events=10)
    assert [i for i, _ in batch.events] == [0, 1]
    assert batch.errors == []


def test_types_pick_the_model_and_fill_ids() -> None:
    event = parse_event(_feedback())
    assert isinstance(event, FeedbackEvent)
    assert event.feedback_type is FeedbackType.COPY
    assert isinstance(event.event_id, uuid.UUID)
    given = str(uuid.uuid4())
    interaction = parse_event(
        {
            "type": "interaction",
            "event_id": given,
            "interaction_id": str(uuid.uuid4()),
            "user_id": "u",
            "session_id": "s",
            "created_at": "2026-11-26T10:00:00.123Z",
            "prompt": "p",
            "prompt_version": "v1",
            "model": "m",
            "response": "r",
            "response_time_ms": 5,
        }
    )
    assert isinstance(interaction, InteractionEvent)
    assert str(interaction.event_id) == given


def test_reasons_per_invalid_event() -> None:
    batch = parse_batch(
        [_feedback(), _feedback(copied_chars="4"), _feedback(type=None), ["x"], _feedback(extra=1)],
        max_events=10,
    )
    assert [i for i, _ in batch.events] == [0]
    reasons = {e["index"]: e["errors"] for e in batch.errors}
    assert reasons[1][0]["field"] == "copied_chars"
    assert "type must be one of" in reasons[2][0]["message"]
    assert "JSON object" in reasons[3][0]["message"]
    assert reasons[4][0]["field"] == "extra"


def test_model_level_errors_name_the_event() -> None:
    batch = parse_batch(_feedback(feedback_type="thumbs_up"), max_events=1)  # copied_chars not allowed
    assert batch.errors[0]["errors"][0]["field"] == "(event)"
    assert "copied_chars is only allowed" in batch.errors[0]["errors"][0]["message"]


def test_batch_limit() -> None:
    with pytest.raises(BatchTooLargeError, match="limit is 2"):
        parse_batch([_feedback()] * 3, max_events=2)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.42", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("203.0.113.7", False),
        ("localhost", False),  # uvicorn reports addresses, never names
        ("", False),
        (None, False),
    ],
)
def test_loopback(host: str | None, local: bool) -> None:
    assert is_loopback(host) is local


def _request(headers: dict[str, str], query: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/v1/events",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "query_string": query.encode(),
        }
    )


def test_bearer_token_from_header_or_query() -> None:
    assert bearer_token(_request({"Authorization": "Bearer abc"})) == "abc"
    assert bearer_token(_request({"Authorization": "bearer  abc "})) == "abc"
    assert bearer_token(_request({"Authorization": "Basic abc"})) is None
    assert bearer_token(_request({}, "access_token=xyz")) == "xyz"
    assert bearer_token(_request({})) is None


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_javascript_in_the_docs_parses(tmp_path: Path) -> None:
    docs = Path(__file__).parent.parent.parent / "docs" / "producers.md"
    blocks = re.findall(r"```js\n(.*?)```", docs.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    node = shutil.which("node")
    assert node is not None
    for i, block in enumerate(blocks):
        script = tmp_path / f"snippet{i}.js"
        script.write_text(block)
        subprocess.run([node, "--check", str(script)], check=True, capture_output=True)


# -- refusing at the door what the pipeline could not keep (issue 11) -------------------------------


def test_oversized_events_are_named_and_the_others_accepted() -> None:
    limits = EventLimits(2000, ((FieldCaps(comment=10), "collector.field_caps"),))
    big = _feedback(
        feedback_type="thumbs_up", copied_chars=None, comment="c" * 11, event_id=str(uuid.uuid4())
    )
    huge = _feedback(feedback_type="edit", copied_chars=None, corrected_output="e" * 3000)
    batch = parse_batch([_feedback(), big, huge, _feedback(copied_chars="x")], max_events=10, limits=limits)
    assert [i for i, _ in batch.events] == [0]
    assert batch.too_large == 2
    reasons = {e["index"]: e for e in batch.errors}
    assert reasons[1]["event_id"] == big["event_id"]
    assert reasons[1]["errors"][0]["field"] == "comment"
    assert "collector.field_caps.comment" in reasons[1]["errors"][0]["message"]
    assert reasons[2]["errors"][0]["field"] == "(event)"
    assert "Kafka message; the limit is 2,000" in reasons[2]["errors"][0]["message"]
    assert "event_id" not in reasons[3]  # invalid, not too large


def test_implausible_numbers_are_invalid_at_the_door() -> None:
    batch = parse_batch(
        [
            _feedback(feedback_type="view_end", copied_chars=None, dwell_ms=10**12),
            {**_interaction_payload(), "response_time_ms": 18_446_744_073_709_551_615},
        ],
        max_events=10,
    )
    assert batch.events == []
    assert {e["errors"][0]["field"] for e in batch.errors} == {"dwell_ms", "response_time_ms"}


def _interaction_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "interaction",
        "event_id": str(uuid.uuid4()),
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u",
        "session_id": "s",
        "prompt": "p",
        "prompt_version": "v1",
        "model": "m",
        "response": "r",
        "response_time_ms": 5,
        **overrides,
    }


def test_an_unwritable_spool_folder_stops_the_collector_at_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    spool_dir = tmp_path / "a-file" / "spool"  # a real ENOTDIR: the folder cannot be created
    settings = Settings(producer=ProducerSettings(spool_dir=spool_dir))
    with pytest.raises(SystemExit, match=re.escape(str(spool_dir))):
        serve(settings, port=0)
    app = create_app(settings)
    with pytest.raises(SpoolError, match=re.escape(str(spool_dir))), TestClient(app):
        pass


@pytest.fixture
def app_and_client(
    tmp_path: Path, spool_fault: Path
) -> Iterator[tuple[TestClient, FeedbackClient, Settings]]:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")
    producer = ProducerSettings(
        spool_dir=tmp_path / "spool",
        close_timeout_s=0.2,
        spool_fsync_interval_s=0,
        spool_max_bytes=1 << 16,
        spool_segment_bytes=1 << 12,
        field_caps=FieldCaps(response=2_000_000),
    )
    # These tests post hundreds of requests from one address: no rate limit in their way.
    settings = Settings(kafka=kafka, producer=producer, collector=CollectorSettings(rate_limit_per_s=0))
    client = FeedbackClient(kafka, producer)
    try:
        # An address as the Host: without a token, names other than localhost are refused.
        with TestClient(
            create_app(settings, client), base_url="http://127.0.0.1:8080", client=("127.0.0.1", 5000)
        ) as http:
            yield http, client, settings
    finally:
        client.close()


def _accepted(response: Any) -> list[str]:
    return [a["event_id"] for a in response.json().get("accepted", [])]


def test_503_with_retry_after_whenever_the_spool_cannot_keep_events(
    app_and_client: tuple[TestClient, FeedbackClient, Settings], spool_fault: Path
) -> None:
    """Before: with the disk full below the bound, 300 of 300 POSTs got 202 and /healthz stayed 200."""
    http, client, _ = app_and_client
    kept: list[str] = []
    first = http.post("/v1/events", json=[_feedback() for _ in range(5)])
    assert first.status_code == 202
    kept += _accepted(first)
    wait_for(lambda: client.metrics()["spooled"] == 5)
    spool_fault.write_text("ENOSPC")
    statuses = []
    for _ in range(200):
        response = http.post("/v1/events", json=[_feedback()])
        statuses.append(response.status_code)
        if response.status_code == 503:
            break
        kept += _accepted(response)
        time.sleep(0.005)
    assert statuses[-1] == 503
    assert response.headers["retry-after"] == "5"
    assert "No space left on device" in response.json()["error"]
    health = http.get("/healthz")
    assert health.status_code == 503
    assert "No space left on device" in health.json()["reason"]
    assert health.headers["retry-after"] == "5"
    spool_fault.unlink()
    wait_for(lambda: http.get("/healthz").status_code == 200, timeout_s=10)
    after = http.post("/v1/events", json=[_feedback()])
    assert after.status_code == 202
    kept += _accepted(after)
    client.close()
    assert client.metrics()["dropped"] == 0
    assert [e["event_id"] for e in spooled_values(client.spool_dir)] == kept  # every 202 is kept


def test_the_bound_holds_with_four_clients_posting_at_once(
    app_and_client: tuple[TestClient, FeedbackClient, Settings],
) -> None:
    """Before: 4 clients, 64 KiB bound: 360 events got 202, 46 were spooled, 314 dropped."""
    http, client, _ = app_and_client
    kept: list[list[str]] = [[] for _ in range(4)]
    statuses: list[int] = []

    def poster(n: int) -> None:
        for _ in range(40):
            response = http.post("/v1/events", json=[_feedback(comment="x" * 200) for _ in range(3)])
            statuses.append(response.status_code)
            kept[n] += _accepted(response) if response.status_code == 202 else []

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 503 in statuses
    assert set(statuses) <= {202, 503}
    client.close()
    assert client.metrics()["dropped"] == 0
    on_disk = sorted(str(e["event_id"]) for e in spooled_values(client.spool_dir))
    assert on_disk == sorted(event_id for ids in kept for event_id in ids)


def test_an_event_over_the_message_limit_gets_413_naming_it(
    app_and_client: tuple[TestClient, FeedbackClient, Settings],
) -> None:
    """Before: a body just under 1 MiB got 202; librdkafka then refused it (MSG_SIZE_TOO_LARGE)."""
    http = app_and_client[0]
    big = _interaction_payload(response="r" * 1_040_000)
    small = _feedback(event_id=str(uuid.uuid4()))
    body = json.dumps([big, small]).encode()
    assert len(body) < 1 << 20  # under the collector's body limit
    response = http.post("/v1/events", content=body)
    assert response.status_code == 413
    rejected = response.json()["rejected"]
    assert [(r["index"], r["event_id"]) for r in rejected] == [(0, big["event_id"])]
    assert "Kafka message; the limit is 1,000,000" in rejected[0]["errors"][0]["message"]
    assert _accepted(response) == [small["event_id"]]


def test_event_times_from_the_future_or_before_2000_are_refused_naming_created_at() -> None:
    now = datetime.now(UTC)
    batch = parse_batch(
        [
            _feedback(created_at=(now + timedelta(hours=3)).isoformat()),
            _feedback(created_at="1999-06-01T00:00:00Z"),
            _feedback(created_at=1_764_000_000),
            _feedback(created_at=(now - timedelta(hours=20)).isoformat()),  # late, not forged
            _feedback(created_at=(now + timedelta(minutes=2)).isoformat()),  # within the skew
        ],
        max_events=10,
        max_future_skew_ms=300_000,
    )
    assert [i for i, _ in batch.events] == [3, 4]
    reasons = {e["index"]: e["errors"][0] for e in batch.errors}
    assert {r["field"] for r in reasons.values()} == {"created_at"}
    assert "ahead of the wall clock" in reasons[0]["message"]
    assert "before 2000" in reasons[1]["message"]
    assert "not a number" in reasons[2]["message"]
