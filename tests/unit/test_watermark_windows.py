"""Event time per partition, and tumbling windows whose members can be replaced by later versions."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
import pytest

from schemas import PromptVersionMetrics
from schemas.signals import WINDOWED_SIGNALS
from stream_processors.watermark import Watermark
from stream_processors.windows import WindowState, aggregate_window, nearest_rank
from tests.support.outcomes import neutral_signals

A, B = "interactions", "feedback"


def watermark() -> Watermark:
    w = Watermark(allowed_lateness_ms=1000, idle_advance_ms=5000)
    w.register(A, B)
    return w


def test_an_input_nothing_is_known_about_holds_time_still() -> None:
    w = watermark()
    w.observe(A, 100_000, wall_ms=0)
    assert w.advance(wall_ms=0) == 0  # B may still hold older events


def test_the_slowest_unread_input_sets_the_pace() -> None:
    w = watermark()
    w.observe(A, 100_000, 0)
    w.observe(B, 40_000, 0)
    assert w.advance(0) == 39_000
    w.set_caught_up(B, True)
    assert w.advance(0) == 99_000  # B is read to its end: it cannot hold time back


def test_the_watermark_never_goes_back() -> None:
    w = watermark()
    w.observe(A, 100_000, 0)
    w.observe(B, 100_000, 0)
    assert w.advance(0) == 99_000
    w.observe(B, 10_000, 0)
    assert w.advance(0) == 99_000


def test_a_quiet_partition_follows_the_wall_clock_only_when_read_to_its_end() -> None:
    w = watermark()
    w.observe(A, 100_000, wall_ms=1_000)
    w.observe(B, 100_000, wall_ms=1_000)
    assert w.advance(wall_ms=900_000) == 99_000  # idle, but not known to be read to the end
    w.set_caught_up(A, True)
    w.set_caught_up(B, True)
    assert w.advance(wall_ms=5_999) == 99_000  # not idle long enough
    assert w.advance(wall_ms=900_000) == 899_000


def member(version: int = 1, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "interaction_id": str(uuid.uuid4()),
        "version": version,
        "window_start_ms": 60_000,
        "prompt_version": "v1.0",
        "model": "m",
        "input_category": None,
        "user_id": "u1",
        "response_time_ms": 100,
        # Every signal a window aggregates: flags off, numbers absent.
        **neutral_signals(WINDOWED_SIGNALS),
    }
    row.update(kw)
    return row


def test_nearest_rank_percentile() -> None:
    assert nearest_rank([1], 0.95) == 1
    assert nearest_rank(list(range(1, 21)), 0.95) == 19
    assert nearest_rank(list(range(1, 101)), 0.95) == 95


def test_aggregates_count_means_users_and_p95() -> None:
    rows = [
        member(
            user_id="a", regenerated=True, corrected=True, response_time_ms=100, time_to_first_correction_ms=5
        ),
        member(user_id="a", edited=True, edit_distance=10, edit_distance_norm=0.5, response_time_ms=300),
        member(user_id="b", version=3, response_time_ms=200),
    ]
    agg = aggregate_window(60_000, 60_000, rows)
    PromptVersionMetrics.model_validate(agg)
    assert (agg["interactions"], agg["regenerations"], agg["edits"], agg["distinct_users"]) == (3, 1, 1, 2)
    assert agg["version"] == 5
    assert agg["edit_distance_sum"] == 10
    assert agg["edit_distance_mean"] == 10
    assert agg["response_time_mean_ms"] == 200
    assert agg["response_time_p95_ms"] == 300
    assert agg["time_to_first_correction_mean_ms"] == 5
    assert agg["window_start"] == "1970-01-01T00:01:00.000Z"
    assert agg["window_end"] == "1970-01-01T00:02:00.000Z"
    with pytest.raises(ValueError, match="at least one"):
        aggregate_window(0, 60_000, [])


def test_a_higher_version_replaces_a_member_and_replays_change_nothing() -> None:
    state = WindowState(0, 60_000, retention_ms=3_600_000)
    first = member()
    state.apply("w", first)
    state.apply("w", {**first, "version": 2, "regenerated": True})
    state.apply("w", first)  # a replay of the older version
    (window, agg), *_ = state.emissions()
    assert window == "w"
    assert agg["interactions"] == 1
    assert agg["regenerations"] == 1
    assert agg["version"] == 2
    state.apply("w", {**first, "version": 2, "regenerated": True})
    assert state.emissions() == []


def test_windows_restore_from_their_changelog_and_expire_behind_the_retention() -> None:
    state = WindowState(0, 60_000, retention_ms=120_000)
    state.apply("old", member())
    upserts, _ = state.take_changes()
    restored = WindowState.restore(0, 60_000, 120_000, upserts.items())
    assert restored.windows.keys() == {"old"}
    assert WindowState.restore(1, 60_000, 120_000, upserts.items()).windows == {}
    restored.apply("new", member(window_start_ms=600_000))
    restored.expire()
    _, deleted = restored.take_changes()
    assert restored.windows.keys() == {"new"}
    assert len(deleted) == 1
    restored.apply("old", member())  # too late for a window that is gone
    assert restored.late_dropped == 1
    assert "old" not in restored.windows
    assert orjson.loads(next(iter(upserts.values())))["p"] == 0


def test_running_aggregates_equal_the_aggregate_of_the_members_through_amendments_and_restores() -> None:
    rng = random.Random(7)
    state = WindowState(0, 60_000, retention_ms=3_600_000)
    ids = [str(uuid.uuid4()) for _ in range(40)]
    versions = dict.fromkeys(ids, 0)
    for _ in range(400):
        iid = rng.choice(ids)
        versions[iid] += rng.choice([0, 1, 2])  # 0: a replay of what the window has
        edited = rng.random() < 0.4
        state.apply(
            "w",
            member(
                interaction_id=iid, version=max(1, versions[iid]), user_id=rng.choice("abcde"),
                response_time_ms=rng.randrange(50, 5000), regenerated=rng.random() < 0.3,
                edited=edited, edit_distance=rng.randrange(100) if edited else None,
                edit_distance_norm=rng.random() if edited else None,
            ),
        )  # fmt: skip
        if rng.random() < 0.2:
            for _, agg in state.emissions():
                want = aggregate_window(60_000, 60_000, state.windows["w"].values())
                assert agg.keys() == want.keys()
                for name, value in want.items():
                    close = pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
                    assert agg[name] == close
    restored = WindowState.restore(0, 60_000, 3_600_000, state.snapshot().items())
    restored._changed_windows.add("w")
    state._changed_windows.add("w")
    assert restored.emissions() == state.emissions()  # the same bits, whatever the history
