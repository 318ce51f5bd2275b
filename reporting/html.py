"""The weekly report as one self-contained HTML page: tables, and plotly plots with plotly.js inlined.

Nothing is loaded from the network, so the page works offline and can be mailed or archived as one
file. Every number in a table carries ``data-key`` (what it is) and ``data-value`` (the exact value
ClickHouse returned), which the browser test compares with ClickHouse.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]  # plotly ships no type hints
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

from reporting.loop import ALL, Indicator, LoopHealth, Unit
from reporting.model import Issue, Report, describe_pattern

Row = dict[str, Any]

_PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#111827;
background:#f9fafb}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px}
h2{font-size:1.2rem;margin:32px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
h3{font-size:1rem;margin:16px 0 6px}.muted{color:#6b7280}.caveat{color:#b45309}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 12px;font-size:.9rem}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f4f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.issue{background:#fff;border:1px solid #e5e7eb;border-left:4px solid #2563eb;padding:8px 14px;margin:10px 0}
.flag{color:#dc2626;font-weight:600}.ok{color:#16a34a}
.plot{background:#fff;border:1px solid #e5e7eb;margin:8px 0;min-height:360px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
@media(max-width:900px){.grid{grid-template-columns:1fr}}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _int(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _cell(key: str, value: Any, shown: str) -> str:
    exact = "" if value is None else repr(value) if isinstance(value, float) else str(value)
    return f'<td class="num" data-key="{_e(key)}" data-value="{_e(exact)}">{_e(shown)}</td>'


def _table(headers: Iterable[str], body: Iterable[str], table_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    rows = "".join(f"<tr>{r}</tr>" for r in body)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _plot(fig: Any, div_id: str) -> str:
    fig.update_layout(
        template="plotly_white", margin={"l": 50, "r": 20, "t": 50, "b": 40}, height=360, legend_title_text=""
    )
    body: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="plot" data-plot="{div_id}">{body}</div>'


def _versions(rows: Iterable[Row]) -> list[str]:
    return sorted({str(r["prompt_version"]) for r in rows})


def _trend_plot(report: Report, metric: str, title: str, div_id: str, scale: float = 1.0) -> str:
    fig = go.Figure()
    for n, version in enumerate(_versions(report.trends)):
        points = [r for r in report.trends if r["prompt_version"] == version and r[metric] is not None]
        fig.add_trace(
            go.Scatter(
                x=[r["period_start"] for r in points],
                y=[r[metric] * scale for r in points],
                mode="lines+markers",
                name=version,
                line={"color": _PALETTE[n % len(_PALETTE)]},
            )
        )
    if metric == "regeneration_rate":
        fig.add_hline(
            y=report.settings.regeneration_target,
            line_dash="dash",
            line_color="#6b7280",
            annotation_text=f"target {report.settings.regeneration_target:.0%}",
        )
        fig.update_yaxes(tickformat=".0%")
    elif metric.endswith("_rate"):
        fig.update_yaxes(tickformat=".0%")
    fig.update_layout(title=f"{title} per {report.trend_grain}")
    return _plot(fig, div_id)


def _issues_section(report: Report) -> str:
    if not report.issues:
        return "<p class='muted'>No issue this week: nothing passed the thresholds.</p>"
    parts = []
    for issue in report.issues:
        parts.append(_issue(issue))
    fig = go.Figure(
        go.Bar(
            x=[i.score for i in reversed(report.issues)],
            y=[f"#{i.rank} {i.kind} ({i.prompt_version})" for i in reversed(report.issues)],
            orientation="h",
            marker_color="#2563eb",
            text=[f"{i.frequency:,} × {i.severity:.1f}" for i in reversed(report.issues)],
        )
    )
    fig.update_layout(title="Issue score = frequency × severity")
    return "".join(parts) + _plot(fig, "plot-issues")


def _issue(issue: Issue) -> str:
    key = f"issue|{issue.rank}"
    segments = ""
    if issue.segments:
        metric = next((k for k in issue.segments[0] if k not in ("input_category", "interactions")), "edits")
        segments = "<h3>Segments</h3>" + _table(
            ["input category", metric, *(["interactions"] if "interactions" in issue.segments[0] else [])],
            (
                f"<td>{_e(s['input_category'])}</td>"
                + _cell(f"{key}|segment|{s['input_category']}|{metric}", s[metric], _int(s[metric]))
                + (_cell("", s["interactions"], _int(s["interactions"])) if "interactions" in s else "")
                for s in issue.segments
            ),
            f"issue-{issue.rank}-segments",
        )
    patterns = ""
    if not issue.patterns and issue.evidence:
        patterns = f"<p class='muted' id='issue-{issue.rank}-no-evidence'>{_e(issue.no_evidence)}</p>"
    if issue.patterns:
        patterns = f"<h3>{_e(issue.evidence or 'Edit patterns behind it')}</h3>" + _table(
            ["what", "original", "corrected", "edits"],
            (
                f"<td>{_e(describe_pattern(p))}</td>"
                f"<td>{_e(p.get('example_original') or p.get('example') or '')}</td>"
                f"<td>{_e(p.get('example_corrected') or '')}</td>"
                + _cell(
                    "",
                    p.get("frequency", p.get("deleting_edits")),
                    _int(p.get("frequency", p.get("deleting_edits"))),
                )
                for p in issue.patterns
            ),
            f"issue-{issue.rank}-patterns",
        )
    caveat = f"<p class='caveat'>⚠ {_e(issue.caveat)}</p>" if issue.caveat else ""
    return (
        f"<div class='issue' id='issue-{issue.rank}'><h3>#{issue.rank} {_e(issue.title)}</h3>"
        + _table(
            ["kind", "frequency", "severity", "score"],
            [
                f"<td>{_e(issue.kind)}</td>"
                + _cell(f"{key}|frequency", issue.frequency, _int(issue.frequency))
                + _cell(f"{key}|severity", issue.severity, _num(issue.severity, 2))
                + _cell(f"{key}|score", issue.score, _num(issue.score, 1))
            ],
            f"issue-{issue.rank}-numbers",
        )
        + caveat
        + segments
        + patterns
        + "</div>"
    )


def _rates_table(report: Report) -> str:
    headers = [
        "version",
        "interactions",
        "users",
        "regeneration",
        "regeneration (capped)",
        "edit",
        "edit (capped)",
        "correction",
        "completion w/o edit",
        "mean edit distance",
        "time to first correction (s)",
    ]
    body = []
    for r in report.version_rates:
        k = f"version_rates|{r['prompt_version']}"
        ttfc = r["avg_time_to_first_correction_ms"]
        body.append(
            f"<td>{_e(r['prompt_version'])}</td>"
            + _cell(f"{k}|interactions", r["interactions"], _int(r["interactions"]))
            + _cell(f"{k}|users", r["users"], _int(r["users"]))
            + _cell(f"{k}|regeneration_rate", r["regeneration_rate"], _pct(r["regeneration_rate"]))
            + _cell(
                f"{k}|regeneration_rate_capped",
                r["regeneration_rate_capped"],
                _pct(r["regeneration_rate_capped"]),
            )
            + _cell(f"{k}|edit_rate", r["edit_rate"], _pct(r["edit_rate"]))
            + _cell(f"{k}|edit_rate_capped", r["edit_rate_capped"], _pct(r["edit_rate_capped"]))
            + _cell(f"{k}|correction_rate", r["correction_rate"], _pct(r["correction_rate"]))
            + _cell(
                f"{k}|completion_without_edit_rate",
                r["completion_without_edit_rate"],
                _pct(r["completion_without_edit_rate"]),
            )
            + _cell(f"{k}|avg_edit_distance", r["avg_edit_distance"], _num(r["avg_edit_distance"]))
            + _cell(f"{k}|avg_time_to_first_correction_ms", ttfc, _num(None if ttfc is None else ttfc / 1000))
        )
    return _table(headers, body, "version-rates")


def _capped_plot(report: Report) -> str:
    fig = go.Figure()
    versions = [r["prompt_version"] for r in report.version_rates]
    for n, (label, suffix) in enumerate((("per interaction", ""), ("each user capped", "_capped"))):
        fig.add_trace(
            go.Bar(
                x=versions,
                y=[r[f"regeneration_rate{suffix}"] for r in report.version_rates],
                name=f"regeneration, {label}",
                marker_color=_PALETTE[n],
            )
        )
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(
        title="Regeneration rate: per interaction vs. each user's weight capped", barmode="group"
    )
    return _plot(fig, "plot-capped")


def _segments_section(report: Report) -> str:
    fig = go.Figure()
    categories = sorted({str(r["input_category"]) for r in report.spikes})
    for n, version in enumerate(_versions(report.spikes)):
        by_category = {r["input_category"]: r for r in report.spikes if r["prompt_version"] == version}
        fig.add_trace(
            go.Bar(
                x=categories,
                y=[by_category[c]["regeneration_rate"] if c in by_category else None for c in categories],
                name=version,
                marker_color=_PALETTE[n % len(_PALETTE)],
                text=["spike" if c in by_category and by_category[c]["flagged"] else "" for c in categories],
            )
        )
    fig.add_hline(y=report.settings.regeneration_target, line_dash="dash", line_color="#6b7280")
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(title="Regeneration rate by input category", barmode="group")
    headers = [
        "version",
        "input category",
        "interactions",
        "regenerations",
        "rate",
        "rest of version",
        "ratio",
        "z",
        "rate (capped)",
        "flagged",
        "flagged (capped)",
    ]
    body = []
    for r in report.spikes:
        k = f"spikes|{r['prompt_version']}|{r['input_category']}"
        flag = "<td class='flag'>spike</td>" if r["flagged"] else "<td class='ok'>–</td>"
        flag_capped = "<td class='flag'>spike</td>" if r["flagged_capped"] else "<td class='ok'>–</td>"
        body.append(
            f"<td>{_e(r['prompt_version'])}</td><td>{_e(r['input_category'])}</td>"
            + _cell(f"{k}|interactions", r["interactions"], _int(r["interactions"]))
            + _cell(f"{k}|regenerations", r["regenerations"], _int(r["regenerations"]))
            + _cell(f"{k}|regeneration_rate", r["regeneration_rate"], _pct(r["regeneration_rate"]))
            + _cell(
                f"{k}|rest_regeneration_rate", r["rest_regeneration_rate"], _pct(r["rest_regeneration_rate"])
            )
            + _cell(f"{k}|ratio", r["ratio"], _num(r["ratio"], 2))
            + _cell(f"{k}|z_score", r["z_score"], _num(r["z_score"], 1))
            + _cell(
                f"{k}|regeneration_rate_capped",
                r["regeneration_rate_capped"],
                _pct(r["regeneration_rate_capped"]),
            )
            + flag
            + flag_capped
        )
    return _plot(fig, "plot-segments") + _table(headers, body, "spikes")


def _edits_section(report: Report) -> str:
    fig = go.Figure()
    mix = report.edit_size_mix
    for n, size in enumerate(("small", "medium", "large")):
        fig.add_trace(
            go.Bar(
                x=[r["prompt_version"] for r in mix],
                y=[r[f"{size}_share"] for r in mix],
                name=size,
                marker_color=("#16a34a", "#ca8a04", "#dc2626")[n],
                text=[f"{r[size]:,}" for r in mix],
            )
        )
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(title="Edit size mix (small = refinement, large = misunderstanding)", barmode="stack")
    common = _table(
        ["version", "original", "corrected", "edits", "users", "example"],
        (
            f"<td>{_e(r['prompt_version'])}</td><td>{_e(r['original_fragment'])}</td>"
            f"<td>{_e(r['corrected_fragment'])}</td>"
            + _cell(
                f"common_edits|{r['prompt_version']}|{r['original_fragment']}|frequency",
                r["frequency"],
                _int(r["frequency"]),
            )
            + _cell(
                f"common_edits|{r['prompt_version']}|{r['original_fragment']}|distinct_users",
                r["distinct_users"],
                _int(r["distinct_users"]),
            )
            + f"<td>{_e(r['example_original'])} → {_e(r['example_corrected'])}</td>"
            for r in report.common_edits
        ),
        "common-edits",
    )
    deletions = _table(
        ["version", "position", "unit", "deleting edits", "of edits", "share", "share (capped)", "example"],
        (
            f"<td>{_e(r['prompt_version'])}</td><td>{_e(r['position'])}</td><td>{_e(r['unit'])}</td>"
            + _cell(
                f"deletions|{r['prompt_version']}|{r['position']}|{r['unit']}|deleting_edits",
                r["deleting_edits"],
                _int(r["deleting_edits"]),
            )
            + _cell(
                f"deletions|{r['prompt_version']}|{r['position']}|{r['unit']}|edits",
                r["edits"],
                _int(r["edits"]),
            )
            + _cell(
                f"deletions|{r['prompt_version']}|{r['position']}|{r['unit']}|share",
                r["share"],
                _pct(r["share"]),
            )
            + _cell("", r["share_capped"], _pct(r["share_capped"]))
            + f"<td>{_e(r['example'])}</td>"
            for r in report.deletions
        ),
        "deletions",
    )
    min_users = report.thresholds.get("min_pattern_users", report.settings.min_pattern_users)
    return (
        _plot(fig, "plot-edit-sizes")
        + f"<h3>Common edits (made by more than {min_users:g} users)</h3>"
        + (common if report.common_edits else "<p class='muted'>None this week.</p>")
        + "<h3>Consistent deletions</h3>"
        + (deletions if report.deletions else "<p class='muted'>None this week.</p>")
    )


def _disagreements_section(report: Report) -> str:
    if not report.disagreements:
        return "<p class='ok'>Per-interaction and capped rates agree everywhere.</p>"
    return _table(
        ["version", "input category", "rate", "per interaction", "each user capped"],
        (
            f"<td>{_e(d.prompt_version)}</td><td>{_e(d.category or 'all')}</td><td>{_e(d.metric)}</td>"
            + _cell(f"disagreement|{d.prompt_version}|{d.category or ''}|{d.metric}", d.rate, _pct(d.rate))
            + _cell(
                f"disagreement|{d.prompt_version}|{d.category or ''}|{d.metric}|capped",
                d.capped,
                _pct(d.capped),
            )
            for d in report.disagreements
        ),
        "disagreements",
    )


def _changelog_section(report: Report) -> str:
    if not report.changelog:
        return "<p class='muted'>No prompt version registered yet (feedbackloop prompts add).</p>"
    parts = []
    for r in reversed(report.changelog):
        k = f"changelog|{r['version']}"
        headline = f"Prompt {r['version']}"
        if r["parent"]:
            headline += (
                f" — improved on {r['parent']} based on {r['informed_by_corrections']:,} user corrections"
            )
        parts.append(
            f"<div class='issue'><h3>{_e(headline)}</h3>"
            f"<p><b>Change:</b> {_e(r['change'])}<br><b>Why:</b> {_e(r['reasoning'])}<br>"
            f"<b>Addresses:</b> {_e(r['addresses'] or '–')}<br>"
            f"<span class='muted'>{_e(r['author'])}, {_e(_day(r['created_at']))}</span></p>"
            + _table(
                [
                    "interactions",
                    "users",
                    "regeneration",
                    "vs. parent",
                    "edit",
                    "vs. parent",
                    "corrections informing it",
                ],
                [
                    _cell(f"{k}|interactions", r["interactions"], _int(r["interactions"]))
                    + _cell(f"{k}|users", r["users"], _int(r["users"]))
                    + _cell(f"{k}|regeneration_rate", r["regeneration_rate"], _pct(r["regeneration_rate"]))
                    + _cell(
                        f"{k}|regeneration_rate_change",
                        r["regeneration_rate_change"],
                        _signed_pct(r["regeneration_rate_change"]),
                    )
                    + _cell(f"{k}|edit_rate", r["edit_rate"], _pct(r["edit_rate"]))
                    + _cell(
                        f"{k}|edit_rate_change", r["edit_rate_change"], _signed_pct(r["edit_rate_change"])
                    )
                    + _cell(
                        f"{k}|informed_by_corrections",
                        r["informed_by_corrections"],
                        _int(r["informed_by_corrections"]),
                    )
                ],
                f"changelog-{r['version']}",
            )
            + "</div>"
        )
    return "".join(parts)


def _signed_pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} pts"


def _day(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d")


def _experiments_section(report: Report) -> str:
    if not report.experiments:
        return "<p class='muted'>No experiment ran this week.</p>"
    decisions = {str(d.get("experiment_id")): d for d in report.experiment_decisions or []}
    body = []
    for r in report.experiments:
        k = f"experiments|{r['experiment_id']}|{r['variant']}"
        decision = decisions.get(str(r["experiment_id"]))
        status = (
            f"{decision.get('action', '?')}: {decision.get('reason', '')}"
            if decision
            else "no decision recorded"
        )
        body.append(
            f"<td>{_e(r['experiment_id'])}</td><td>{_e(r['variant'])}</td>"
            + _cell(f"{k}|interactions", r["interactions"], _int(r["interactions"]))
            + _cell(f"{k}|users", r["users"], _int(r["users"]))
            + _cell(f"{k}|regeneration_rate", r["regeneration_rate"], _pct(r["regeneration_rate"]))
            + _cell(f"{k}|correction_rate", r["correction_rate"], _pct(r["correction_rate"]))
            + _cell(
                f"{k}|completion_without_edit_rate",
                r["completion_without_edit_rate"],
                _pct(r["completion_without_edit_rate"]),
            )
            + f"<td>{_e(status)}</td>"
        )
    note = (
        ""
        if report.experiment_decisions is not None
        else "<p class='muted'>Decisions appear here once the experiments stage writes the table "
        "<code>experiment_decisions</code> (topic ai.experiments.decisions.v1).</p>"
    )
    return note + _table(
        [
            "experiment",
            "variant",
            "interactions",
            "users",
            "regeneration",
            "correction",
            "completion w/o edit",
            "status",
        ],
        body,
        "experiments",
    )


def render_html(report: Report) -> str:
    """The whole page."""
    sections: list[tuple[str, str, Callable[[], str]]] = [
        ("issues", f"Top {len(report.issues)} issues", lambda: _issues_section(report)),
        ("loop", "Is the loop working?", lambda: _loop_section(report.loop)),
        ("indicators", "Leading indicators", lambda: _indicators(report)),
        ("segments", "Segments and spikes", lambda: _segments_section(report)),
        ("edits", "Edit patterns", lambda: _edits_section(report)),
        ("minority", "Vocal-minority guard", lambda: _capped_plot(report) + _disagreements_section(report)),
        ("changelog", "Prompt changelog", lambda: _changelog_section(report)),
        ("experiments", "Experiments", lambda: _experiments_section(report)),
    ]
    body = "".join(
        f"<section id='{sid}'><h2>{_e(title)}</h2>{render()}</section>" for sid, title, render in sections
    )
    meta = {
        "database": report.database,
        "week": report.week_label,
        "week_start": report.week_start.isoformat(),
        "week_end": report.week_end.isoformat(),
        "interactions": report.interactions,
    }
    header = (
        f"<h1>Weekly improvement report — {_e(report.week_label)}</h1>"
        f"<p class='muted'>{_e(report.week_start.strftime('%Y-%m-%d'))} to "
        f"{_e(report.week_end.strftime('%Y-%m-%d'))} (UTC, end excluded) · "
        f"database {_e(report.database)} · "
        f"<span data-key='interactions' data-value='{report.interactions}'>{report.interactions:,}</span> "
        f"interactions · generated {_e(report.generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Weekly improvement report {_e(report.week_label)}</title>"
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script>"
        f"<script type='application/json' id='report-meta'>{json.dumps(meta)}</script>"
        f"</head><body><main>{header}{body}</main></body></html>"
    )


def _indicators(report: Report) -> str:
    plots = [
        _trend_plot(report, "regeneration_rate", "Regeneration rate", "plot-regeneration"),
        _trend_plot(report, "avg_edit_distance", "Mean edit distance (characters)", "plot-edit-distance"),
        _trend_plot(
            report, "avg_time_to_first_correction_ms", "Time to first correction (s)", "plot-ttfc", 1 / 1000
        ),
        _trend_plot(report, "completion_without_edit_rate", "Completion without edit", "plot-completion"),
    ]
    return f"<div class='grid'>{''.join(plots)}</div>" + _rates_table(report)


# ----------------------------------------------------------------------------------- is the loop working?


def _value(indicator: Indicator, value: float | None) -> str:
    if value is None:
        return "–"
    if indicator.unit is Unit.SHARE:
        return f"{value:.1%}"
    if indicator.unit is Unit.MILLISECONDS:
        return f"{value / 1000:.1f} s"
    if indicator.unit is Unit.DAYS:
        return f"{value:.1f} days"
    if indicator.unit is Unit.COUNT:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _status(indicator: Indicator) -> str:
    if indicator.flag:
        return f"<td class='flag' title='{_e(indicator.flag)}'>⚠ {_e(indicator.verdict)}</td>"
    if indicator.direction == "unknown" and indicator.on_target is None:
        return f"<td class='muted'>{_e(indicator.verdict)}</td>"
    return f"<td class='ok'>✓ {_e(indicator.verdict)}</td>"


def _indicator_plot(indicator: Indicator, div_id: str) -> str:
    scale = 1 / 1000 if indicator.unit is Unit.MILLISECONDS else 1.0
    points = list(indicator.points)
    fig = go.Figure()
    if indicator.periods == "fixes":
        fig.add_trace(
            go.Scatter(
                x=[p.start for p in points],
                y=[p.value for p in points],
                mode="markers",
                text=[p.label for p in points],
                marker={"color": _PALETTE[0], "size": 9},
                name="addressed pattern",
            )
        )
    else:
        x = [p.start for p in points]
        y = [None if p.value is None else p.value * scale for p in points]
        colors = [_PALETTE[0] if p.complete else "#9ca3af" for p in points]
        if indicator.periods == "months":
            fig.add_trace(go.Bar(x=x, y=y, marker={"color": colors}, name=indicator.name))
        else:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    line={"color": _PALETTE[0]},
                    marker={
                        "color": colors,
                        "symbol": ["circle" if p.complete else "circle-open" for p in points],
                        "size": 8,
                    },
                    name=indicator.name,
                )
            )
    if indicator.target_max is not None:
        fig.add_hline(
            y=indicator.target_max * scale,
            line_dash="dash",
            line_color="#dc2626",
            annotation_text=f"target: {indicator.target}",
        )
    if indicator.unit is Unit.SHARE:
        fig.update_yaxes(tickformat=".0%")
    unit = {Unit.MILLISECONDS: " (s)", Unit.DAYS: " (days)"}.get(indicator.unit, "")
    fig.update_layout(title=f"{indicator.name}{unit}", showlegend=False, height=300)
    return _plot(fig, div_id)


def _loop_section(loop: LoopHealth) -> str:
    weeks = loop.weeks
    span = f"{weeks[0]:%Y-%m-%d} to {loop.end:%Y-%m-%d}" if weeks else ""
    intro = (
        f"<p class='muted'>The last {len(weeks)} weeks ({span}, UTC). A week is judged once it is over; "
        "the week in progress is drawn grey. An indicator is "
        "flagged when its last complete week moves against its target direction, compared with the mean "
        "of the four before it, or when it misses a level target.</p>"
    )
    rows = []
    group = ""
    for i in loop.indicators:
        if i.group != group:
            group = i.group
            rows.append(f"<td colspan='6'><b>{_e(group)}</b></td>")
        k = f"loop|{i.key}"
        rows.append(
            f"<td>{_e(i.name)}</td><td>{_e(i.target)}</td>"
            + _cell(f"{k}|level", i.level, _value(i, i.level) + (" (median)" if i.by_median else ""))
            + _cell(f"{k}|baseline", i.baseline, _value(i, i.baseline))
            + _cell(f"{k}|change", i.change, "–" if i.change is None else f"{i.change:+.0%}")
            + _status(i)
        )
    table = _table(["indicator", "target", "latest", "before (mean)", "change", "status"], rows, "loop")
    if loop.flags:
        flags = (
            "<ul id='loop-flags'>" + "".join(f"<li class='flag'>⚠ {_e(f)}</li>" for f in loop.flags) + "</ul>"
        )
    else:
        flags = "<p class='ok' id='loop-flags'>No indicator moves the wrong way.</p>"
    plots = "".join(
        _indicator_plot(i, f"plot-loop-{i.key}")
        if any(p.value is not None for p in i.points)
        else f"<div class='plot muted' id='no-plot-loop-{i.key}'><h3>{_e(i.name)}</h3>no data yet</div>"
        for i in loop.indicators
    )
    return intro + flags + table + f"<div class='grid'>{plots}</div>" + _loop_tables(loop)


def _loop_tables(loop: LoopHealth) -> str:
    tickets = {r["prompt_version"]: r for r in loop.tickets}
    per_version = _table(
        [
            "version",
            "active users",
            "interactions",
            "interactions / user",
            "back next week",
            "AI-quality tickets",
            "per 1,000 interactions",
        ],
        (
            f"<td>{_e('all versions' if r['prompt_version'] == ALL else r['prompt_version'])}</td>"
            + _cell(
                f"loop-week|{r['prompt_version']}|active_users", r["active_users"], _int(r["active_users"])
            )
            + _cell(
                f"loop-week|{r['prompt_version']}|interactions", r["interactions"], _int(r["interactions"])
            )
            + _cell("", r["interactions_per_active_user"], _num(r["interactions_per_active_user"]))
            + _cell("", r["next_week_return_rate"], _pct(r["next_week_return_rate"]))
            + _cell(
                f"loop-week|{r['prompt_version']}|ai_quality_tickets",
                tickets.get(r["prompt_version"], {}).get("ai_quality_tickets", 0),
                _int(tickets.get(r["prompt_version"], {}).get("ai_quality_tickets", 0)),
            )
            + _cell(
                "",
                tickets.get(r["prompt_version"], {}).get("ai_quality_tickets_per_1000"),
                _num(tickets.get(r["prompt_version"], {}).get("ai_quality_tickets_per_1000")),
            )
            for r in loop.engagement
        ),
        "loop-week",
    )
    cohorts = _table(
        ["cohort (first seen)", "users", "week 1", "week 2", "week 4"],
        (
            f"<td>{_e(_day(r['cohort_week']))}</td>"
            + _cell(f"cohort|{_day(r['cohort_week'])}|users", r["users"], _int(r["users"]))
            + "".join(
                _cell(
                    f"cohort|{_day(r['cohort_week'])}|retention_week_{k}",
                    r[f"retention_week_{k}"],
                    _pct(r[f"retention_week_{k}"]),
                )
                for k in (1, 2, 4)
            )
            for r in loop.cohorts
        ),
        "cohorts",
    )
    velocity = _table(
        ["month", "registered", "promoted", "versions registered", "versions promoted"],
        (
            f"<td>{_e(r['month_start'].strftime('%Y-%m'))}</td>"
            + _cell(
                f"velocity|{r['month_start']:%Y-%m}|registered",
                r["versions_registered"],
                _int(r["versions_registered"]),
            )
            + _cell(
                f"velocity|{r['month_start']:%Y-%m}|promoted",
                r["versions_promoted"],
                _int(r["versions_promoted"]),
            )
            + f"<td>{_e(', '.join(r['registered_versions']))}</td>"
            + f"<td>{_e(', '.join(r['promoted_versions']))}</td>"
            for r in loop.velocity
        ),
        "velocity",
    )
    running = _table(
        ["week", "experiments running", "which"],
        (
            f"<td>{_e(_day(r['week_start']))}</td>"
            + _cell(
                f"experiments-running|{_day(r['week_start'])}",
                r["experiments_running"],
                _int(r["experiments_running"]),
            )
            + f"<td>{_e(', '.join(r['experiment_ids']))}</td>"
            for r in loop.experiments
        ),
        "experiments-running",
    )
    summary = loop.fix_summary
    fixes = _table(
        [
            "version",
            "addresses",
            "first seen",
            "registered",
            "promoted",
            "days to registration",
            "days to promotion",
        ],
        (
            f"<td>{_e(r['version'])}</td><td>{_e(r['ref'])}</td><td>{_e(_day(r['first_seen']))}</td>"
            f"<td>{_e(_day(r['registered_at']))}</td><td>{_e(_day(r['promoted_at']))}</td>"
            + _cell(
                f"fix|{r['version']}|{r['ref']}|days_to_register",
                r["days_to_register"],
                _num(r["days_to_register"]),
            )
            + _cell(
                f"fix|{r['version']}|{r['ref']}|days_to_promote",
                r["days_to_promote"],
                _num(r["days_to_promote"]),
            )
            for r in loop.fixes
        ),
        "time-to-fix",
    )
    medians = (
        f"<p>Median time from feedback to fix over {summary.get('measured', 0)} addressed patterns: "
        f"<b>{_num(summary.get('median_days_to_register'))}</b> days to registration, "
        f"<b>{_num(summary.get('median_days_to_promote'))}</b> days to promotion "
        f"({summary.get('promoted', 0)} promoted).</p>"
    )
    return (
        "<h3>This week per prompt version</h3>"
        + (per_version if loop.engagement else "<p class='muted'>No interaction this week.</p>")
        + "<h3>Cohort retention</h3>"
        + (cohorts if loop.cohorts else "<p class='muted'>No cohort in these weeks.</p>")
        + "<h3>Prompt versions per month</h3>"
        + (velocity if loop.velocity else "<p class='muted'>No version registered or promoted.</p>")
        + "<h3>Experiments running per week</h3>"
        + running
        + "<h3>Time from feedback to fix</h3>"
        + (
            medians + fixes
            if loop.fixes
            else "<p class='muted'>No version registered in these weeks names a pattern it addresses "
            "(feedbackloop prompts add --addresses 'edit: A -> B').</p>"
        )
    )


def write_html(report: Report, path: Path | str) -> Path:
    """Write the report as one self-contained HTML page (plots included, no network needed); return
    its absolute path."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report), encoding="utf-8")
    return target
