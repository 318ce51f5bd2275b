"""'Is the loop working?': the leading indicators, the lagging ones and the velocity metrics as trends,
each next to its target and flagged when it moves the wrong way.

The blog post behind the project names three groups of metrics that tell whether a feedback loop works:
the leading indicators (regeneration rate, edit distance, time to first correction), the lagging ones that
follow when prompts get better (engagement, retention, support tickets about AI quality) and velocity
(prompt versions shipped, experiments running, time from feedback to fix). This module is pure: it takes
the rows of the views (``reporting.queries``) and returns an :class:`LoopHealth`; ``reporting.model``
reads the rows, the renderers show the result.

**Complete periods.** A week or month is complete once it is over (the wall clock is past its end); the
one in progress is shown but never judged (a half week has fewer active users, not a worse product).

**Moving the wrong way.** An indicator's *latest* value is its last complete period's; its *baseline*
the mean of up to :data:`BASELINE_PERIODS` complete periods before it. With at least
:data:`MIN_PERIODS` complete values, it *rises* (*falls*) when the latest differs from the baseline by
more than ``trend_tolerance`` of the baseline (a baseline of 0: any rise). It is flagged when it moves
against its good direction. A level target (regeneration under 15 %, time to fix under 2 weeks) is met
or missed on the latest value (for time to fix: the median), and a missed level target is flagged too.
One flag combines two: a falling regeneration rate while engagement (active users or the next-week
return rate) falls as well — "Low regeneration rate is meaningless if users abandon the feature."
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

Row = dict[str, Any]

#: Complete periods averaged into an indicator's baseline.
BASELINE_PERIODS = 4
#: Complete values an indicator needs before its direction is judged (the latest and two before it).
MIN_PERIODS = 3
#: The prompt_version of the views' overall rows.
ALL = "(all)"
ABANDON_WARNING = "Low regeneration rate is meaningless if users abandon the feature"


class Good(StrEnum):
    """The direction in which an indicator gets better."""

    UP = "up"
    DOWN = "down"


class Unit(StrEnum):
    """How an indicator's values read."""

    SHARE = "share"
    COUNT = "count"
    NUMBER = "number"
    MILLISECONDS = "ms"
    DAYS = "days"
    PER_1000 = "per 1,000"


@dataclass(frozen=True)
class Point:
    """One period of a trend: its start (a Monday, the first of a month, or a registration time), the
    value (None: no data), and whether the period is complete. ``label`` names it (a prompt version)."""

    start: datetime
    value: float | None
    complete: bool = True
    label: str = ""


@dataclass(frozen=True)
class Indicator:
    """One metric's trend, target and verdict (see the module docstring)."""

    key: str
    name: str
    group: str
    unit: Unit
    good: Good
    target: str
    points: tuple[Point, ...]
    #: What the points are, in the plural: weeks, months, cohorts, fixes.
    periods: str = "weeks"
    target_max: float | None = None
    #: Judged against the target on this value (the median of a range) instead of the latest period's.
    median: float | None = None
    by_median: bool = False
    latest: float | None = None
    baseline: float | None = None
    change: float | None = None
    direction: str = "unknown"
    on_target: bool | None = None
    flag: str | None = None

    @property
    def level(self) -> float | None:
        """The value the target applies to: the median when ``by_median``, else the latest."""
        return self.median if self.by_median else self.latest

    @property
    def verdict(self) -> str:
        """A few words for a status column: 'rising, target missed', 'on target, falling', 'too few weeks'."""
        if self.direction == "unknown" and self.on_target is None:
            return f"too few {self.periods}"
        moved = {"up": "rising", "down": "falling", "flat": "steady"}.get(self.direction, "")
        target = {True: "on target", False: "target missed", None: ""}[self.on_target]
        words = [target, moved] if self.on_target else [moved, target]
        return ", ".join(w for w in words if w)

    @property
    def judged(self) -> list[Point]:
        """The complete points with a value, oldest first."""
        return [p for p in self.points if p.complete and p.value is not None]


@dataclass(frozen=True)
class LoopHealth:
    """The section: its weeks, the indicators with their verdicts, and the tables behind them."""

    start: datetime
    end: datetime
    as_of: datetime | None
    indicators: tuple[Indicator, ...]
    flags: tuple[str, ...]
    engagement: list[Row] = field(default_factory=list)
    tickets: list[Row] = field(default_factory=list)
    cohorts: list[Row] = field(default_factory=list)
    velocity: list[Row] = field(default_factory=list)
    experiments: list[Row] = field(default_factory=list)
    fixes: list[Row] = field(default_factory=list)
    fix_summary: Row = field(default_factory=dict)

    def indicator(self, key: str) -> Indicator:
        """The indicator named ``key`` (KeyError if there is none)."""
        for found in self.indicators:
            if found.key == key:
                return found
        raise KeyError(key)

    @property
    def weeks(self) -> list[datetime]:
        """The Mondays of the section's weeks, oldest first."""
        count = (self.end - self.start) // timedelta(weeks=1)
        return [self.start + timedelta(weeks=n) for n in range(count)]


# ----------------------------------------------------------------------------------- verdicts


def judge(indicator: Indicator, tolerance: float) -> Indicator:
    """``indicator`` with its latest value, baseline, direction, target verdict and flag filled in."""
    values = [p.value for p in indicator.judged if p.value is not None]
    latest = values[-1] if values else None
    level = indicator.median if indicator.by_median else latest
    on_target = None if level is None or indicator.target_max is None else level <= indicator.target_max
    baseline = change = None
    direction = "unknown"
    if len(values) >= MIN_PERIODS:
        before = values[-1 - BASELINE_PERIODS : -1]
        baseline = sum(before) / len(before)
        assert latest is not None
        if baseline:
            change = (latest - baseline) / abs(baseline)
            direction = "up" if change > tolerance else "down" if change < -tolerance else "flat"
        else:
            direction = "up" if latest > 0 else "flat"
    flag = None
    wrong = "down" if indicator.good is Good.UP else "up"
    if direction == wrong:
        moved = "rising" if direction == "up" else "falling"
        against = f"{change:+.0%} against" if change is not None else "from 0 over"
        span = len(values) - 1 if len(values) - 1 < BASELINE_PERIODS else BASELINE_PERIODS
        flag = f"{indicator.name} is {moved} ({against} the {span} {indicator.periods} before)"
    if on_target is False:
        what = "the median" if indicator.by_median else "the latest"
        missed = f"{what} misses the target ({indicator.target})"
        flag = f"{indicator.name}: {missed}" if flag is None else f"{flag}; {missed}"
    return replace(
        indicator,
        latest=latest,
        baseline=baseline,
        change=change,
        direction=direction,
        on_target=on_target,
        flag=flag,
    )


def combined_flags(indicators: Sequence[Indicator]) -> list[str]:
    """Flags that need two indicators: regeneration falling while engagement falls too."""
    by_key = {i.key: i for i in indicators}
    regeneration = by_key.get("regeneration_rate")
    if regeneration is None or regeneration.direction != "down":
        return []
    falling = [
        by_key[k].name.lower()
        for k in ("weekly_active_users", "next_week_return_rate")
        if k in by_key and by_key[k].direction == "down"
    ]
    if not falling:
        return []
    return [f"Regeneration is falling while engagement falls too ({', '.join(falling)}): {ABANDON_WARNING}."]


# ----------------------------------------------------------------------------------- assembly


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _months(start: datetime, end: datetime) -> list[datetime]:
    """The first day of every month that overlaps ``[start, end)``."""
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    found = []
    while month < end:
        found.append(month)
        month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return found


def _next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def _series(
    periods: Iterable[datetime],
    rows: Iterable[Row],
    key: str,
    column: str,
    length: timedelta | Callable[[datetime], datetime],
    as_of: datetime | None,
    missing: float | None = None,
) -> tuple[Point, ...]:
    by_start = {_utc(r[key]): r for r in rows}
    points = []
    for start in periods:
        end = length(start) if callable(length) else start + length
        row = by_start.get(start)
        value = row[column] if row is not None else missing
        points.append(
            Point(start, None if value is None else float(value), as_of is not None and as_of >= end)
        )
    return tuple(points)


def assemble(
    *,
    start: datetime,
    end: datetime,
    as_of: datetime | None,
    weekly: list[Row],
    engagement: list[Row],
    cohorts: list[Row],
    tickets: list[Row],
    velocity: list[Row],
    experiments: list[Row],
    fixes: list[Row],
    fix_summary: Row,
    regeneration_target: float,
    time_to_fix_target_days: float,
    tolerance: float,
) -> LoopHealth:
    """The section from the views' rows over the weeks ``[start, end)`` (Mondays), judged as of
    ``as_of`` (the wall clock: periods not over by then are in progress): weekly rows of
    ``weekly_indicators``, ``engagement`` and ``support_ticket_rates``; ``cohort_retention``; months of
    ``prompt_velocity``; weeks of ``experiments_concurrent``; ``time_to_fix`` rows of the versions
    registered in the range and its summary."""
    weeks = [start + timedelta(weeks=n) for n in range((end - start) // timedelta(weeks=1))]
    week = timedelta(weeks=1)
    overall = [r for r in weekly if r["prompt_version"] == ALL]
    engaged = [r for r in engagement if r["prompt_version"] == ALL]
    ticketed = [r for r in tickets if r["prompt_version"] == ALL]
    months = _months(start, end)
    # A cohort's week-1 retention is known once the week after it is complete: the view gives NULL before.
    cohort_points = tuple(
        Point(w, _float(next((r["retention_week_1"] for r in cohorts if _utc(r["cohort_week"]) == w), None)))
        for w in weeks
    )
    ordered_fixes = sorted(fixes, key=lambda r: (_utc(r["registered_at"]), r["version"], r["ref"]))

    def fix_points(column: str) -> tuple[Point, ...]:
        return tuple(
            Point(_utc(r["registered_at"]), _float(r[column]), True, f"{r['version']}: {r['ref']}")
            for r in ordered_fixes
        )

    days = f"under {time_to_fix_target_days:g} days"
    raw = [
        Indicator("regeneration_rate", "Regeneration rate", "leading", Unit.SHARE, Good.DOWN,
                  f"under {regeneration_target:.0%}",
                  _series(weeks, overall, "week_start", "regeneration_rate", week, as_of),
                  target_max=regeneration_target),
        Indicator("avg_edit_distance", "Mean edit distance", "leading", Unit.NUMBER, Good.DOWN, "falling",
                  _series(weeks, overall, "week_start", "avg_edit_distance", week, as_of)),
        Indicator("avg_time_to_first_correction_ms", "Time to first correction", "leading",
                  Unit.MILLISECONDS, Good.UP, "rising",
                  _series(weeks, overall, "week_start", "avg_time_to_first_correction_ms", week, as_of)),
        Indicator("weekly_active_users", "Weekly active users", "lagging", Unit.COUNT, Good.UP, "rising",
                  _series(weeks, engaged, "week_start", "active_users", week, as_of)),
        Indicator("interactions_per_active_user", "Interactions per user", "lagging", Unit.NUMBER,
                  Good.UP, "rising",
                  _series(weeks, engaged, "week_start", "interactions_per_active_user", week, as_of)),
        Indicator("next_week_return_rate", "Next-week return rate", "lagging", Unit.SHARE, Good.UP, "rising",
                  tuple(replace(p, complete=p.value is not None) for p in
                        _series(weeks, engaged, "week_start", "next_week_return_rate", week, as_of))),
        Indicator("retention_week_1", "Week-1 cohort retention", "lagging", Unit.SHARE, Good.UP, "rising",
                  cohort_points, periods="cohorts"),
        Indicator("ai_quality_tickets", "AI-quality tickets", "lagging", Unit.COUNT, Good.DOWN,
                  "falling", _series(weeks, ticketed, "week_start", "ai_quality_tickets", week, as_of)),
        Indicator("ai_quality_tickets_per_1000", "AI-quality tickets per 1,000", "lagging",
                  Unit.PER_1000, Good.DOWN, "falling",
                  _series(weeks, ticketed, "week_start", "ai_quality_tickets_per_1000", week, as_of)),
        Indicator("versions_registered", "Versions registered / month", "velocity", Unit.COUNT,
                  Good.UP, "rising",
                  _series(months, velocity, "month_start", "versions_registered", _next_month, as_of, 0),
                  periods="months"),
        Indicator("versions_promoted", "Versions shipped / month", "velocity",
                  Unit.COUNT, Good.UP, "rising",
                  _series(months, velocity, "month_start", "versions_promoted", _next_month, as_of, 0),
                  periods="months"),
        Indicator("experiments_running", "Experiments running", "velocity", Unit.COUNT,
                  Good.UP, "rising",
                  _series(weeks, experiments, "week_start", "experiments_running", week, as_of)),
        # Time from feedback to fix: one point per addressed pattern, in order of registration; judged
        # against the target on the median of the range, not on the last version alone.
        Indicator("days_to_register", "Time to fix (registered)", "velocity", Unit.DAYS,
                  Good.DOWN, days, fix_points("days_to_register"), periods="fixes",
                  target_max=time_to_fix_target_days,
                  median=_float(fix_summary.get("median_days_to_register")), by_median=True),
        Indicator("days_to_promote", "Time to fix (promoted)", "velocity", Unit.DAYS,
                  Good.DOWN, days, fix_points("days_to_promote"), periods="fixes",
                  target_max=time_to_fix_target_days,
                  median=_float(fix_summary.get("median_days_to_promote")), by_median=True),
    ]  # fmt: skip
    judged = [judge(i, tolerance) for i in raw]
    flags = [i.flag for i in judged if i.flag] + combined_flags(judged)
    report_week = start + timedelta(weeks=len(weeks) - 1) if weeks else start
    return LoopHealth(
        start=start,
        end=end,
        as_of=as_of,
        indicators=tuple(judged),
        flags=tuple(flags),
        engagement=_week_rows(engagement, report_week),
        tickets=_week_rows(tickets, report_week),
        cohorts=sorted(cohorts, key=lambda r: _utc(r["cohort_week"])),
        velocity=sorted(velocity, key=lambda r: _utc(r["month_start"])),
        experiments=sorted(experiments, key=lambda r: _utc(r["week_start"])),
        fixes=ordered_fixes,
        fix_summary=fix_summary,
    )


def _week_rows(rows: list[Row], week: datetime) -> list[Row]:
    """The rows of ``week``, the overall row first, then the versions in order."""
    found = [r for r in rows if _utc(r["week_start"]) == week]
    return sorted(found, key=lambda r: (r["prompt_version"] != ALL, str(r["prompt_version"])))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = [
    "ABANDON_WARNING",
    "ALL",
    "BASELINE_PERIODS",
    "MIN_PERIODS",
    "Good",
    "Indicator",
    "LoopHealth",
    "Point",
    "Unit",
    "assemble",
    "combined_flags",
    "judge",
]
