"""Expected outcomes and window metrics, computed from the generator's own record.

This is a second, deliberately plain implementation of the README's definitions. It works from
what the simulated users did (``PlannedInteraction.actions`` and the generator's intent for the
next call in a session), not from the events the pipeline saw, so it shares no code with the
stream processors. It reads only the contract: which window metrics the signal registry
(``schemas.signals``) declares, and computes them here with its own arithmetic.

Adding a signal: put its expected value in ``_expected`` (a unit test fails until every declared
signal is there); its window metrics follow from the declaration.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from rapidfuzz.distance import Levenshtein

from infra.settings import SignalSettings
from producers.synthetic import PlannedInteraction, UserAction, Workload
from schemas import FeedbackType
from schemas.signals import SIGNALS, Aggregate

T = FeedbackType


def _ms(planned_at: datetime) -> int:
    return round(planned_at.timestamp() * 1000)


def expected_outcomes(workload: Workload, rules: SignalSettings | None = None) -> dict[str, dict[str, Any]]:
    """Expected outcome fields per interaction id (str)."""
    rules = rules or SignalSettings()
    planned = workload.interactions
    children: dict[uuid.UUID, list[PlannedInteraction]] = defaultdict(list)
    sessions: dict[str, list[PlannedInteraction]] = defaultdict(list)
    for p in planned.values():
        if p.event.regenerated_from is not None:
            children[p.event.regenerated_from].append(p)
        sessions[p.event.session_id].append(p)
    for members in sessions.values():
        members.sort(key=lambda p: (_ms(p.event.created_at), str(p.event.interaction_id)))

    out: dict[str, dict[str, Any]] = {}
    for members in sessions.values():
        for index, p in enumerate(members):
            nxt = members[index + 1] if index + 1 < len(members) else None
            out[str(p.event.interaction_id)] = _expected(p, children[p.event.interaction_id], nxt, rules)
    return out


def _expected(
    p: PlannedInteraction,
    children: list[PlannedInteraction],
    nxt: PlannedInteraction | None,
    rules: SignalSettings,
) -> dict[str, Any]:
    x = p.event
    t0 = _ms(x.created_at)
    acts = p.actions

    def of(kind: FeedbackType) -> list[UserAction]:
        return [a for a in acts if a.feedback_type is kind]

    regen_times = [_ms(a.at) for a in of(T.REGENERATE)] + [_ms(c.event.created_at) for c in children]
    edits = sorted(of(T.EDIT), key=lambda a: (_ms(a.at), str(a.event_id)))
    edit = edits[-1] if edits else None
    distance = norm = words = size = None
    if edit is not None:
        corrected = edit.corrected_output or ""
        distance = Levenshtein.distance(x.response, corrected)
        longest = max(len(x.response), len(corrected))
        norm = distance / longest if longest else 0.0
        words = Levenshtein.distance(x.response.split(), corrected.split())
        size = (
            "small"
            if norm <= rules.edit_small_max_norm
            else "large"
            if norm >= rules.edit_large_min_norm
            else "medium"
        )
    copies = [a.copied_chars or 0 for a in of(T.COPY)]
    fraction = min(1.0, max(copies) / len(x.response)) if copies and x.response else None

    rephrased = clarifying = False
    next_id = None
    if nxt is not None:
        gap = _ms(nxt.event.created_at) - t0
        if gap <= max(rules.rephrase_window_s, rules.followup_window_s) * 1000:
            next_id = nxt.event.interaction_id
        rephrased = p.next_kind == "rephrase" and gap <= rules.rephrase_window_s * 1000
        clarifying = p.next_kind == "followup" and gap <= rules.followup_window_s * 1000

    window = rules.abandon_window_s * 1000
    engaged_kinds = {T.COPY, T.ACCEPT, T.EDIT, T.THUMBS_UP, T.REGENERATE}
    engaged = any(a.feedback_type in engaged_kinds and _ms(a.at) - t0 <= window for a in acts) or any(
        _ms(c.event.created_at) - t0 <= window for c in children
    )
    positive = any(a.feedback_type in {T.COPY, T.ACCEPT, T.EDIT, T.THUMBS_UP} for a in acts)
    short_dwell = not positive and any((a.dwell_ms or 0) < rules.short_dwell_ms for a in of(T.VIEW_END))
    corrections = regen_times + [_ms(a.at) for a in of(T.THUMBS_DOWN)] + [_ms(a.at) for a in edits]
    if rephrased and nxt is not None:
        corrections.append(_ms(nxt.event.created_at))
    accepted = bool(of(T.ACCEPT))
    return {
        "user_id": x.user_id,
        "session_id": x.session_id,
        "prompt": x.prompt,
        "prompt_version": x.prompt_version,
        "model": x.model,
        "input_category": x.input_category,
        "response_chars": len(x.response),
        "response_time_ms": x.response_time_ms,
        "interaction_created_at_ms": t0,
        "feedback_events": len(acts),
        "regenerated": bool(regen_times),
        "edited": edit is not None,
        "edit_distance": distance,
        "edit_distance_norm": norm,
        "word_edit_distance": words,
        "edit_size": size,
        "thumbs_up": bool(of(T.THUMBS_UP)),
        "thumbs_down": bool(of(T.THUMBS_DOWN)),
        "copied": bool(copies),
        "copied_fraction": fraction,
        "partial_copy": fraction is not None and fraction < rules.partial_copy_below,
        "accepted": accepted,
        "rephrased": rephrased,
        "clarifying_followup": clarifying,
        "next_interaction_id": next_id,
        "abandoned": not engaged,
        "short_dwell": short_dwell,
        "corrected": bool(corrections),
        "time_to_first_correction_ms": min(corrections) - t0 if corrections else None,
        "completed_without_edit": (bool(copies) or accepted) and not corrections,
    }


def expected_windows(
    outcomes: dict[str, dict[str, Any]], window_s: int = 60
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Expected window metrics keyed by (window_start_ms, prompt_version, model, input_category)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes.values():
        start = o["interaction_created_at_ms"] - o["interaction_created_at_ms"] % (window_s * 1000)
        groups[(start, o["prompt_version"], o["model"], o["input_category"])].append(o)
    result = {}
    for key, rows in groups.items():
        latencies = sorted(r["response_time_ms"] for r in rows)
        expected: dict[str, Any] = {
            "interactions": len(rows),
            "distinct_users": len({r["user_id"] for r in rows}),
            "response_time_mean_ms": sum(latencies) / len(latencies),
            "response_time_p95_ms": latencies[math.ceil(0.95 * len(latencies)) - 1],
        }
        for signal in SIGNALS:
            present = [r[signal.name] for r in rows if r[signal.name] is not None]
            for metric in signal.window:
                if metric.aggregate is Aggregate.COUNT:
                    expected[metric.name] = sum(1 for value in present if value is True)
                elif metric.aggregate is Aggregate.SUM:
                    expected[metric.name] = sum(present)
                else:
                    expected[metric.name] = sum(present) / len(present) if present else None
        result[key] = expected
    return result


def expected_regeneration_rates(outcomes: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int, float]]:
    """prompt_version -> (total_interactions, regenerations, regeneration_rate)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in outcomes.values():
        totals[o["prompt_version"]][0] += 1
        totals[o["prompt_version"]][1] += o["regenerated"]
    return {v: (n, r, r / n) for v, (n, r) in totals.items()}


# ------------------------------------------------------------------ is the loop working? (issue 17)
#
# Weeks are ISO weeks in UTC, keyed by the epoch milliseconds of their Monday 00:00. A number that needs a
# week that is not over yet at ``now_ms`` (default: the wall clock) is None.

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
ALL = "(all)"


def week_of(epoch_ms: int) -> int:
    """Monday 00:00 UTC of the week holding ``epoch_ms`` (1970-01-01 was a Thursday)."""
    day = epoch_ms // DAY_MS
    return (day - (day + 3) % 7) * DAY_MS


def month_of(epoch_ms: int) -> int:
    """The first day of the month holding ``epoch_ms``, 00:00 UTC, in epoch ms."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return round(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


def _now(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else round(datetime.now(UTC).timestamp() * 1000)


def expected_engagement(
    outcomes: dict[str, dict[str, Any]], now_ms: int | None = None
) -> dict[tuple[int, str], dict[str, Any]]:
    """(week, prompt_version or '(all)') -> active_users, interactions, interactions_per_active_user,
    returning_users (active the next week, with any version), next_week_return_rate."""
    active: dict[int, set[str]] = defaultdict(set)
    groups: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for o in outcomes.values():
        week = week_of(o["interaction_created_at_ms"])
        active[week].add(o["user_id"])
        for version in (o["prompt_version"], ALL):
            groups[(week, version)][o["user_id"]] += 1
    now = _now(now_ms)
    result = {}
    for (week, version), users in groups.items():
        n = sum(users.values())
        back = sum(1 for u in users if u in active.get(week + WEEK_MS, set()))
        covered = now >= week + 2 * WEEK_MS
        result[(week, version)] = {
            "active_users": len(users),
            "interactions": n,
            "interactions_per_active_user": n / len(users),
            "returning_users": back,
            "next_week_return_rate": back / len(users) if covered else None,
        }
    return result


def expected_weekly_indicators(outcomes: dict[str, dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """(week, prompt_version or '(all)') -> interactions, regeneration_rate, avg_edit_distance (over
    edited interactions), avg_time_to_first_correction_ms (over corrected ones)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes.values():
        week = week_of(o["interaction_created_at_ms"])
        groups[(week, o["prompt_version"])].append(o)
        groups[(week, ALL)].append(o)

    def mean(values: list[int]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        key: {
            "interactions": len(rows),
            "regeneration_rate": sum(r["regenerated"] for r in rows) / len(rows),
            "avg_edit_distance": mean([r["edit_distance"] for r in rows if r["edit_distance"] is not None]),
            "avg_time_to_first_correction_ms": mean(
                [
                    r["time_to_first_correction_ms"]
                    for r in rows
                    if r["time_to_first_correction_ms"] is not None
                ]
            ),
        }
        for key, rows in groups.items()
    }


def expected_cohorts(
    outcomes: dict[str, dict[str, Any]], now_ms: int | None = None
) -> dict[int, dict[str, Any]]:
    """First-seen week -> users, active_week_{1,2,4} and retention_week_{1,2,4}."""
    weeks: dict[str, set[int]] = defaultdict(set)
    for o in outcomes.values():
        weeks[o["user_id"]].add(week_of(o["interaction_created_at_ms"]))
    cohorts: dict[int, list[set[int]]] = defaultdict(list)
    for seen in weeks.values():
        cohorts[min(seen)].append(seen)
    now = _now(now_ms)
    result = {}
    for cohort, members in cohorts.items():
        row: dict[str, Any] = {"users": len(members)}
        for k in (1, 2, 4):
            back = sum(1 for seen in members if cohort + k * WEEK_MS in seen)
            row[f"active_week_{k}"] = back
            row[f"retention_week_{k}"] = back / len(members) if now >= cohort + (k + 1) * WEEK_MS else None
        result[cohort] = row
    return result


def latest_tickets(tickets: Any) -> dict[str, Any]:
    """The tickets as the table keeps them: the last copy published of each ticket_id."""
    return {t.ticket_id: t for t in tickets}


def expected_ticket_links(outcomes: dict[str, dict[str, Any]], tickets: Any) -> dict[str, str | None]:
    """ticket_id -> the prompt version it counts for (None: not linked). A ticket is linked when its
    interaction exists and belongs to the ticket's user."""
    links: dict[str, str | None] = {}
    for ticket_id, t in latest_tickets(tickets).items():
        o = outcomes.get(str(t.interaction_id)) if t.interaction_id is not None else None
        links[ticket_id] = o["prompt_version"] if o is not None and o["user_id"] == t.user_id else None
    return links


def expected_ticket_rates(
    outcomes: dict[str, dict[str, Any]], tickets: Any
) -> dict[tuple[int, str], dict[str, Any]]:
    """(week, prompt_version or '(all)') -> interactions, tickets, ai_quality_tickets,
    ai_quality_tickets_linked, ai_quality_tickets_per_1000. Per version: the tickets linked to it."""
    rows: dict[tuple[int, str], dict[str, int]] = defaultdict(
        lambda: {"interactions": 0, "tickets": 0, "ai_quality_tickets": 0, "ai_quality_tickets_linked": 0}
    )
    for o in outcomes.values():
        week = week_of(o["interaction_created_at_ms"])
        for version in (o["prompt_version"], ALL):
            rows[(week, version)]["interactions"] += 1
    links = expected_ticket_links(outcomes, tickets)
    for ticket_id, t in latest_tickets(tickets).items():
        week = week_of(round(t.created_at.timestamp() * 1000))
        version = links[ticket_id]
        keys = [ALL] + ([version] if version is not None else [])
        for key in keys:
            row = rows[(week, key)]
            row["tickets"] += 1
            row["ai_quality_tickets"] += t.ai_quality
            row["ai_quality_tickets_linked"] += t.ai_quality and version is not None
    return {
        key: {
            **row,
            "ai_quality_tickets_per_1000": row["ai_quality_tickets"] * 1000 / row["interactions"]
            if row["interactions"]
            else None,
        }
        for key, row in rows.items()
    }


def expected_velocity(
    registered: dict[str, int], promoted: dict[str, int]
) -> dict[int, tuple[int, int, list[str], list[str]]]:
    """Month -> (versions registered, versions promoted, their labels sorted), from each version's
    registration and first promotion time (epoch ms)."""
    months: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for version, at in registered.items():
        months[month_of(at)][0].append(version)
    for version, at in promoted.items():
        months[month_of(at)][1].append(version)
    return {m: (len(r), len(p), sorted(r), sorted(p)) for m, (r, p) in months.items()}


def expected_concurrent(
    runs: dict[str, tuple[int, int | None]], first_ms: int, now_ms: int
) -> dict[int, list[str]]:
    """Week -> the experiments running at some moment of it, from each experiment's (start, end or None)
    in epoch ms; every week from ``first_ms``'s to ``now_ms``'s."""
    result = {}
    for week in range(week_of(first_ms), week_of(now_ms) + 1, WEEK_MS):
        result[week] = sorted(
            e for e, (start, end) in runs.items() if start < week + WEEK_MS and (end is None or end > week)
        )
    return result


def expected_time_to_fix(
    fixes: list[tuple[str, str, int, int | None, int | None]],
) -> tuple[list[tuple[str, str, float | None, float | None]], float | None, float | None]:
    """Per (version, ref, registered ms, promoted ms or None, first appearance ms or None): the days to
    registration and to promotion (None without a first appearance before registration); and the
    medians of each (mean of the middle two for an even count)."""
    rows = []
    for version, ref, registered, promoted, first in fixes:
        seen = first if first is not None and first < registered else None
        to_register = (registered - seen) / DAY_MS if seen is not None else None
        to_promote = (promoted - seen) / DAY_MS if seen is not None and promoted is not None else None
        rows.append((version, ref, to_register, to_promote))

    def median(values: list[float]) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    return (
        rows,
        median([r[2] for r in rows if r[2] is not None]),
        median([r[3] for r in rows if r[3] is not None]),
    )
