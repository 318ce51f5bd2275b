"""The prompt registry file and the ``feedbackloop prompts`` commands (no ClickHouse needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reporting.prompts import PromptRegistry, PromptVersion, RegistryError

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def version(label: str, parent: str | None = None, at: datetime = T0, **kw: str) -> PromptVersion:
    return PromptVersion(
        version=label,
        parent=parent,
        text=kw.get("text", f"prompt {label}"),
        change=kw.get("change", f"change of {label}"),
        reasoning="because",
        addresses="issue #1",
        author="alice",
        created_at=at,
    )


def test_a_registry_round_trips_through_its_file_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    registry = PromptRegistry.load(path)
    assert len(registry) == 0
    registry.add(version("v1.0"))
    registry.add(version("v1.1", "v1.0", T0 + timedelta(days=7)))
    registry.add(version("v1.2", "v1.1", T0 + timedelta(days=14)))
    registry.save()
    again = PromptRegistry.load(path)
    assert [v.version for v in again] == ["v1.0", "v1.1", "v1.2"]
    assert again.get("v1.2") == registry.get("v1.2")
    assert [v.version for v in again.lineage("v1.2")] == ["v1.2", "v1.1", "v1.0"]
    assert [v.version for v in again.children("v1.0")] == ["v1.1"]
    document = json.loads(path.read_text())
    assert document["format"] == 1
    assert document["versions"][0]["created_at"] == "2026-11-02T09:00:00Z"
    assert not list(tmp_path.glob(".prompts.json.*"))  # no temporary file left behind


def test_the_registry_refuses_what_would_break_the_changelog(tmp_path: Path) -> None:
    registry = PromptRegistry(tmp_path / "p.json", [version("v1.0")])
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(version("v1.0"))
    with pytest.raises(RegistryError, match="not registered"):
        registry.add(version("v2.0", "v1.9"))
    with pytest.raises(RegistryError, match="older than its parent"):
        registry.add(version("v1.1", "v1.0", T0 - timedelta(days=1)))
    with pytest.raises(RegistryError, match="own parent"):
        registry.add(version("v1.5", "v1.5"))
    with pytest.raises(RegistryError, match="is not in"):
        registry.get("v9")


def test_one_change_per_version_in_one_line() -> None:
    with pytest.raises(ValueError, match="one change in one line"):
        version("v1.1", change="Shorter greeting.\nAlso drop the summary.")
    with pytest.raises(ValueError, match="at most 200"):
        version("v1.1", change="x" * 201)
    with pytest.raises(ValueError, match="timezone"):
        PromptVersion(version="v1", text="t", change="c", author="a", created_at=datetime(2026, 1, 1))


def test_a_broken_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        PromptRegistry.load(path)
    path.write_text(json.dumps({"versions": []}))
    with pytest.raises(RegistryError, match="not a prompt registry"):
        PromptRegistry.load(path)


def test_the_cli_adds_lists_and_shows_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedbackloop.cli import app

    path = tmp_path / "prompts.json"
    monkeypatch.setenv("FEEDBACKLOOP_INSIGHTS__PROMPT_REGISTRY", str(path))
    monkeypatch.setenv("FEEDBACKLOOP_CLICKHOUSE__URL", "http://127.0.0.1:9")  # nothing listens: not mirrored
    runner = CliRunner()
    first = ["prompts", "add", "v1.0", "--text", "Be formal.", "--change", "First version."]
    added = runner.invoke(app, first)
    assert added.exit_code == 0, added.output
    assert "registered v1.0" in added.output
    assert "mirrored by the next report" in added.output
    child = runner.invoke(
        app,
        ["prompts", "add", "v1.1", "--parent", "v1.0", "--text", "Greet by name.", "--change",
         "Greet the user by name.", "--reasoning", "20 users did", "--author", "bob"],
    )  # fmt: skip
    assert child.exit_code == 0, child.output
    bad = runner.invoke(app, ["prompts", "add", "v2", "--parent", "nope", "--text", "x", "--change", "y"])
    assert bad.exit_code == 1
    assert "not registered" in bad.output
    listed = runner.invoke(app, ["prompts", "list"])
    assert "v1.1" in listed.output
    assert "Greet the user by name." in listed.output
    shown = runner.invoke(app, ["prompts", "show", "v1.1", "--no-results"])
    assert shown.exit_code == 0, shown.output
    assert "v1.1 ← v1.0" in shown.output
    assert "20 users did" in shown.output
    assert [v.version for v in PromptRegistry.load(path)] == ["v1.0", "v1.1"]
