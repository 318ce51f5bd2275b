"""``feedbackloop forget`` refuses what cannot be a user id before it records or deletes anything."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from feedbackloop.cli import app


@pytest.mark.parametrize(("user", "said"), [(" ", "cannot be empty"), ("u" * 300, "not a user id")])
def test_a_bad_user_id_is_refused_before_kafka_is_asked(
    user: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a broker address nothing listens on: asking it would hang, then fail
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{sock.getsockname()[1]}")
        result = CliRunner().invoke(app, ["forget", "u-ok", user])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
