"""Secrets are never printed: not in a repr of the settings, not in a refused setting's error, not
in any command's output or log, whatever the command says about where it connects.

(The url never holds the password once the settings are read, so no command can print it with the
url; the commands' output is checked here anyway.)
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedbackloop.cli import app
from feedbackloop.supervise import settings_env
from infra.clickhouse import server_options
from infra.settings import ClickHouseSettings, Settings

CH_SECRET = "ch-pass-0ae7f1"
SASL_SECRET = "sasl-pass-9c2b44"
TOKEN = "collector-token-5d8e11aa"
INTERACTION_SECRET = "interaction-secret-3f0c9b2e7d4a1f66"
REDACTION_KEY = "redaction-key-77b1c0de"
SECRETS = (CH_SECRET, SASL_SECRET, TOKEN, INTERACTION_SECRET, REDACTION_KEY)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings with every kind of secret, in a folder of this test's own (no .env of the repo)."""
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "FEEDBACKLOOP_CLICKHOUSE__URL": f"http://feedbackloop:{CH_SECRET}@127.0.0.1:{_closed_port()}",
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
        "FEEDBACKLOOP_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FEEDBACKLOOP_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "FEEDBACKLOOP_KAFKA__SASL_USERNAME": "fl",
        "FEEDBACKLOOP_KAFKA__SASL_PASSWORD": SASL_SECRET,
        "FEEDBACKLOOP_COLLECTOR__AUTH_TOKEN": TOKEN,
        "FEEDBACKLOOP_PRODUCER__INTERACTION_SECRET": INTERACTION_SECRET,
        "FEEDBACKLOOP_PRODUCER__REDACTION__KEY": REDACTION_KEY,
        "FEEDBACKLOOP_STACK__HOME": str(tmp_path / "stack"),
    }.items():
        monkeypatch.setenv(name, value)


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.usefixtures("secret_env")
def test_no_secret_in_the_settings_repr_str_or_dump() -> None:
    settings = Settings()
    for shown in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump(mode="json")),
    ):
        assert _leaks(shown) == []
    # ... yet each is there for the client that needs it.
    assert settings.clickhouse.password is not None
    assert settings.clickhouse.password.get_secret_value() == CH_SECRET
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL_SECRET


@pytest.mark.usefixtures("secret_env")
def test_the_url_keeps_the_user_and_loses_the_password() -> None:
    clickhouse = Settings().clickhouse
    assert clickhouse.url.startswith("http://feedbackloop@127.0.0.1:")
    assert clickhouse.shown_url.startswith("http://feedbackloop:***@127.0.0.1:")
    options = server_options(clickhouse)
    assert options["password"] == CH_SECRET
    assert CH_SECRET not in options["dsn"]


def test_a_percent_encoded_password_is_decoded_like_the_driver_does() -> None:
    settings = ClickHouseSettings(url="https://fl:p%40ss%3Aword@ch.example.com:8443/")
    assert settings.password is not None
    assert settings.password.get_secret_value() == "p@ss:word"
    assert settings.url == "https://fl@ch.example.com:8443/"


def test_one_password_in_two_places_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__URL", f"http://fl:{CH_SECRET}@ch:8123")
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__PASSWORD", CH_SECRET)
    assert Settings().clickhouse.url == "http://fl@ch:8123"
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__PASSWORD", "another-one")
    with pytest.raises(ValueError, match="url holds a password") as refused:
        Settings()
    assert _leaks(str(refused.value)) == []
    assert "another-one" not in str(refused.value)


@pytest.mark.usefixtures("secret_env")
def test_a_refused_setting_does_not_echo_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__URL", f"ftp://fl:{CH_SECRET}@ch:21")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert "clickhouse url must start with" in result.output
    assert _leaks(result.output) == []


@pytest.mark.usefixtures("secret_env")
def test_worker_children_get_the_password_through_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = settings_env(Settings())
    assert CH_SECRET not in env["FEEDBACKLOOP_CLICKHOUSE__URL"]
    monkeypatch.delenv("FEEDBACKLOOP_CLICKHOUSE__URL")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = Settings().clickhouse  # what a worker started with that environment reads
    assert child.password is not None
    assert child.password.get_secret_value() == CH_SECRET


#: Commands that reach for ClickHouse, run against a server that does not answer: their failures
#: name where they connect, never with the password.
UNREACHABLE = [
    ["migrate"],
    ["query", "SELECT 1"],
    ["report"],
    ["impact", "u1"],
    ["insights", "sync"],
    ["insights", "edits"],
    ["prompts", "add", "v1", "--text", "Be brief.", "--change", "First."],
    ["prompts", "show", "v1"],
    ["doctor", "--scope", "clickhouse"],
]


@pytest.mark.usefixtures("secret_env")
@pytest.mark.parametrize("command", UNREACHABLE, ids=lambda c: " ".join(c[:2]))
def test_failing_to_connect_says_where_without_the_password(
    command: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    if command[:2] == ["prompts", "show"]:
        CliRunner().invoke(app, ["prompts", "add", "v1", "--text", "Be brief.", "--change", "First."])
    with caplog.at_level(logging.DEBUG):
        result = CliRunner().invoke(app, command)
    shown = result.output + caplog.text + repr(result.exception or "")
    assert _leaks(shown) == [], shown


@pytest.mark.usefixtures("secret_env")
def test_migrate_names_the_database_and_server_not_the_password(
    chdb_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__URL", chdb_url)
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__PASSWORD", CH_SECRET)
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__DATABASE", "secrets_migrate")
    with caplog.at_level(logging.DEBUG):
        result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "database secrets_migrate at chdb://" in " ".join(result.output.split())
    assert _leaks(result.output + caplog.text) == []
