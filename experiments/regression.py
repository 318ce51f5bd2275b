"""Regression alerts: each prompt version against its own past, evidence accumulated across windows. Pure.

For every (prompt version, metric) a :class:`DetectorState` holds a baseline of recent in-control windows
and a CUSUM statistic. Each new window is compared with the baseline (:func:`assess`) and :func:`step`
turns the evidence into at most one ``alert`` when an incident opens and one ``resolve`` when it recovers.

Why accumulate
    A test of each window on its own must be very strict to survive a day of looks (z > 4.34 for 1 % per
    1,440 windows), so it misses the rises that matter: a lasting 0.35 -> 0.45 regeneration rate at 200
    interactions a window is z = 3 a window, and was alerted within a day in 23 % of runs; a four-hour ramp
    never (issue 14). Page's CUSUM (Page, "Continuous Inspection Schemes", Biometrika 1954) adds up the
    evidence of every window since the level last looked normal, so a rise of a few standard errors a
    window is found within tens of windows, while the false-alarm rate stays bounded.

The statistic
    Each window gives the log-likelihood ratio of "the metric is ``d`` above the reference" against "it is
    at the reference", in the normal approximation with the window's variance ``v_w``::

        llr_w = d / v_w * (m_w - ref - d / 2)        S_t = max(0, S_{t-1} + llr_t)

    and an incident opens when ``S_t >= h``. The reference is the largest rise that does not matter, so
    the detector looks for rises *above the floors*: ``ref = m_b + floor + se_b`` where ``floor =
    max(min_abs_rise, min_rel_rise * m_b)`` and ``se_b`` the standard error of the baseline mean (a baseline
    that is low by chance does not turn stable traffic into a slow drift). ``d = detect_excess * floor``:
    the CUSUM is quickest for rises ``d`` beyond the reference (1.5 times the floor by default). By
    Lorden's bound the average run between false alerts of a CUSUM of log-likelihood ratios is at least
    ``e^h`` while the metric stays at the reference, so ``h = log(horizon_windows / false_alarm_budget)``
    keeps the chance of an alert within ``horizon_windows`` windows under ``false_alarm_budget`` -- for a
    rise exactly at the floors; stable traffic sits a floor below the reference and alerts far less
    (0 in 200,000 simulated stable windows).

The window's variance and the baseline
    ``v_w = phi * s2 * sum_u(n_u^2) / n_w^2`` where ``m_b`` pools the baseline windows, ``s2 = sum(y_u -
    m_b n_u)^2 / sum(n_u^2)`` over the baseline's users is the residual variance per squared user size
    (users as units: a window carried by a few heavy users gets a wider band), and ``phi >= 1`` is the
    overdispersion of the baseline windows around that model (real traffic varies between windows more
    than sampling explains). The variance comes from the baseline and the window's user sizes, not from
    the window's own outcomes, which would grow with the rise and blind the test upwards.

    The baseline is the last ``baseline_windows`` windows that were *in control*, decided by a second,
    sensitive CUSUM, the *watch*: the same increments against the baseline itself (``m_b`` instead of the
    reference), so it rises with any lasting increase, even one below the floors. While the watch is
    above 0 new windows are held back: a jump or the first hour of a ramp cannot drag the baseline up and
    hide itself. When the watch falls back to 0 the held windows join after all: they were ordinary, and
    dropping them would bias the baseline low -- a low baseline makes ordinary windows look like a rise,
    a trap that "join only when calm" rules fall into. When an incident opens they are dropped and the
    baseline is frozen while it is open, so the incident is measured against the pre-incident level.
    A watch that stays up for a whole baseline without an alert means a level within the floors: the
    oldest held windows then join, and the baseline adapts to it.

Incidents
    ``healthy --(S >= h)--> open --(resolve_after consecutive clear windows)--> healthy``; the incident
    opens at the window where the accumulating run started (the CUSUM's change-point estimate). A window is
    *clear* when its rise is below the floors or not significant at ``clear_alpha``; one that is not
    resets the count of clear windows. While open nothing re-alerts; on resolve the CUSUM restarts at 0.
    Windows with fewer than ``min_window_interactions`` change nothing; windows that start before the last
    processed one ended are ignored, which makes replays harmless. There are no verdicts before the
    baseline has ``min_baseline_windows`` windows and a standard error of at most ``baseline_precision``
    times the floor (sparse metrics need more windows to know their level).

Severity
    From the relative rise ``m_w / m_b - 1``: ``low`` below ``severity_levels[0]`` (default +50%),
    ``medium`` below ``severity_levels[1]`` (+100%), ``high`` above. An alert carries the severity of the
    window that opened it; the resolve carries the peak severity of the incident.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
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

    #: Bound on the probability of a false alert within ``horizon_windows`` windows (at the floors).
    false_alarm_budget: float = 0.01
    horizon_windows: int = 1440
    #: A rise must clear both floors to count: absolute (metric units) and relative to the baseline.
    min_abs_rise: float = 0.0
    min_rel_rise: float = 0.20
    #: The rises beyond the floors the CUSUMs are tuned to, as shares of the floor (one CUSUM each).
    detect_excess: tuple[float, ...] = (0.5, 2.0, 8.0)
    baseline_windows: int = 240
    min_baseline_windows: int = 10
    #: ... and no verdicts before the baseline's standard error is at most this share of the floor.
    baseline_precision: float = 1.0
    min_window_interactions: int = 30
    resolve_after: int = 5
    clear_alpha: float = 0.05
    severity_levels: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_budget < 1 or self.horizon_windows < 1:
            raise ValueError("need 0 < false_alarm_budget < 1 and horizon_windows >= 1")
        if self.resolve_after < 1 or not self.detect_excess or min(self.detect_excess) <= 0:
            raise ValueError("resolve_after must be >= 1 and detect_excess positive shares")
        if not 2 <= self.min_baseline_windows <= self.baseline_windows:
            raise ValueError("need 2 <= min_baseline_windows <= baseline_windows")
        if not self.per_window_alpha <= self.clear_alpha < 1:
            raise ValueError("clear_alpha must lie between per_window_alpha and 1 (it is the lax level)")

    @property
    def per_window_alpha(self) -> float:
        """Level of the band reported around the expected value (Bonferroni share of the budget)."""
        return self.false_alarm_budget / self.horizon_windows

    @property
    def threshold(self) -> float:
        """Each CUSUM's alert threshold ``h = log(horizon_windows * k / false_alarm_budget)`` for ``k``
        CUSUMs (a union bound over them)."""
        return math.log(self.horizon_windows * len(self.detect_excess) / self.false_alarm_budget)

    def floor(self, baseline_mean: float) -> float:
        """The smallest rise that matters over a baseline at ``baseline_mean``."""
        return max(self.min_abs_rise, self.min_rel_rise * baseline_mean)

    def severity(self, relative_rise: float) -> AlertSeverity:
        """The severity of a rise of this relative size."""
        medium, high = self.severity_levels
        if relative_rise >= high:
            return AlertSeverity.HIGH
        return AlertSeverity.MEDIUM if relative_rise >= medium else AlertSeverity.LOW


#: Per-window terms a baseline keeps summed (``assess`` reads every statistic from their sums).
_TERMS = ("n", "y", "yy", "ny", "nn", "y2/nn", "yn/nn", "n2/nn", "y2", "yn", "n2")


def _terms(m: RatioMoments) -> tuple[float, ...]:
    nn = m.nn if m.nn > 0 else math.inf
    return (m.n, m.y, m.yy, m.ny, m.nn, m.y * m.y / nn, m.y * m.n / nn, m.n * m.n / nn,
            m.y * m.y, m.y * m.n, m.n * m.n)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Baseline:
    """The windows a detector compares with, and the sums of their terms kept up to date as windows come
    and go, so a long baseline costs the same per window as a short one. The sums are recomputed from the
    windows whenever a full baseline's worth of windows has passed, which bounds the rounding drift."""

    windows: tuple[RatioMoments, ...] = ()
    sums: tuple[float, ...] = (0.0,) * len(_TERMS)
    since_exact: int = 0

    @classmethod
    def of(cls, windows: tuple[RatioMoments, ...]) -> Baseline:
        """A baseline of these windows, summed exactly."""
        columns = zip(*(_terms(w) for w in windows), strict=True) if windows else ()
        sums = tuple(math.fsum(c) for c in columns) if windows else (0.0,) * len(_TERMS)
        return cls(windows, sums, 0)

    def with_window(self, window: RatioMoments, limit: int) -> Baseline:
        """This baseline with ``window`` added and the oldest dropped beyond ``limit`` windows."""
        windows = (*self.windows, window)
        dropped = windows[: max(0, len(windows) - limit)]
        windows = windows[len(dropped) :]
        if self.since_exact + 1 >= limit:
            return Baseline.of(windows)
        sums = [a + b for a, b in zip(self.sums, _terms(window), strict=True)]
        for old in dropped:
            sums = [a - b for a, b in zip(sums, _terms(old), strict=True)]
        return Baseline(windows, tuple(sums), self.since_exact + 1)

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[RatioMoments]:
        return iter(self.windows)


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
    """One window compared with the baseline.

    ``expected_low``/``expected_high`` bound where the window's mean falls with probability
    ``1 - 2 * per_window_alpha`` when nothing changed; ``z``/``p_value`` test the window on its own;
    ``llr`` is its CUSUM increment (module docstring) against ``reference``.
    """

    observed: float
    expected: float
    expected_low: float
    expected_high: float
    z: float
    p_value: float
    absolute_rise: float
    relative_rise: float
    reference: float
    floor: float
    baseline_se: float
    #: One increment per CUSUM (``detect_excess``), and the watch's: the first one's test against the
    #: baseline itself (module docstring).
    llr: tuple[float, ...]
    watch_llr: float
    #: Below the floors or not significant at ``clear_alpha``: counts towards resolving an incident.
    clear: bool


@dataclass(frozen=True, slots=True)
class Incident:
    """An open regression."""

    incident_id: str
    opened_at: datetime
    expected: float
    peak_relative_rise: float
    peak_severity: AlertSeverity
    cusum: float


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
    #: The CUSUM statistic that opened the incident, and the threshold it reached.
    cusum: float
    threshold: float


@dataclass(frozen=True, slots=True)
class DetectorState:
    """What one (version, metric) detector remembers between windows; start with ``DetectorState(v, m)``."""

    version: str
    metric: OutcomeMetric
    config: RegressionConfig = field(default_factory=RegressionConfig)
    baseline: Baseline = field(default_factory=Baseline)
    #: One CUSUM per ``detect_excess`` (empty: all at 0) ...
    cusums: tuple[float, ...] = ()
    #: ... and the start of the window where each one's current run began (None while at 0).
    run_started: tuple[datetime | None, ...] = ()
    #: The watch: a CUSUM of any rise over the baseline itself, and the windows held back while it is up.
    watch: float = 0.0
    held: tuple[RatioMoments, ...] = ()
    clear_streak: int = 0
    incident: Incident | None = None
    last_window_end: datetime | None = None


def incident_id(version: str, metric: OutcomeMetric, opened_at: datetime) -> str:
    """A deterministic id, so that a replay of the same windows names the same incident."""
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, f"{version}\x1f{metric}\x1f{opened_at.isoformat()}"))


#: The metrics whose values are 0 or 1 per interaction: their CUSUM increments are binomial.
RATE_METRICS = frozenset(
    {OutcomeMetric.REGENERATION_RATE, OutcomeMetric.CORRECTION_RATE, OutcomeMetric.ABANDONMENT_RATE}
)


def _increment(observed: float, n: float, v_w: float, low: float, d: float, rate: bool) -> float:
    """The log-likelihood ratio of a window's mean ``observed`` (``n`` interactions, variance ``v_w``):
    ``low + d`` against ``low``. Normal, or for a rate quasi-binomial -- the binomial ratio scaled by the
    binomial variance over the window's -- whose tail is right for rare events, where the normal one makes
    a few extra events look like a lot of evidence."""
    if not (v_w > 0 and d > 0):
        return math.inf if observed > low else -math.inf
    if rate and low > 0 and low + d < 1:
        high = low + d
        events = observed * n
        binomial = events * math.log(high / low) + (n - events) * math.log((1 - high) / (1 - low))
        return binomial * (low * (1 - low) / n) / v_w
    return d / v_w * (observed - low - d / 2.0)


def assess(
    baseline: Baseline | tuple[RatioMoments, ...],
    window: RatioMoments,
    config: RegressionConfig,
    rate: bool = False,
) -> Assessment:
    """Compare one window with (at least two) baseline windows: the per-window test and the CUSUM
    increments (module docstring); ``rate`` for a 0/1 metric."""
    if not isinstance(baseline, Baseline):
        baseline = Baseline.of(baseline)
    k = len(baseline)
    if k < 2:
        raise ValueError("need at least two baseline windows")
    n_b, y_b, yy, ny, nn, y2_nn, yn_nn, n2_nn, y2, yn, n2 = baseline.sums
    m_b = y_b / n_b
    # Residual variance per squared user size, pooled over the baseline's users (users as units).
    scale = max(yy - 2.0 * m_b * ny + m_b * m_b * nn, 0.0) / nn
    # Overdispersion: how much more the baseline windows scatter than that model says (the sum over
    # windows of (y_b - m_b n_b)^2 / (scale nn_b)); and the variance of the pooled mean with windows as the
    # units, which includes the drift between windows.
    dispersion = max(y2_nn - 2.0 * m_b * yn_nn + m_b * m_b * n2_nn, 0.0) / scale if scale > 0 else 0.0
    drift_ss = max(y2 - 2.0 * m_b * yn + m_b * m_b * n2, 0.0)
    phi = max(1.0, dispersion / k)
    v_b = drift_ss / (n_b * n_b) * k / (k - 1)
    v_w = phi * scale * window.nn / (window.n * window.n)
    se = math.sqrt(v_w + v_b)
    observed = window.mean
    rise = observed - m_b
    relative = rise / m_b if m_b > 0 else (math.inf if rise > 0 else 0.0)
    # A flat baseline and a flat window (se == 0): any rise at all is certain.
    z = rise / se if se > 0 else (math.copysign(math.inf, rise) if rise else 0.0)
    p_value = 0.5 * math.erfc(z / math.sqrt(2.0))
    floor = config.floor(m_b)
    above_floor = rise >= config.min_abs_rise and relative >= config.min_rel_rise and rise > 0
    half_band = _NORMAL.inv_cdf(1.0 - config.per_window_alpha) * se
    # The CUSUM increments: "d above the reference" against "at the reference". Without floors the
    # reference is the baseline and the d's are multiples of one standard error of the window.
    reference = m_b + floor + math.sqrt(v_b)
    unit = floor if floor > 0 else math.sqrt(v_w)
    llrs = tuple(
        _increment(observed, window.n, v_w, reference, share * unit, rate) for share in config.detect_excess
    )
    watch_llr = _increment(observed, window.n, v_w, m_b, config.detect_excess[0] * unit, rate)
    return Assessment(
        observed=observed,
        expected=m_b,
        expected_low=m_b - half_band,
        expected_high=m_b + half_band,
        z=z,
        p_value=p_value,
        absolute_rise=rise,
        relative_rise=relative,
        reference=reference,
        floor=floor,
        baseline_se=math.sqrt(v_b),
        llr=llrs,
        watch_llr=watch_llr,
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
        cusum=incident.cusum,
        threshold=state.config.threshold,
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
        return replace(state, baseline=state.baseline.with_window(obs.moments, config.baseline_windows)), ()

    a = assess(state.baseline, obs.moments, config, rate=state.metric in RATE_METRICS)
    incident = state.incident
    if incident is None and a.baseline_se > config.baseline_precision * a.floor:
        # Still learning the level: a verdict against a baseline this uncertain would be about the baseline.
        return replace(state, baseline=state.baseline.with_window(obs.moments, config.baseline_windows)), ()
    if incident is None:
        before = state.cusums or (0.0,) * len(a.llr)
        starts = state.run_started or (None,) * len(a.llr)
        cusums = tuple(max(0.0, c + llr) for c, llr in zip(before, a.llr, strict=True))
        started = tuple(
            (s or obs.window_start) if c > 0 else None for c, s in zip(cusums, starts, strict=True)
        )
        watch = max(0.0, state.watch + a.watch_llr)
        baseline, held = state.baseline, (*state.held, obs.moments)
        if watch <= 0.0:
            # The watch fell back: whatever it held was ordinary after all (dropping it would bias the
            # baseline low).
            for window in held:
                baseline = baseline.with_window(window, config.baseline_windows)
            held = ()
        elif len(held) > config.baseline_windows:
            # Up for a whole baseline without an alert: the level is within the floors, so it is the new
            # normal rather than a regression.
            baseline, held = baseline.with_window(held[0], config.baseline_windows), held[1:]
        crossed = [k for k, c in enumerate(cusums) if c >= config.threshold]
        if not crossed:
            return replace(
                state, baseline=baseline, cusums=cusums, run_started=started, watch=watch, held=held
            ), ()
        # The most evidence names the incident: its run's start is the change point.
        k = max(crossed, key=lambda j: cusums[j])
        opened_at = started[k]
        assert opened_at is not None
        incident = Incident(
            incident_id(state.version, state.metric, opened_at),
            opened_at,
            a.expected,
            a.relative_rise,
            config.severity(a.relative_rise),
            cusums[k],
        )
        opened = replace(
            state, cusums=(), run_started=(), watch=0.0, held=(), clear_streak=0, incident=incident
        )
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
