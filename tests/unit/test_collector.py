"""The collector's request logic that needs no server: parsing, validation, limits, client checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from producers.collector import BatchTooLargeError, bearer_token, is_loopback, parse_batch, parse_event
from schemas import FeedbackEvent, FeedbackType, InteractionEvent


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
