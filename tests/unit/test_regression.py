"""Regression alerts: the CUSUM's false alarms and detection (the targets of issue 14), the per-window test,
and the incident state machine."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from experiments import (
    DetectorState,
    RatioMoments,
    RegressionConfig,
    RegressionEvent,
    WindowObservation,
    assess,
    step,
)
from experiments.simulate import binomial
from schemas.experiments import AlertKind, AlertSeverity, OutcomeMetric

VERSION = "v1.1"
T0 = datetime(2026, 11, 26, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

RateAt = Callable[[int], float]


def rate_windows(
    rng: random.Random, rate_at: RateAt, windows: int, users: tuple[int, int] = (150, 250)
) -> Iterator[RatioMoments]:
    """Windows of single-interaction users (a uniform number of them) with an event rate given per window.

    Counts are exact binomial draws, except for large windows with a rate that changes every window, where
    a fresh CDF per draw would be slow and the normal approximation is already excellent."""
    for index in range(windows):
        n = rng.randint(*users)
        p = rate_at(index)
        if n > 2_000:
            y = min(max(round(rng.gauss(n * p, math.sqrt(n * p * (1 - p)))), 0), n)
        else:
            y = binomial(rng, n, p)
        yield RatioMoments(n, n, y, n, y, y)


def observation(
    index: int, moments: RatioMoments, metric: OutcomeMetric = OutcomeMetric.ABANDONMENT_RATE
) -> WindowObservation:
    start = T0 + index * MINUTE
    return WindowObservation(VERSION, metric, start, start + MINUTE, moments)


def run(
    windows: Iterator[RatioMoments],
    config: RegressionConfig | None = None,
    metric: OutcomeMetric = OutcomeMetric.ABANDONMENT_RATE,
) -> tuple[DetectorState, list[tuple[int, RegressionEvent]]]:
    state = DetectorState(VERSION, metric, config or RegressionConfig())
    events: list[tuple[int, RegressionEvent]] = []
    for index, moments in enumerate(windows):
        state, emitted = step(state, observation(index, moments, metric))
        events.extend((index, event) for event in emitted)
    return state, events


def steady(rate: float) -> RateAt:
    return lambda _index: rate


def step_rise(base: float, raised: float, start: int, end: int) -> RateAt:
    return lambda index: raised if start <= index < end else base


# ----------------------------------------------------------------------------------------------------
# False alarms


#: The evaluator's default floors (+20% and +2 points).
EVALUATOR = RegressionConfig(min_abs_rise=0.02)


def test_stable_streams_never_alert() -> None:
    """40 streams x 1,500 windows (60,000 windows, ~42 days of minutes for one version) at 10% abandonment,
    with the library's floors (+20%, no absolute floor): no alert."""
    rng = random.Random(1)
    alerts = sum(len(run(rate_windows(rng, steady(0.10), 1_500))[1]) for _ in range(40))
    assert alerts == 0


@pytest.mark.parametrize(("rate", "users"), [(0.35, (200, 200)), (0.05, (40, 40))])
def test_at_most_one_false_alert_per_10_000_stable_windows(rate: float, users: tuple[int, int]) -> None:
    """30,000 stable windows with the evaluator's floors, at 200 interactions and 35% (the issue's
    regeneration rate) and at 40 interactions and 5% (sparse, skewed windows): at most 3 false alerts."""
    rng = random.Random(3)
    alerts = sum(len(run(rate_windows(rng, steady(rate), 1_500, users), EVALUATOR)[1]) for _ in range(20))
    assert alerts <= 3


def first_alert(rng: random.Random, rate_at: RateAt, windows: int, users: int) -> int | None:
    state = DetectorState(VERSION, OutcomeMetric.ABANDONMENT_RATE, EVALUATOR)
    for index, moments in enumerate(rate_windows(rng, rate_at, windows, (users, users))):
        state, events = step(state, observation(index, moments))
        if any(e.kind is AlertKind.ALERT for e in events):
            return index
    return None


def test_a_lasting_jump_from_35_to_45_percent_is_alerted_within_two_hours() -> None:
    """200 interactions a window, two hours of normal traffic, then 0.45 for good: alerted within 120
    windows in >= 90% of runs, and never before the jump."""
    rng = random.Random(4)
    runs = 100
    found = [first_alert(rng, step_rise(0.35, 0.45, 120, 10**9), 240, 200) for _ in range(runs)]
    assert all(at is None or at >= 120 for at in found)
    assert sum(at is not None for at in found) / runs >= 0.90


def test_a_four_hour_ramp_from_35_to_70_percent_is_alerted_before_it_ends() -> None:
    """The rate climbs steadily for 240 windows after two normal hours: alerted before the ramp ends in
    >= 90% of runs -- the baseline does not climb with it."""

    def ramp(index: int) -> float:
        return 0.35 + 0.35 * min(1.0, max(0, index - 120) / 240)

    rng = random.Random(5)
    runs = 100
    found = [first_alert(rng, ramp, 360, 200) for _ in range(runs)]
    assert sum(at is not None and 120 <= at < 360 for at in found) / runs >= 0.90


def test_windows_of_an_accumulating_rise_do_not_join_the_baseline() -> None:
    """A rise below the floors (0.35 -> 0.40, +14%) never alerts, and the watch keeps its windows out of the
    baseline for as long as a baseline lasts, so a later real rise is measured from 0.35."""
    rng = random.Random(6)
    state = DetectorState(VERSION, OutcomeMetric.ABANDONMENT_RATE, EVALUATOR)
    for index, moments in enumerate(rate_windows(rng, step_rise(0.35, 0.40, 60, 10**9), 200, (400, 400))):
        state, events = step(state, observation(index, moments))
        assert events == ()
    assert len(state.baseline) <= 60  # only windows from before the rise
    assert sum(m.y for m in state.baseline) / sum(m.n for m in state.baseline) == pytest.approx(
        0.35, abs=0.01
    )
    assert len(state.held) >= 140


def test_per_window_p_values_are_calibrated() -> None:
    """A stable stream's windows have p < 1% in about 1% of windows against the baseline: the per-window test
    (the band and p-value an alert reports) is calibrated, not blind upwards."""
    rng = random.Random(2)
    config = RegressionConfig(min_rel_rise=0.0)
    below = tested = 0
    for _ in range(10):
        baseline: list[RatioMoments] = []
        for moments in rate_windows(rng, steady(0.10), 1_000):
            if len(baseline) >= config.min_baseline_windows:
                tested += 1
                below += assess(tuple(baseline), moments, config).p_value < 0.01
            baseline = [*baseline, moments][-60:]
    assert 0.004 <= below / tested <= 0.02


def test_overdispersed_traffic_widens_the_band_instead_of_alerting() -> None:
    """Large windows whose true rate wanders +-8% between windows (time of day, input mix): more variation
    than binomial noise. The baseline's overdispersion widens the expected band and nothing alerts."""
    rng = random.Random(3)

    def wandering(index: int) -> float:
        return 0.10 * (1 + 0.08 * rng.gauss(0, 1) + 0.05 * math.sin(2 * math.pi * index / 1_440))

    _, events = run(rate_windows(rng, wandering, 3_000, users=(4_000, 6_000)))
    assert events == []
    steady_baseline = tuple(rate_windows(rng, steady(0.10), 60, users=(5_000, 5_000)))
    wandering_baseline = tuple(rate_windows(rng, wandering, 60, users=(5_000, 5_000)))
    window = RatioMoments(5_000, 5_000, 500, 5_000, 500, 500)
    narrow = assess(steady_baseline, window, RegressionConfig())
    wide = assess(wandering_baseline, window, RegressionConfig())
    assert wide.expected_high - wide.expected > 1.5 * (narrow.expected_high - narrow.expected)


# ----------------------------------------------------------------------------------------------------
# Incidents


def test_step_rise_alerts_once_and_resolves_once() -> None:
    rng = random.Random(4)
    config = RegressionConfig()
    _, events = run(rate_windows(rng, step_rise(0.10, 0.25, 200, 260), 400, users=(400, 400)), config)
    assert [event.kind for _, event in events] == [AlertKind.ALERT, AlertKind.RESOLVE]
    (alert_at, alert), (resolve_at, resolve) = events
    assert 200 <= alert_at < 205
    assert 260 + config.resolve_after - 1 <= resolve_at < 280
    assert alert.incident_id == resolve.incident_id
    assert alert.opened_at == T0 + 200 * MINUTE
    assert (alert.version, alert.metric) == (VERSION, OutcomeMetric.ABANDONMENT_RATE)
    assert alert.window_start == T0 + alert_at * MINUTE
    assert alert.window_end == alert.window_start + MINUTE
    assert alert.expected == pytest.approx(0.10, abs=0.01)
    assert alert.observed > alert.expected_high > alert.expected > alert.expected_low
    assert alert.relative_rise > 1.0
    assert alert.severity is AlertSeverity.HIGH
    assert alert.p_value < config.per_window_alpha
    assert alert.cusum >= alert.threshold
    assert resolve.observed < resolve.expected_high


def test_a_long_incident_with_noisy_windows_never_realerts() -> None:
    """A long moderate rise on small windows: some windows look healthy on their own, but fewer than
    ``resolve_after`` in a row, so the incident stays open and quiet, then closes once."""
    rng = random.Random(5)
    _, events = run(rate_windows(rng, step_rise(0.10, 0.22, 100, 600), 700, users=(180, 220)))
    assert [event.kind for _, event in events] == [AlertKind.ALERT, AlertKind.RESOLVE]
    assert events[1][0] >= 600


def test_rise_below_the_floor_does_not_alert_even_when_significant() -> None:
    rng = random.Random(6)
    _, events = run(rate_windows(rng, step_rise(0.10, 0.115, 100, 300), 300, users=(20_000, 20_000)))
    assert events == []


def test_mean_metric_rise_alerts() -> None:
    """Mean normalized edit distance of edited interactions: 0.20 -> 0.35."""
    rng = random.Random(7)

    def windows() -> Iterator[RatioMoments]:
        for index in range(200):
            mean = 0.35 if 100 <= index < 150 else 0.20
            values = [rng.betavariate(2 * mean / (1 - mean), 2) for _ in range(rng.randint(60, 90))]
            yield RatioMoments.from_user_totals((1.0, v) for v in values)

    _, events = run(windows(), metric=OutcomeMetric.EDIT_DISTANCE)
    assert [event.kind for _, event in events] == [AlertKind.ALERT, AlertKind.RESOLVE]
    assert events[0][1].metric is OutcomeMetric.EDIT_DISTANCE


def test_replayed_and_thin_windows_change_nothing() -> None:
    rng = random.Random(8)
    moments = list(rate_windows(rng, steady(0.10), 30))
    state = DetectorState(VERSION, OutcomeMetric.ABANDONMENT_RATE)
    for index, m in enumerate(moments):
        state, _ = step(state, observation(index, m))
    replayed, events = step(state, observation(5, RatioMoments(200, 200, 200, 200, 200, 200)))
    assert (replayed, events) == (state, ())
    thin, events = step(state, observation(30, RatioMoments(10, 10, 10, 10, 10, 10)))
    assert events == ()
    assert thin.baseline == state.baseline


def test_incident_ids_are_deterministic_across_replays() -> None:
    windows = list(rate_windows(random.Random(9), step_rise(0.10, 0.30, 50, 80), 120, users=(400, 400)))
    first = [event.incident_id for _, event in run(iter(windows))[1]]
    second = [event.incident_id for _, event in run(iter(windows))[1]]
    assert first == second
    assert len(set(first)) == 1


def test_window_of_another_detector_is_refused() -> None:
    state = DetectorState(VERSION, OutcomeMetric.ABANDONMENT_RATE)
    with pytest.raises(ValueError, match="detector"):
        step(state, observation(0, RatioMoments(), OutcomeMetric.REGENERATION_RATE))


def test_config_refuses_a_clear_level_stricter_than_the_alert_level() -> None:
    with pytest.raises(ValueError, match="clear_alpha"):
        RegressionConfig(clear_alpha=1e-9)


@pytest.mark.parametrize(
    ("rise", "severity"),
    [
        (0.3, AlertSeverity.LOW),
        (0.5, AlertSeverity.MEDIUM),
        (0.99, AlertSeverity.MEDIUM),
        (1.5, AlertSeverity.HIGH),
    ],
)
def test_severity_follows_the_relative_rise(rise: float, severity: AlertSeverity) -> None:
    assert RegressionConfig().severity(rise) is severity
