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
from datetime import datetime
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
