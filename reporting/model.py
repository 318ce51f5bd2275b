"""The weekly improvement report: the top issues and the evidence behind them, for the weekly cycle.

Teams run a weekly cycle — find the highest-impact problems, draft one prompt change, A/B test it,
promote or revert, write down what they learned. This report serves the "find" and "document"
steps. :func:`build_report` reads the insight views for one ISO week and returns a
:class:`Report`; ``reporting.terminal.print_report`` renders it in a terminal (rich) and
``reporting.html.write_html`` as a
self-contained HTML page with plots that works offline.

**Ranking.** Candidate issues are regenerations (per version, and per spiking input category),
common edit patterns, consistent deletions, large edits and thumbs-down. Each has a *frequency*
(the interactions or edits it touches this week) and a *severity* (the weight of what users did:
by default a regeneration or a large edit weighs 3, a thumbs-down 2, a medium edit 1.5, a small
edit 1; an edit pattern weighs the mean of its edits' sizes). The score is frequency × severity;
the top ``insights.top_issues`` are shown, each with the segments (input categories) and the edits
that belong to it (:func:`evidence_of`: the edits of its regenerated or thumbs-down responses, the
operations of its large edits, the pattern or deletion itself -- never the version's top patterns
in general), and a caveat when the per-interaction and per-user-capped rates disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from infra.settings import InsightSettings, check_database_name
from reporting import queries as q
from reporting.loop import LoopHealth, assemble

Row = dict[str, Any]

#: Rates compared per interaction and with users' weight capped.
GUARDED_RATES = ("regeneration_rate", "edit_rate", "correction_rate", "completion_without_edit_rate")
#: Weeks of trend shown, the report's week included.
TREND_WEEKS = 4


@dataclass(frozen=True)
class Issue:
    """One problem worth a prompt change, with what it touches and why it ranks where it does."""

    kind: str
    title: str
    prompt_version: str
    frequency: int
    severity: float
    category: str | None = None
    caveat: str | None = None
    segments: list[Row] = field(default_factory=list)
    patterns: list[Row] = field(default_factory=list)
    rank: int = 0
    #: Input categories that are issues of their own (a version's regenerations minus its spikes).
    excluded_categories: tuple[str, ...] = ()
    #: What ``patterns`` are: the edits that belong to this issue (see :func:`evidence_of`).
    evidence: str = ""

    @property
    def no_evidence(self) -> str:
        """What to say when no edit belongs to this issue."""
        return f"{self.evidence}: none this week — no edit belongs to this issue."

    @property
    def score(self) -> float:
        """frequency × severity."""
        return self.frequency * self.severity


@dataclass(frozen=True)
class Disagreement:
    """A rate whose per-interaction and per-user-capped values differ by more than the setting."""

    prompt_version: str
    category: str | None
    metric: str
    rate: float
    capped: float


@dataclass
class Report:
    """Everything the weekly report shows, as read from ClickHouse."""

    database: str
    week_start: datetime
    week_end: datetime
    generated_at: datetime
    settings: InsightSettings
    thresholds: dict[str, float]
    version_rates: list[Row]
    category_rates: list[Row]
    spikes: list[Row]
    common_edits: list[Row]
    deletions: list[Row]
    edit_size_mix: list[Row]
    trend_grain: str
    trend_start: datetime
    trends: list[Row]
    disagreements: list[Disagreement]
    issues: list[Issue]
    changelog: list[Row]
    experiments: list[Row]
    experiment_decisions: list[Row] | None
    #: "Is the loop working?": leading, lagging and velocity indicators over the last weeks.
    loop: LoopHealth

    @property
    def week_label(self) -> str:
        """ISO week, e.g. ``2026-W48``."""
        year, week, _ = self.week_start.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def interactions(self) -> int:
        """Interactions in the week."""
        return sum(int(r["interactions"]) for r in self.version_rates)


def week_range(week: date | datetime | str | None, latest: datetime | None) -> tuple[datetime, datetime]:
    """[Monday 00:00 UTC, next Monday) of ``week``: an ISO week (``2026-W48``), a date (``2026-11-26``)
    or a date/datetime in it; None means the week of ``latest`` (the newest data), else this week."""
    if isinstance(week, str):
        match = re.fullmatch(r"(\d{4})-?W(\d{1,2})", week.strip(), re.IGNORECASE)
        if match:
            day = date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1)
        else:
            try:
                day = date.fromisoformat(week.strip())
            except ValueError:
                raise ValueError(f"week must look like 2026-W48 or 2026-11-26, not {week!r}") from None
    elif isinstance(week, datetime):
        day = week.astimezone(UTC).date()
    elif isinstance(week, date):
        day = week
    else:
        day = (latest or datetime.now(UTC)).astimezone(UTC).date()
    monday = day - timedelta(days=day.weekday())
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return start, start + timedelta(days=7)


def build_report(
    client: Client,
    database: str,
    week: date | datetime | str | None = None,
    *,
    settings: InsightSettings | None = None,
) -> Report:
    """Read everything the weekly report shows for ``week`` (see :func:`week_range`) from ``database``.

    With ``settings``, their SQL thresholds are first written to ``insight_settings`` so that the
    views use them; without, the views keep the thresholds they have (the defaults until a sync).
    The registry mirror (``prompt_versions``) is read as it is: mirror it first (``prompts.mirror``).
    ``database`` must be a plain identifier (``ValueError`` otherwise): every query puts it into SQL."""
    check_database_name(database)
    if settings is not None:
        q.sync_insight_settings(client, database, settings)
    rules = settings or InsightSettings()
    thresholds = q.insight_thresholds(client, database)
    latest = q.latest_interaction(client, database)
    start, end = week_range(week, latest)
    min_edits = thresholds.get("min_pattern_edits", rules.min_pattern_edits)

    version_rates = q.version_rates(client, database, start, end)
    category_rates = q.category_rates(client, database, start, end)
    spikes = q.category_spikes(client, database, start, end)
    common = q.common_edits(
        client, database, start, end, thresholds.get("min_pattern_users", rules.min_pattern_users)
    )
    deletions = q.consistent_deletions(
        client,
        database,
        start,
        end,
        min_edits,
        thresholds.get("min_deletion_share", rules.min_deletion_share),
    )
    size_mix = q.edit_size_mix(client, database, start, end)

    trend_start = start - timedelta(weeks=TREND_WEEKS - 1)
    span = q.data_span(client, database, trend_start, end)
    grain = "hour" if span is None or span[1] - span[0] < timedelta(hours=48) else "day"
    trends = q.leading_indicators(client, database, trend_start, end, grain)

    disagreements = find_disagreements(version_rates, category_rates, rules.disagreement)
    candidates = candidate_issues(version_rates, spikes, common, deletions, size_mix, rules, min_edits)
    cap = thresholds.get("user_weight_cap", rules.user_weight_cap)
    issues = [
        _with_evidence(client, database, start, end, issue, disagreements, cap, rank)
        for rank, issue in enumerate(rank_issues(candidates, rules.top_issues), 1)
    ]
    return Report(
        database=database,
        week_start=start,
        week_end=end,
        generated_at=datetime.now(UTC),
        settings=rules,
        thresholds=thresholds,
        version_rates=version_rates,
        category_rates=category_rates,
        spikes=spikes,
        common_edits=common,
        deletions=deletions,
        edit_size_mix=size_mix,
        trend_grain=grain,
        trend_start=trend_start,
        trends=trends,
        disagreements=disagreements,
        issues=issues,
        changelog=q.changelog(client, database),
        experiments=q.experiment_results(client, database, start, end),
        experiment_decisions=q.experiment_decisions(client, database),
        loop=build_loop(client, database, start, end, datetime.now(UTC), rules),
    )


def build_loop(
    client: Client,
    database: str,
    week_start: datetime,
    week_end: datetime,
    now: datetime,
    rules: InsightSettings,
) -> LoopHealth:
    """The "Is the loop working?" section: ``rules.loop_weeks`` weeks ending with the report's week,
    judged as of ``now`` (a week or month not over by then is in progress, and not judged)."""
    start = week_start - timedelta(weeks=rules.loop_weeks - 1)
    first_month = datetime(start.year, start.month, 1, tzinfo=UTC)
    return assemble(
        start=start,
        end=week_end,
        as_of=now,
        weekly=q.weekly_indicators(client, database, start, week_end),
        engagement=q.engagement(client, database, start, week_end),
        cohorts=q.cohort_retention(client, database, start, week_end),
        tickets=q.support_ticket_rates(client, database, start, week_end),
        velocity=q.prompt_velocity(client, database, first_month, week_end),
        experiments=q.experiments_concurrent(client, database, start, week_end),
        fixes=[r for r in q.time_to_fix(client, database) if start <= _utc(r["registered_at"]) < week_end],
        fix_summary=q.time_to_fix_summary(client, database, start, week_end),
        regeneration_target=rules.regeneration_target,
        time_to_fix_target_days=rules.time_to_fix_target_days,
        tolerance=rules.trend_tolerance,
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ----------------------------------------------------------------------------------- pure ranking


def find_disagreements(
    version_rates: list[Row], category_rates: list[Row], threshold: float
) -> list[Disagreement]:
    """Rates whose per-interaction and capped values are more than ``threshold`` apart."""
    found = []
    for scope, rows in ((False, version_rates), (True, category_rates)):
        for row in rows:
            for metric in GUARDED_RATES:
                rate, capped = row.get(metric), row.get(f"{metric}_capped")
                if rate is None or capped is None or abs(rate - capped) <= threshold:
                    continue
                category = row["input_category"] if scope else None
                found.append(Disagreement(row["prompt_version"], category, metric, rate, capped))
    return found


def _size_severity(small: int, medium: int, large: int, rules: InsightSettings) -> float:
    total = small + medium + large
    if not total:
        return rules.severity_medium_edit
    weighted = (
        small * rules.severity_small_edit
        + medium * rules.severity_medium_edit
        + large * rules.severity_large_edit
    )
    return weighted / total


def candidate_issues(
    version_rates: list[Row],
    spikes: list[Row],
    common_edits: list[Row],
    deletions: list[Row],
    size_mix: list[Row],
    rules: InsightSettings,
    min_edits: float,
) -> list[Issue]:
    """Every issue the week's numbers support (unranked). Regenerations of a flagged category are
    an issue of their own and are not counted again in their version's regeneration issue."""
    issues: list[Issue] = []
    flagged: dict[str, list[Row]] = {}
    for spike in spikes:
        if spike["flagged"]:
            flagged.setdefault(spike["prompt_version"], []).append(spike)
    for row in version_rates:
        version = row["prompt_version"]
        in_spikes = 0
        for spike in flagged.get(version, []):
            in_spikes += int(spike["regenerations"])
            issues.append(
                Issue(
                    kind="segment",
                    title=f"{version}: '{spike['input_category']}' inputs are regenerated "
                    f"{spike['regeneration_rate']:.0%} of the time, {spike['ratio']:.1f}× the rest of "
                    f"{version} ({spike['rest_regeneration_rate']:.0%}); "
                    f"{spike['interactions']:,} interactions",
                    prompt_version=version,
                    category=spike["input_category"],
                    frequency=int(spike["regenerations"]),
                    severity=rules.severity_regeneration,
                )
            )
        rest = int(row["regenerations"]) - in_spikes
        if row["regeneration_rate"] >= rules.regeneration_target and rest > 0:
            others = " (other inputs)" if in_spikes else ""
            issues.append(
                Issue(
                    kind="regenerations",
                    title=f"{version}: regeneration rate {row['regeneration_rate']:.0%} (target under "
                    f"{rules.regeneration_target:.0%}); {rest:,} regenerations{others}",
                    prompt_version=version,
                    frequency=rest,
                    severity=rules.severity_regeneration,
                    excluded_categories=tuple(str(s["input_category"]) for s in flagged.get(version, [])),
                )
            )
        if row["thumbs_down"] > min_edits:
            issues.append(
                Issue(
                    kind="thumbs_down",
                    title=f"{version}: {row['thumbs_down']:,} thumbs-down ({row['thumbs_down_rate']:.0%})",
                    prompt_version=version,
                    frequency=int(row["thumbs_down"]),
                    severity=rules.severity_thumbs_down,
                )
            )
    for mix in size_mix:
        if mix["large"] > min_edits:
            issues.append(
                Issue(
                    kind="large_edits",
                    title=f"{mix['prompt_version']}: {mix['large']:,} large edits ({mix['large_share']:.0%} "
                    "of edits): the response missed what the user wanted",
                    prompt_version=mix["prompt_version"],
                    frequency=int(mix["large"]),
                    severity=rules.severity_large_edit,
                )
            )
    for edit in common_edits:
        issues.append(
            Issue(
                kind="edit_pattern",
                title=f"{edit['prompt_version']}: users replace “{edit['example_original']}” with "
                f"“{edit['example_corrected']}” ({edit['frequency']:,} edits, "
                f"{edit['distinct_users']:,} users)",
                prompt_version=edit["prompt_version"],
                frequency=int(edit["frequency"]),
                severity=_size_severity(
                    edit["in_small_edits"], edit["in_medium_edits"], edit["in_large_edits"], rules
                ),
                patterns=[edit],
            )
        )
    for deletion in deletions:
        issues.append(
            Issue(
                kind="deletion",
                title=f"{deletion['prompt_version']}: users delete the {deletion['position']} "
                f"{deletion['unit']} in {deletion['share']:.0%} of edits ({deletion['deleting_edits']:,} "
                f"of {deletion['edits']:,})",
                prompt_version=deletion["prompt_version"],
                frequency=int(deletion["deleting_edits"]),
                severity=_size_severity(
                    deletion["in_small_edits"], deletion["in_medium_edits"], deletion["in_large_edits"], rules
                ),
                patterns=[deletion],
            )
        )
    return issues


def rank_issues(issues: list[Issue], top: int) -> list[Issue]:
    """The ``top`` issues by score (frequency × severity), ties by frequency, then title."""
    return sorted(issues, key=lambda i: (-i.score, -i.frequency, i.title))[:top]


def evidence_of(issue: Issue, database: str) -> tuple[str, str | None, dict[str, Any]]:
    """What belongs to ``issue`` among the week's edit operations: a label, an SQL condition over
    edit_operation_rows (None: the issue's own pattern is its evidence) and its parameters."""
    regenerated = q.outcome_condition(database, "regenerated")
    excluded: dict[str, Any] = {"excluded": list(issue.excluded_categories)}
    without = (
        " AND NOT has(%(excluded)s, ifNull(input_category, '(none)'))" if issue.excluded_categories else ""
    )
    if issue.kind == "regenerations":
        others = " (other inputs)" if issue.excluded_categories else ""
        return f"Edits of the regenerated responses{others}", regenerated + without, excluded
    if issue.kind == "segment":
        return f"Edits of the regenerated '{issue.category}' responses", regenerated, {}
    if issue.kind == "thumbs_down":
        return "Edits of the thumbs-down responses", q.outcome_condition(database, "thumbs_down"), {}
    if issue.kind == "large_edits":
        return "Operations in the large edits", "edit_size = 'large'", {}
    if issue.kind == "deletion":
        p = issue.patterns[0]
        condition = "kind = 'delete' AND position = %(position)s AND unit = %(unit)s"
        return "The deletions", condition, {"position": p["position"], "unit": p["unit"]}
    return "The edit pattern", None, {}


def describe_pattern(p: Row) -> str:
    """An edit pattern or deletion row in words, e.g. ``replace (start sentence): here → hi``."""
    if "position" in p and "unit" in p and "kind" not in p:
        return f"delete {p['position']} {p['unit']}"
    kind = p.get("kind", "replace")
    where = f" ({p['position']} {p['unit']})" if "position" in p else ""
    if kind == "delete":
        return f"delete{where}: {p.get('original_fragment', '')}"
    if kind == "insert":
        return f"insert{where}: {p.get('corrected_fragment', '')}"
    return f"{kind}{where}: {p.get('original_fragment', '')} → {p.get('corrected_fragment', '')}"


def _with_evidence(
    client: Client,
    database: str,
    start: datetime,
    end: datetime,
    issue: Issue,
    disagreements: list[Disagreement],
    cap: float,
    rank: int,
) -> Issue:
    version, category = issue.prompt_version, issue.category
    label, condition, parameters = evidence_of(issue, database)
    if issue.kind == "edit_pattern":
        p = issue.patterns[0]
        segments = q.segments_of_operation(
            client,
            database,
            start,
            end,
            version,
            "kind = 'replace' AND original_norm = %(a)s AND corrected_norm = %(b)s",
            {"a": p["original_fragment"], "b": p["corrected_fragment"]},
        )
        patterns = issue.patterns
    elif issue.kind == "deletion":
        assert condition is not None
        segments = q.segments_of_operation(client, database, start, end, version, condition, parameters)
        patterns = q.patterns_behind(
            client, database, start, end, version, condition=condition, parameters=parameters
        )
    else:
        metric = {"thumbs_down": "thumbs_down", "large_edits": "large_edits"}.get(issue.kind, "regenerations")
        segments = [
            {"input_category": r["input_category"], metric: r[metric], "interactions": r["interactions"]}
            for r in q.category_rates(client, database, start, end)
            if r["prompt_version"] == version
            and (category is None or r["input_category"] == category)
            and r["input_category"] not in issue.excluded_categories
            and metric in r
        ]
        segments.sort(key=lambda r: -int(r[metric]))
        patterns = q.patterns_behind(
            client, database, start, end, version, category, condition=condition, parameters=parameters
        )
    caveat = None
    metric_of = {"regenerations": "regeneration_rate", "segment": "regeneration_rate"}
    for d in disagreements:
        if d.prompt_version == version and d.category == category and d.metric == metric_of.get(issue.kind):
            caveat = (
                f"per interaction {d.rate:.0%}, but {d.capped:.0%} with each user capped at "
                f"{cap:g} interactions: a few heavy users drive this rate"
            )
    return Issue(
        kind=issue.kind,
        title=issue.title,
        prompt_version=version,
        frequency=issue.frequency,
        severity=issue.severity,
        category=category,
        caveat=caveat,
        segments=segments,
        patterns=patterns,
        rank=rank,
        excluded_categories=issue.excluded_categories,
        evidence=label,
    )


__all__ = [
    "Disagreement",
    "Issue",
    "Report",
    "build_loop",
    "build_report",
    "describe_pattern",
    "evidence_of",
    "rank_issues",
    "week_range",
]
