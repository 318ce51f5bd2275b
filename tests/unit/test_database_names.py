"""Database names are identifiers, never SQL: ``impact u1 --database "x; DROP TABLE IF EXISTS
feedbackloop.schema_migrations"`` once dropped the table on chdb. Every command that takes a
database, the setting itself, and every library function that puts a database name into SQL refuse
such a name with a clear error, and nothing is dropped."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from feedbackloop.cli import app
from feedbackloop.doctor import probe_features
from infra.settings import InsightSettings, check_database_name
from producers.impact import fetch_impact
from reporting.model import build_report
from reporting.prompts import PromptRegistry, PromptVersion, mirror, now
from reporting.queries import sync_insight_settings
from sinks.clickhouse import apply_retention, migrate
from sinks.clickhouse.erasure import erase_users, remaining_rows, user_tables
from sinks.clickhouse.retention import retention_state


@pytest.fixture
def victim(chdb_client: Client) -> Iterator[str]:
    """A migrated database whose schema_migrations the injections aim at."""
    name = f"victim_{uuid.uuid4().hex[:8]}"
    migrate(chdb_client, name)
    yield name
    chdb_client.command(f"DROP DATABASE IF EXISTS {name}")


def _injection(victim: str) -> str:
    return f"x; DROP TABLE IF EXISTS {victim}.schema_migrations"


def _intact(client: Client, database: str) -> bool:
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'schema_migrations'",
        parameters={"db": database},
    ).result_rows
    return bool(found[0][0])


@pytest.mark.parametrize(
    "name", ["x; DROP TABLE t", "db.other", "1abc", "", "a-b", "ünïcode", "a b", "a`b", "x'--", "a\nb"]
)
def test_only_identifiers_pass(name: str) -> None:
    with pytest.raises(ValueError, match="a database name is letters, digits and underscores"):
        check_database_name(name)


@pytest.mark.parametrize("name", ["feedbackloop", "demo", "_x1", "fl_8c2a"])
def test_identifiers_pass(name: str) -> None:
    assert check_database_name(name) == name


def _commands_with_a_database_option() -> set[str]:
    found = set()

    def walk(command: Any, path: tuple[str, ...]) -> None:
        # typer vendors its own click: groups are told by their commands, not by click.Group
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        elif any("--database" in getattr(p, "opts", ()) for p in command.params):
            found.add(" ".join(path))

    walk(typer.main.get_command(app), ())
    return found


#: Each command with a --database option, with the arguments it needs besides.
WITH_DATABASE = {
    "query": ["query", "SELECT 1"],
    "report": ["report"],
    "prompts show": ["prompts", "show", "v1"],
    "insights sync": ["insights", "sync"],
    "insights edits": ["insights", "edits"],
    "insights deletions": ["insights", "deletions"],
    "insights spikes": ["insights", "spikes"],
    "insights sizes": ["insights", "sizes"],
    "impact": ["impact", "u1"],
    "forget": ["forget", "u1"],
}


def test_every_database_option_is_tested_here() -> None:
    assert _commands_with_a_database_option() == set(WITH_DATABASE)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chdb_url: str) -> None:
    """Commands of this process on the session's chdb, in a folder of this test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__URL", chdb_url)
    registry = PromptRegistry(tmp_path / "prompts.json")
    registry.add(
        PromptVersion(version="v1", text="Be brief.", change="First.", author="test", created_at=now())
    )
    registry.save()


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("command", sorted(WITH_DATABASE))
def test_each_command_refuses_an_injected_database(command: str, victim: str, chdb_client: Client) -> None:
    args = [*WITH_DATABASE[command], "--database", _injection(victim)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "a database name is letters, digits and underscores" in " ".join(result.output.split())
    assert _intact(chdb_client, victim)


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("command", [["migrate"], ["doctor", "--scope", "clickhouse"], ["impact", "u1"]])
def test_the_setting_refuses_an_injected_database(
    command: list[str], victim: str, chdb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__DATABASE", _injection(victim))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "clickhouse.database" in result.output
    assert _intact(chdb_client, victim)


def test_every_library_entry_point_refuses_an_injected_database(
    chdb_client: Client, victim: str, tmp_path: Path
) -> None:
    bad = _injection(victim)
    calls: dict[str, Callable[[], object]] = {
        "migrate": lambda: migrate(chdb_client, bad),
        "fetch_impact": lambda: fetch_impact(chdb_client, bad, "u1"),
        "build_report": lambda: build_report(chdb_client, bad),
        "mirror": lambda: mirror(PromptRegistry(tmp_path / "prompts.json"), chdb_client, bad),
        "sync_insight_settings": lambda: sync_insight_settings(chdb_client, bad, InsightSettings()),
        "probe_features": lambda: probe_features(chdb_client, bad),
        "apply_retention": lambda: apply_retention(chdb_client, bad, 30),
        "retention_state": lambda: retention_state(chdb_client, bad),
        "erase_users": lambda: erase_users(chdb_client, bad, ["u1"]),
        "remaining_rows": lambda: remaining_rows(chdb_client, bad, ["u1"]),
        "user_tables": lambda: user_tables(chdb_client, bad),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="a database name"):
            call()
        assert _intact(chdb_client, victim), name
