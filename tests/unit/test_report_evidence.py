"""The weekly report on chdb (the planted workload, loaded through the pure logic): every issue shows
the edits that belong to it, or says there are none; and every table fits the terminal uncut."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from rich.console import Console
from rich.text import Text

from infra.settings import InsightSettings
from reporting.html import render_html
from reporting.model import Issue, Report, build_report
from reporting.terminal import _Rows, render_terminal
from tests.support.patterns import load_through_logic, planted_workload


@pytest.fixture(scope="module")
def report(chdb_client: Client) -> tuple[Report, Client, str]:
    planted = planted_workload()
    database = "report_evidence"
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")
    load_through_logic(chdb_client, database, planted.events)
    # Every candidate issue, not only the top five: each kind must show its own evidence.
    built = build_report(chdb_client, database, planted.end, settings=InsightSettings(top_issues=20))
    return built, chdb_client, database


def _independent_patterns(
    client: Client, database: str, report: Report, issue: Issue
) -> list[tuple[Any, ...]]:
    """The issue's top edit operations, computed here in Python from the raw rows."""
    outcomes = client.query(
        "SELECT toString(interaction_id), regenerated, thumbs_down "
        f"FROM {database}.interaction_outcomes FINAL "
        "WHERE prompt_version = %(v)s",
        parameters={"v": issue.prompt_version},
    ).result_rows
    regenerated = {row[0] for row in outcomes if row[1]}
    thumbs_down = {row[0] for row in outcomes if row[2]}
    operations = client.query(
        "SELECT toString(interaction_id), toString(event_id), ifNull(input_category, '(none)'), edit_size, "
        f"kind, position, unit, original_norm, corrected_norm FROM {database}.edit_operation_rows "
        "WHERE prompt_version = %(v)s AND created_at >= %(s)s AND created_at < %(e)s "
        "AND original_norm != corrected_norm",
        parameters={"v": issue.prompt_version, "s": report.week_start, "e": report.week_end},
    ).result_rows

    def belongs(op: tuple[Any, ...]) -> bool:
        interaction, _event, category, size, kind, position, unit = op[:7]
        if issue.kind == "regenerations":
            return interaction in regenerated and category not in issue.excluded_categories
        if issue.kind == "segment":
            return interaction in regenerated and category == issue.category
        if issue.kind == "thumbs_down":
            return interaction in thumbs_down
        if issue.kind == "large_edits":
            return bool(size == "large")
        if issue.kind == "deletion":
            planted = issue.patterns[0]
            return (kind, position, unit) == ("delete", planted["position"], planted["unit"])
        raise AssertionError(issue.kind)

    events: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for op in operations:
        if belongs(tuple(op)):
            events[tuple(op[4:])].add(op[1])
    counts = Counter({key: len(ids) for key, ids in events.items()})
    return [(*key, n) for key, n in counts.items()]


def test_each_issue_shows_the_edits_that_belong_to_it(report: tuple[Report, Client, str]) -> None:
    built, client, database = report
    kinds = {i.kind for i in built.issues}
    assert {"regenerations", "segment", "thumbs_down", "large_edits", "deletion", "edit_pattern"} <= kinds
    for issue in built.issues:
        assert issue.evidence, issue.title
        if issue.kind == "edit_pattern":
            assert len(issue.patterns) == 1
            continue
        expected = _independent_patterns(client, database, built, issue)
        shown = [
            (
                p["kind"],
                p["position"],
                p["unit"],
                p["original_fragment"],
                p["corrected_fragment"],
                p["frequency"],
            )
            for p in issue.patterns
        ]
        top = sorted((n for *_key, n in expected), reverse=True)[: len(shown)]
        assert sorted(s[-1] for s in shown) == sorted(top), issue.title
        assert set(shown) <= set(expected), f"{issue.title}: shows edits that are not its own"
        if not expected:
            assert issue.patterns == []


def test_an_issue_without_edits_says_so(report: tuple[Report, Client, str]) -> None:
    built, _client, _database = report
    html = render_html(built)
    for issue in built.issues:
        if not issue.patterns:
            assert "no edit belongs to this issue" in issue.no_evidence
            assert f"id='issue-{issue.rank}-no-evidence'" in html
        else:
            assert f"<h3>{issue.evidence}</h3>" in html.replace("&#x27;", "'")


def test_the_deletion_issue_shows_only_its_deletions(report: tuple[Report, Client, str]) -> None:
    built, _client, _database = report
    (deletion,) = [i for i in built.issues if i.kind == "deletion"]
    assert deletion.patterns
    assert {(p["kind"], p["position"], p["unit"]) for p in deletion.patterns} == {
        ("delete", deletion.patterns[0]["position"], deletion.patterns[0]["unit"])
    }


HEADER_WORDS = (
    "interactions", "regeneration", "capped", "completion", "distance", "correction",
    "experiment", "variant", "frequency", "severity", "score", "category", "share", "original",
)  # fmt: skip


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_every_table_fits_the_terminal_with_whole_headers(
    report: tuple[Report, Client, str], width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, _client, _database = report
    printed: list[_Rows] = []
    show = _Rows.print

    def record(rows: _Rows, console: Console) -> None:
        printed.append(rows)
        show(rows, console)

    monkeypatch.setattr(_Rows, "print", record)
    console = Console(record=True, width=width, force_terminal=False)
    render_terminal(built, console)
    text = console.export_text()
    # rich crops every line to the console's width, so a table wider than the terminal still passes
    # a test of line lengths: the words of every header and cell must all be on the screen, whole.
    shown = Counter(text.split())
    for rows in printed:
        cells = [rows.headers, *rows.rows]
        words = Counter(
            w for cell_row in cells for cell in cell_row for w in Text.from_markup(cell).plain.split()
        )
        assert words - shown == Counter(), f"{rows.title!r}: words cut at {width} columns"
    assert any(rows.title.startswith("Indicators") for rows in printed)
    cut = [w for w in text.split() if w.endswith("…") and any(h.startswith(w[:-1]) for h in HEADER_WORDS)]
    assert cut == [], "headers cut to fit"
    for word in ("interactions", "regeneration", "completion", "correction", "experiment", "frequency"):
        assert word in text


def test_a_table_too_wide_is_split_repeating_its_first_column() -> None:
    rows = _Rows("wide", "version", *(f"column-number-{n}" for n in range(8)))
    rows.add_row("v1.0", *(str(n) for n in range(8)))
    parts = rows.parts(60)
    assert len(parts) > 1
    assert all(part[0] == 0 for part in parts)
    assert sorted(c for part in parts for c in part[1:]) == list(range(1, 9))
    assert rows.parts(400) == [list(range(9))]
