"""Regression alerts: each prompt version against its own recent past, debounced into incidents. Pure.

For every (prompt version, metric) a :class:`DetectorState` holds a trailing baseline of recent healthy
windows. Each new window is compared with it (:func:`assess`) and :func:`step` turns the verdicts into at most
one ``alert`` when an incident opens and one ``resolve`` when it recovers.

The test (one-sided z-test, window mean vs baseline mean)
    ``z = (m_w - m_b) / sqrt(phi * s2 * sum_u(n_u^2) / n_w^2 + V_b)`` where

    * ``m_w`` is the window's ratio mean (``n_w`` interactions; ``n_u`` those of user ``u`` in it);
    * ``m_b`` pools the baseline windows and ``s2 = sum(y_u - m_b n_u)^2 / sum(n_u^2)`` over the baseline's
      users is the residual variance per squared user size. The window's variance is predicted from the
      baseline and the window's own user sizes, so a window carried by a few heavy users gets a wider band
      (users as units, their retries are correlated), but *not* from the window's own outcomes: a variance
      estimated from the tested window grows with its rise and made the test blind upwards (a 1% test
      fired in 0.1% of stable windows in simulation);
    * ``phi >= 1`` is the overdispersion of the baseline windows around that model (quasi-likelihood
      scaling): real traffic varies between windows more than sampling explains (time of day, input mix),
      and without it a stable stream alerts;
    * ``V_b`` is the variance of the pooled baseline mean with windows as the units (drift included).

Repeated looks
    A window *breaches* when ``p < per_window_alpha`` and the rise clears both floors (``min_abs_rise`` and
    ``min_rel_rise``). ``per_window_alpha = false_alarm_budget / horizon_windows``: an incident can only open
    on a breaching window, so by the union bound (Bonferroni over windows, no independence needed) the
    probability of any false alert within ``horizon_windows`` windows is at most ``false_alarm_budget``.
    With the defaults -- 1% per 1,440 windows, a day of one-minute windows -- that is z > 4.34.

    That bound is as good as the normal approximation in the far tail, and small windows of rare events are
    skewed: for 200 interactions at a 10% rate the exact binomial tail beyond z = 4.34 is 3.9e-5, not 6.9e-6
    (at a lax 1% level, 1.3% of stable windows breach in simulation). Hence ``open_after = 2``: a false alert
    then needs two consecutive false breaches (~1e-9 per window, so the budget holds with a wide margin) and
    a rise must last, not be one bad minute. Simulated: 0 alerts in 144,000 stable windows.
    CUSUM would catch small persistent shifts sooner, but its false-alarm rate rests on a known baseline and
    independence; the floors mean we only care about rises large enough for this test anyway.

Debounce and hysteresis
    ``healthy --(open_after consecutive breaches)--> open --(resolve_after consecutive clear windows)-->
    healthy``. A window is *clear* when its rise is below the floors or not significant even at the lax
    ``clear_alpha`` (5%). A window in between (neither breach nor clear) resets the count of clear windows
    of an open incident, or the count of breaches of a healthy detector. Only clear windows of a healthy
    detector join the baseline. While an incident is open nothing re-alerts and the baseline is frozen, so the
    incident is measured against the pre-incident level (a permanent shift therefore stays open until a
    human acts -- by design). Windows with fewer than ``min_window_interactions`` change nothing; windows
    that start before the last processed one ended are ignored, which makes replays harmless.

Severity
    From the relative rise ``m_w / m_b - 1``: ``low`` below ``severity_levels[0]`` (default +50%),
    ``medium`` below ``severity_levels[1]`` (+100%), ``high`` above. An alert carries the severity of the
    window that opened it; the resolve carries the peak severity of the incident.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from statistics import NormalDist

from experiments.stats import RatioMoments
from schemas.experiments import AlertKind, AlertSeverity, OutcomeMetric

_NORMAL = NormalDist()
_INCIDENT_NAMESPACE = uuid.UUID("6f0c1d3e-5b1a-4f53-9a57-3c1f1d6e8a20")


@dataclass(frozen=True, slots=True)
class RegressionConfig:
    """Thresholds of one detector (module docstring for their meaning)."""

    #: Bound on the probability of any false alert within ``horizon_windows`` windows.
    false_alarm_budget: float = 0.01
    horizon_windows: int = 1440
    #: The rise must also clear both floors: absolute (metric units) and relative to the baseline.
    min_abs_rise: float = 0.0
    min_rel_rise: float = 0.20
    baseline_windows: int = 60
    min_baseline_windows: int = 10
    min_window_interactions: int = 30
    open_after: int = 2
    resolve_after: int = 5
    clear_alpha: float = 0.05
    severity_levels: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_budget < 1 or self.horizon_windows < 1:
            raise ValueError("need 0 < false_alarm_budget < 1 and horizon_windows >= 1")
        if self.open_after < 1 or self.resolve_after < 1:
            raise ValueError("open_after and resolve_after must be >= 1")
        if not 2 <= self.min_baseline_windows <= self.baseline_windows:
            raise ValueError("need 2 <= min_baseline_windows <= baseline_windows")
        if not self.per_window_alpha <= self.clear_alpha < 1:
            raise ValueError("clear_alpha must lie between per_window_alpha and 1 (it is the lax level)")

    @property
    def per_window_alpha(self) -> float:
        """Significance level of each window's test (Bonferroni share of the budget)."""
        return self.false_alarm_budget / self.horizon_windows

    def severity(self, relative_rise: float) -> AlertSeverity:
        """The severity of a rise of this relative size."""
        medium, high = self.severity_levels
        if relative_rise >= high:
            return AlertSeverity.HIGH
        return AlertSeverity.MEDIUM if relative_rise >= medium else AlertSeverity.LOW


@dataclass(frozen=True, slots=True)
class WindowObservation:
    """One closed window of one metric of one prompt version, as user-level moments."""

    version: str
    metric: OutcomeMetric
    window_start: datetime
    window_end: datetime
    moments: RatioMoments


@dataclass(frozen=True, slots=True)
class Assessment:
    """One window compared with the baseline. ``expected_low``/``expected_high`` bound where the window's mean
    falls with probability ``1 - 2 * per_window_alpha`` when nothing changed."""

    observed: float
    expected: float
    expected_low: float
    expected_high: float
    z: float
    p_value: float
    absolute_rise: float
    relative_rise: float
    breach: bool
    clear: bool


@dataclass(frozen=True, slots=True)
class Incident:
    """An open regression."""

    incident_id: str
    opened_at: datetime
    expected: float
    peak_relative_rise: float
    peak_severity: AlertSeverity


@dataclass(frozen=True, slots=True)
class RegressionEvent:
    """An ``alert`` (an incident opened) or a ``resolve`` (it recovered), with the window behind it."""

    kind: AlertKind
    incident_id: str
    version: str
    metric: OutcomeMetric
    window_start: datetime
    window_end: datetime
    observed: float
    expected: float
    expected_low: float
    expected_high: float
    relative_rise: float
    z: float
    p_value: float
    severity: AlertSeverity
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class DetectorState:
    """What one (version, metric) detector remembers between windows; start with ``DetectorState(v, m)``."""

    version: str
    metric: OutcomeMetric
    config: RegressionConfig = field(default_factory=RegressionConfig)
    baseline: tuple[RatioMoments, ...] = ()
    breach_streak: int = 0
    streak_started: datetime | None = None
    clear_streak: int = 0
    incident: Incident | None = None
    last_window_end: datetime | None = None


def incident_id(version: str, metric: OutcomeMetric, opened_at: datetime) -> str:
    """A deterministic id, so that a replay of the same windows names the same incident."""
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, f"{version}\x1f{metric}\x1f{opened_at.isoformat()}"))


def assess(baseline: tuple[RatioMoments, ...], window: RatioMoments, config: RegressionConfig) -> Assessment:
    """Compare one window with (at least two) baseline windows; the test is in the module docstring."""
    if len(baseline) < 2:
        raise ValueError("need at least two baseline windows")
    n_b = y_b = 0.0
    for b in baseline:
        n_b += b.n
        y_b += b.y
    m_b = y_b / n_b
    # Residual variance per squared user size, pooled over the baseline's users (users as units).
    residual_ss = size_ss = 0.0
    for b in baseline:
        residual_ss += b.yy - 2.0 * m_b * b.ny + m_b * m_b * b.nn
        size_ss += b.nn
    scale = max(residual_ss, 0.0) / size_ss
    # Overdispersion: how much more the baseline windows scatter than that model says; and the variance of
    # the pooled mean with windows as the units, which includes the drift between windows.
    dispersion = drift_ss = 0.0
    for b in baseline:
        dispersion += (b.y - m_b * b.n) ** 2 / (scale * b.nn) if scale > 0 else 0.0
        drift_ss += (b.y - m_b * b.n) ** 2
    phi = max(1.0, dispersion / len(baseline))
    v_b = drift_ss / (n_b * n_b) * len(baseline) / (len(baseline) - 1)
    v_w = phi * scale * window.nn / (window.n * window.n)
    se = math.sqrt(v_w + v_b)
    observed = window.mean
    rise = observed - m_b
    relative = rise / m_b if m_b > 0 else (math.inf if rise > 0 else 0.0)
    # A flat baseline and a flat window (se == 0): any rise at all is certain.
    z = rise / se if se > 0 else (math.copysign(math.inf, rise) if rise else 0.0)
    p_value = 0.5 * math.erfc(z / math.sqrt(2.0))
    above_floor = rise >= config.min_abs_rise and relative >= config.min_rel_rise and rise > 0
    half_band = _NORMAL.inv_cdf(1.0 - config.per_window_alpha) * se
    return Assessment(
        observed=observed,
        expected=m_b,
        expected_low=m_b - half_band,
        expected_high=m_b + half_band,
        z=z,
        p_value=p_value,
        absolute_rise=rise,
        relative_rise=relative,
        breach=above_floor and p_value < config.per_window_alpha,
        clear=not above_floor or p_value >= config.clear_alpha,
    )


def _event(
    kind: AlertKind, state: DetectorState, obs: WindowObservation, a: Assessment, incident: Incident
) -> RegressionEvent:
    return RegressionEvent(
        kind=kind,
        incident_id=incident.incident_id,
        version=state.version,
        metric=state.metric,
        window_start=obs.window_start,
        window_end=obs.window_end,
        observed=a.observed,
        expected=a.expected,
        expected_low=a.expected_low,
        expected_high=a.expected_high,
        relative_rise=a.relative_rise,
        z=a.z,
        p_value=a.p_value,
        severity=incident.peak_severity,
        opened_at=incident.opened_at,
    )


def step(state: DetectorState, obs: WindowObservation) -> tuple[DetectorState, tuple[RegressionEvent, ...]]:
    """Feed one closed window; returns the new state and the events it caused (zero or one).

    Promises: exactly one ``alert`` per incident, never another while it is open, and exactly one
    ``resolve`` after ``resolve_after`` consecutive clear windows (module docstring).
    """
    if (obs.version, obs.metric) != (state.version, state.metric):
        raise ValueError(
            f"window of {obs.version}/{obs.metric} fed to the {state.version}/{state.metric} detector"
        )
    if state.last_window_end is not None and obs.window_start < state.last_window_end:
        return state, ()
    config = state.config
    state = replace(state, last_window_end=obs.window_end)
    if obs.moments.n < config.min_window_interactions:
        return state, ()
    if len(state.baseline) < config.min_baseline_windows:
        return replace(state, baseline=(*state.baseline, obs.moments)), ()

    a = assess(state.baseline, obs.moments, config)
    incident = state.incident
    if incident is None:
        if not a.breach:
            baseline = (
                (*state.baseline, obs.moments)[-config.baseline_windows :] if a.clear else state.baseline
            )
            return replace(state, baseline=baseline, breach_streak=0, streak_started=None), ()
        started = state.streak_started or obs.window_start
        streak = state.breach_streak + 1
        if streak < config.open_after:
            return replace(state, breach_streak=streak, streak_started=started), ()
        severity = config.severity(a.relative_rise)
        incident = Incident(
            incident_id(state.version, state.metric, started), started, a.expected, a.relative_rise, severity
        )
        opened = replace(state, breach_streak=0, streak_started=None, clear_streak=0, incident=incident)
        return opened, (_event(AlertKind.ALERT, opened, obs, a, incident),)

    if a.relative_rise > incident.peak_relative_rise:
        incident = replace(
            incident, peak_relative_rise=a.relative_rise, peak_severity=config.severity(a.relative_rise)
        )
    if not a.clear:
        return replace(state, incident=incident, clear_streak=0), ()
    clear_streak = state.clear_streak + 1
    if clear_streak < config.resolve_after:
        return replace(state, incident=incident, clear_streak=clear_streak), ()
    resolved = replace(state, incident=None, clear_streak=0)
    return resolved, (_event(AlertKind.RESOLVE, resolved, obs, a, incident),)
