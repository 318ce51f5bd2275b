"""The weekly report in a terminal: rich tables of the issues and the numbers behind them.

Every table fits the terminal: a column is never narrower than its longest word (header or cell),
so no header is cut to "intera…" and no cell is cropped at the edge; when the columns cannot all fit
side by side, the table is split into parts that repeat its first column. The widths are computed
here, not left to rich: rich narrows every column in proportion, an unbreakable one (a sparkline, a
long word) below its longest word, then widens it back, and the table ends wider than the terminal.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reporting.loop import ALL, Indicator, LoopHealth, Unit
from reporting.model import Issue, Report, describe_pattern

_DAY = timedelta(days=1)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


class _Rows:
    """A table's title, headers and rows, printed as one rich table or, when too wide, several."""

    def __init__(self, title: str, *headers: str, left: tuple[int, ...] = (0,)) -> None:
        self.title = title
        self.headers = headers
        self.left = left
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        """Add a row (rich markup allowed)."""
        self.rows.append(cells)

    def _texts(self, index: int) -> list[str]:
        return [self.headers[index], *(Text.from_markup(row[index]).plain for row in self.rows)]

    def min_widths(self) -> list[int]:
        """Each column's narrowest width that cuts no word."""
        return [
            max(cell_len(word) for text in self._texts(index) for word in text.split() or [""])
            for index in range(len(self.headers))
        ]

    def max_widths(self) -> list[int]:
        """Each column's width that wraps no cell (its widest line)."""
        return [
            max(cell_len(line) for text in self._texts(index) for line in text.splitlines() or [""])
            for index in range(len(self.headers))
        ]

    def fit(self, columns: list[int], width: int) -> list[int] | None:
        """Content widths of ``columns`` side by side in ``width``: each as wide as its widest line,
        the widest narrowed first, a character at a time, never below its longest word. None when
        even the longest words do not fit."""
        low = [self.min_widths()[c] for c in columns]
        widths = [self.max_widths()[c] for c in columns]
        room = width - _need([0] * len(columns))
        if sum(low) > room:
            return None
        while sum(widths) > room:
            widest = max((i for i in range(len(widths)) if widths[i] > low[i]), key=lambda i: widths[i])
            widths[widest] -= 1
        return widths

    def parts(self, width: int) -> list[list[int]]:
        """Column indexes of each part: all in one if they fit in ``width``, else the first column
        and as many more as fit, part after part."""
        widths = self.min_widths()

        def need(columns: list[int]) -> int:
            return _need([widths[c] for c in columns])

        everything = list(range(len(self.headers)))
        if need(everything) <= width:
            return [everything]
        parts: list[list[int]] = []
        for column in everything[1:]:
            if parts and need([*parts[-1], column]) <= width:
                parts[-1].append(column)
            else:
                parts.append([0, column])
        return parts

    def print(self, console: Console) -> None:
        """Print the part tables."""
        widths = self.min_widths()
        parts = self.parts(console.width)
        for number, columns in enumerate(parts):
            title = self.title if number == 0 else f"{self.title} (continued)"
            table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", title_style="bold")
            fitted = self.fit(columns, console.width)
            for position, column in enumerate(columns):
                justify: Literal["left", "right"] = "left" if column in self.left else "right"
                if fitted is None:  # one column wider than the terminal: rich folds what it must
                    table.add_column(self.headers[column], justify=justify, min_width=widths[column])
                else:
                    table.add_column(self.headers[column], justify=justify, width=fitted[position])
            for row in self.rows:
                table.add_row(*(row[c] for c in columns))
            console.print(table)


def _need(widths: list[int]) -> int:
    """The width of a table whose columns have these content widths: each column's padding (one
    character either side) and border (one character), and the border at the end."""
    return sum(w + 3 for w in widths) + 1


def _table(title: str, *columns: str, left: tuple[int, ...] = (0,)) -> _Rows:
    return _Rows(title, *columns, left=left)


def render_terminal(report: Report, console: Console) -> None:
    """Print the report: issues first, then indicators, segments, edits, guard, changelog, experiments."""
    console.rule(f"Weekly improvement report {report.week_label} — {report.interactions:,} interactions")
    print_issues(report, console)
    print_loop(report.loop, console)

    rates = _table(
        "Leading indicators per prompt version",
        "version",
        "interactions",
        "regeneration",
        "capped",
        "edit",
        "completion w/o edit",
        "mean edit distance",
        "time to 1st correction",
    )
    target = report.settings.regeneration_target
    for r in report.version_rates:
        rate = r["regeneration_rate"]
        style = "red" if rate >= target else "green"
        ttfc = r["avg_time_to_first_correction_ms"]
        rates.add_row(
            r["prompt_version"],
            f"{r['interactions']:,}",
            f"[{style}]{_pct(rate)}[/{style}]",
            _pct(r["regeneration_rate_capped"]),
            _pct(r["edit_rate"]),
            _pct(r["completion_without_edit_rate"]),
            _num(r["avg_edit_distance"]),
            "–" if ttfc is None else f"{ttfc / 1000:.1f} s",
        )
    rates.print(console)

    flagged = [r for r in report.spikes if r["flagged"] or r["flagged_capped"]]
    if flagged:
        spikes = _table(
            "Input categories far above the rest of their version",
            "version / category",
            "interactions",
            "rate",
            "rest",
            "ratio",
            "z",
            "capped rate",
            "flags",
        )
        for r in flagged:
            flags = (
                "both"
                if r["flagged"] and r["flagged_capped"]
                else "per interaction only"
                if r["flagged"]
                else "capped only"
            )
            spikes.add_row(
                f"{r['prompt_version']} / {r['input_category']}",
                f"{r['interactions']:,}",
                _pct(r["regeneration_rate"]),
                _pct(r["rest_regeneration_rate"]),
                _num(r["ratio"], 2),
                _num(r["z_score"]),
                _pct(r["regeneration_rate_capped"]),
                flags,
            )
        spikes.print(console)

    if report.common_edits:
        edits = _table("Common edits", "version", "original → corrected", "edits", "users")
        for r in report.common_edits:
            edits.add_row(
                r["prompt_version"],
                f"{r['original_fragment']} → {r['corrected_fragment']}",
                f"{r['frequency']:,}",
                f"{r['distinct_users']:,}",
            )
        edits.print(console)
    if report.deletions:
        deletions = _table("Consistent deletions", "version", "what", "edits", "share", "capped share")
        for r in report.deletions:
            deletions.add_row(
                r["prompt_version"],
                f"{r['position']} {r['unit']}",
                f"{r['deleting_edits']:,} / {r['edits']:,}",
                _pct(r["share"]),
                _pct(r["share_capped"]),
            )
        deletions.print(console)
    if report.edit_size_mix:
        mix = _table("Edit size mix", "version", "edits", "small", "medium", "large")
        for r in report.edit_size_mix:
            mix.add_row(
                r["prompt_version"],
                f"{r['edits']:,}",
                _pct(r["small_share"]),
                _pct(r["medium_share"]),
                _pct(r["large_share"]),
            )
        mix.print(console)
    if report.disagreements:
        guard = _table(
            "Per-interaction and capped rates disagree",
            "version / category",
            "rate",
            "per interaction",
            "capped",
        )
        for d in report.disagreements:
            guard.add_row(
                f"{d.prompt_version} / {d.category or 'all'}", d.metric, _pct(d.rate), _pct(d.capped)
            )
        guard.print(console)
    if report.changelog:
        log = _table("Prompt changelog", "version", "change", "informed by", "regeneration", "vs. parent")
        for r in report.changelog:
            change = r["regeneration_rate_change"]
            log.add_row(
                f"{r['version']}" + (f" (from {r['parent']})" if r["parent"] else ""),
                r["change"],
                f"{r['informed_by_corrections']:,} corrections",
                _pct(r["regeneration_rate"]),
                "–" if change is None else f"{change * 100:+.1f} pts",
            )
        log.print(console)
    if report.experiments:
        decisions: dict[str, Any] = {
            str(d.get("experiment_id")): d for d in report.experiment_decisions or []
        }
        runs = _table(
            "Experiments", "experiment / variant", "interactions", "regeneration", "correction", "status"
        )
        for r in report.experiments:
            decision = decisions.get(str(r["experiment_id"]))
            runs.add_row(
                f"{r['experiment_id']} / {r['variant']}",
                f"{r['interactions']:,}",
                _pct(r["regeneration_rate"]),
                _pct(r["correction_rate"]),
                str(decision.get("action")) if decision else "no decision recorded",
            )
        runs.print(console)


def _evidence_line(issue: Issue) -> str:
    if not issue.evidence:
        return ""
    if not issue.patterns:
        return f"\n[dim]{issue.no_evidence}[/dim]"
    top = issue.patterns[0]
    count = top.get("frequency", top.get("deleting_edits"))
    more = f" and {len(issue.patterns) - 1} more" if len(issue.patterns) > 1 else ""
    return f"\n[dim]{issue.evidence}: {describe_pattern(top)} ({count:,} edits){more}[/dim]"


def print_issues(report: Report, console: Console) -> None:
    """Print only the ranked issues (what ``make demo`` ends with), each with the edits behind it."""
    table = _table(
        f"Top issues, {report.week_label}", "#", "issue", "frequency", "severity", "score", left=(1,)
    )
    for issue in report.issues:
        text = issue.title + (f"\n[yellow]⚠ {issue.caveat}[/yellow]" if issue.caveat else "")
        table.add_row(
            str(issue.rank),
            text + _evidence_line(issue),
            f"{issue.frequency:,}",
            f"{issue.severity:.1f}",
            f"{issue.score:,.0f}",
        )
    if not report.issues:
        console.print("No issue passed the thresholds this week.")
    else:
        table.print(console)


def print_report(report: Report, console: Console, *, issues_only: bool = False) -> None:
    """Print the report's tables to ``console`` (rich); ``issues_only``: just the ranked issues."""
    if issues_only:
        print_issues(report, console)
    else:
        render_terminal(report, console)


# ----------------------------------------------------------------------------------- is the loop working?

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], scale: list[float] | None = None) -> str:
    """One character per value, its height between the minimum and maximum of ``scale`` (default: the
    values; a value outside it is drawn at the edge), · for no value."""
    present = scale if scale else [v for v in values if v is not None]
    if not present:
        return "·" * len(values)
    low, high = min(present), max(present)
    span = high - low

    def bar(v: float) -> str:
        return _BARS[0 if span == 0 else round((min(max(v, low), high) - low) / span * (len(_BARS) - 1))]

    return "".join("·" if v is None else bar(v) for v in values)


def format_value(indicator: Indicator, value: float | None) -> str:
    """``value`` in the indicator's unit, for people."""
    if value is None:
        return "–"
    if indicator.unit is Unit.SHARE:
        return f"{value:.1%}"
    if indicator.unit is Unit.MILLISECONDS:
        return f"{value / 1000:.1f} s"
    if indicator.unit is Unit.DAYS:
        return f"{value:.1f} d"
    if indicator.unit is Unit.COUNT:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def verdict(indicator: Indicator) -> str:
    """The status cell: flagged in red, else green, or dim when there is too little to judge."""
    if indicator.flag:
        return f"[red]⚠ {indicator.verdict}[/red]"
    if indicator.direction == "unknown" and indicator.on_target is None:
        return f"[dim]{indicator.verdict}[/dim]"
    return f"[green]✓ {indicator.verdict}[/green]"


def print_loop(loop: LoopHealth, console: Console) -> None:
    """Print the "Is the loop working?" section: each indicator's trend, target and verdict, the flags,
    then the tables behind them (this week per version, cohorts, velocity, time to fix)."""
    weeks = loop.weeks
    span = f"{weeks[0]:%Y-%m-%d} – {loop.end - _DAY:%Y-%m-%d}" if weeks else ""
    console.rule(f"Is the loop working? {len(weeks)} weeks, {span}")
    table = _table("Indicators (trend oldest → newest; the week in progress is shown, not judged)",
                   "indicator", "target", "trend", "latest", "vs. before", "status")  # fmt: skip
    group = ""
    for i in loop.indicators:
        if i.group != group:
            group = i.group
            table.add_row(f"[bold]{group}[/bold]", "", "", "", "", "")
        change = "–" if i.change is None else f"{i.change:+.0%}"
        latest = format_value(i, i.level) + (" (median)" if i.by_median and i.level is not None else "")
        # Scaled on the complete periods: a week in progress (or a burst in it) does not flatten the rest.
        trend = sparkline([p.value for p in i.points], [p.value for p in i.judged if p.value is not None])
        table.add_row(i.name, i.target, trend, latest, change, verdict(i))
    table.print(console)
    if loop.flags:
        console.print("[bold red]Moving the wrong way:[/bold red]")
        for flag in loop.flags:
            console.print(f"  [red]⚠[/red] {flag}")
    else:
        console.print("[green]No indicator moves the wrong way.[/green]")

    if loop.engagement:
        week = f"{loop.weeks[-1]:%Y-%m-%d}" if loop.weeks else ""
        tickets = {r["prompt_version"]: r for r in loop.tickets}
        per_version = _table(
            f"This week ({week}) per prompt version",
            *("version", "active users", "interactions / user", "back next week", "AI-quality tickets"),
            "per 1,000",
        )
        for r in loop.engagement:
            t = tickets.get(r["prompt_version"], {})
            per_version.add_row(
                r["prompt_version"] if r["prompt_version"] != ALL else "all",  # one word: never wraps
                f"{r['active_users']:,}",
                _num(r["interactions_per_active_user"]),
                _pct(r["next_week_return_rate"]),
                f"{t.get('ai_quality_tickets', 0):,}" + ("" if r["prompt_version"] == ALL else " linked"),
                _num(t.get("ai_quality_tickets_per_1000")),
            )
        per_version.print(console)
    cohorts = [r for r in loop.cohorts if r["users"]][-6:]
    if cohorts:
        retention = _table("Cohort retention (users first seen that week)", "cohort week", "users",
                           "week 1", "week 2", "week 4")  # fmt: skip
        for r in cohorts:
            retention.add_row(
                f"{r['cohort_week']:%Y-%m-%d}",
                f"{r['users']:,}",
                _pct(r["retention_week_1"]),
                _pct(r["retention_week_2"]),
                _pct(r["retention_week_4"]),
            )
        retention.print(console)
    if loop.fixes:
        fixes = _table("Time from feedback to fix", "version", "addresses", "first seen", "to registration",
                       "to promotion")  # fmt: skip
        for r in loop.fixes:
            seen = r["first_seen"]
            fixes.add_row(
                r["version"],
                r["ref"],
                "–" if seen is None else f"{seen:%Y-%m-%d}",
                "–" if r["days_to_register"] is None else f"{r['days_to_register']:.1f} d",
                "–" if r["days_to_promote"] is None else f"{r['days_to_promote']:.1f} d",
            )
        fixes.print(console)
