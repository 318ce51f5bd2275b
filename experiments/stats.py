"""Sufficient statistics and anytime-valid tests for prompt A/B experiments. Pure; standard library only.

Unit of analysis
    Users are randomized, interactions are measured. A user's interactions are correlated (the same person
    regenerates often or rarely), so treating interactions as independent understates the variance and
    inflates false decisions (the clustered A/A simulation in ``tests/unit/test_experiment_stats.py`` shows
    it). Every metric is therefore a *ratio metric* over users: user ``i`` contributes ``n_i`` (interactions
    that carry the metric) and ``y_i`` (their summed value), the estimate is ``sum(y) / sum(n)`` and its
    variance comes from the delta method with users as independent units::

        Var(R) ~= sum_i (y_i - R n_i)^2 / N^2 * U / (U - 1)

    (Deng, Knoblich & Lu, "Applying the Delta Method in OutcomeMetric Analytics", KDD 2018; Deng, Lu & Litz,
    "Trustworthy Analysis of Online A/B Tests", WSDM 2017). It needs only ``U, N, Y`` and the sums of
    ``n^2, y^2, n*y`` over users, which :class:`UserRatioStats` keeps exactly while users keep arriving.

Anytime validity
    The evaluator looks after every window, so a fixed-horizon z-test would be run hundreds of times and its
    5% error would grow towards certainty. We use the normal-mixture sequential probability ratio test
    (mSPRT) of Robbins (1970) as used for A/B tests by Johari, Koomen, Pekelis & Walsh, "Peeking at A/B Tests"
    (KDD 2017; Operations Research 2022). For an asymptotically normal estimate ``theta_hat`` with variance
    ``V`` and a N(0, tau^2) mixture over the effect::

        Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2 / (2 V (V + tau^2)))

    is a nonnegative (super)martingale under ``theta = theta0``; by Ville's inequality it ever exceeds
    ``1/alpha`` with probability at most ``alpha``, whatever the number of looks. ``1/Lambda(0)`` is the
    always-valid p-value at this look and inverting the test gives the confidence sequence
    ``theta_hat +- radius`` with ``radius^2 = V (V + tau^2) / tau^2 * (2 log(1/alpha) + log(1 + tau^2 / V))``
    (Howard, Ramdas, McAuliffe & Sekhon, Ann. Statist. 2021, normal-mixture boundary). ``V`` is a plug-in
    estimate, which makes these *asymptotic* confidence sequences (Waudby-Smith, Arbour, Sinha, Kennedy &
    Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", 2021/2024): the
    methods behind Optimizely's Stats Engine (mSPRT) and Eppo's sequential analysis (asymptotic CS).

The sample-ratio check is in :mod:`experiments.srm`, the CUPED adjustment in :mod:`experiments.cuped`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import TYPE_CHECKING

from schemas.experiments import OutcomeMetric

if TYPE_CHECKING:
    from schemas.derived import InteractionOutcome

_NORMAL = NormalDist()


def outcome_values(outcome: InteractionOutcome) -> dict[OutcomeMetric, float | None]:
    """The value each metric takes for one interaction outcome; ``None`` where the metric does not apply.

    Edit distance is only defined for edited interactions, so it is ``None`` for the others and the
    mean edit distance is a mean over edited interactions only.
    """
    return {
        OutcomeMetric.REGENERATION_RATE: float(outcome.regenerated),
        OutcomeMetric.CORRECTION_RATE: float(outcome.corrected),
        OutcomeMetric.ABANDONMENT_RATE: float(outcome.abandoned),
        OutcomeMetric.EDIT_DISTANCE: outcome.edit_distance_norm if outcome.edited else None,
        OutcomeMetric.RESPONSE_TIME: float(outcome.response_time_ms),
    }


# ----------------------------------------------------------------------------------------------------
# Sufficient statistics


@dataclass(frozen=True, slots=True)
class RatioMoments:
    """User-level sufficient statistics of one ratio metric ``sum(y) / sum(n)`` over a set of users.

    ``users`` counts users with ``n_i > 0``; ``n``/``y`` are the totals; ``nn``, ``yy``, ``ny`` are the sums
    over users of ``n_i^2``, ``y_i^2`` and ``n_i * y_i`` (per-user totals, not per-interaction values).

    The other sums carry each user's pre-experiment value ``c_i`` of the metric (``h_i = 1`` when the
    user has one, else ``c_i = h_i = 0``) for the CUPED adjustment (:mod:`experiments.cuped`): ``nc`` and
    ``nh`` are the sums of ``n_i c_i`` and ``n_i h_i``, ``nnc``, ``nncc``, ``nnh`` those of ``n_i^2 c_i``,
    ``n_i^2 c_i^2``, ``n_i^2 h_i``, and ``nyc``, ``nyh`` those of ``n_i y_i c_i``, ``n_i y_i h_i``. They are
    all 0 when no user has a pre-experiment value.
    """

    users: int = 0
    n: float = 0.0
    y: float = 0.0
    nn: float = 0.0
    yy: float = 0.0
    ny: float = 0.0
    nc: float = 0.0
    nh: float = 0.0
    nnc: float = 0.0
    nncc: float = 0.0
    nnh: float = 0.0
    nyc: float = 0.0
    nyh: float = 0.0

    @classmethod
    def from_user_totals(
        cls, totals: Iterable[tuple[float, float]] | Iterable[tuple[float, float, float | None]]
    ) -> RatioMoments:
        """Moments of users given as ``(n_i, y_i)`` or ``(n_i, y_i, c_i)`` (``c_i`` the pre-experiment value,
        ``None`` when unknown); users with ``n_i <= 0`` are skipped."""
        sums = [0.0] * 12
        users = 0
        for row in totals:
            n_i, y_i = row[0], row[1]
            if n_i <= 0:
                continue
            users += 1
            covariate = row[2] if len(row) > 2 else None
            for k, term in enumerate(_user_terms(n_i, y_i, covariate)):
                sums[k] += term
        return cls(users, *sums)

    def __add__(self, other: RatioMoments) -> RatioMoments:
        """Pool two *disjoint* sets of users (e.g. shards keyed by user). For overlapping users merge
        :class:`UserRatioStats` instead, which knows who is who."""
        o = other
        return RatioMoments(
            self.users + o.users, self.n + o.n, self.y + o.y, self.nn + o.nn, self.yy + o.yy,
            self.ny + o.ny, self.nc + o.nc, self.nh + o.nh, self.nnc + o.nnc, self.nncc + o.nncc,
            self.nnh + o.nnh, self.nyc + o.nyc, self.nyh + o.nyh,
        )  # fmt: skip

    @property
    def mean(self) -> float:
        """``sum(y) / sum(n)``: the metric's rate or mean; NaN when there is no data."""
        return self.y / self.n if self.n > 0 else math.nan

    @property
    def has_covariate(self) -> bool:
        """Whether any user carries a pre-experiment value."""
        return self.nh > 0

    def variance_of_mean(self, at: float | None = None) -> float:
        """Delta-method variance of :attr:`mean` with users as independent units.

        ``at`` evaluates the residuals ``y_i - at * n_i`` around another value than the estimate (a null
        hypothesis' mean, as a score test does). NaN with fewer than two users.
        """
        if self.users < 2 or self.n <= 0:
            return math.nan
        m = self.mean if at is None else at
        # The sums can be huge and nearly cancel (latency in ms); clamp the tiny negatives rounding leaves.
        residual_ss = max(self.yy - 2.0 * m * self.ny + m * m * self.nn, 0.0)
        return residual_ss / (self.n * self.n) * self.users / (self.users - 1)


#: The summed fields of :class:`RatioMoments`, in order (all but ``users``).
_SUM_FIELDS = ("n", "y", "nn", "yy", "ny", "nc", "nh", "nnc", "nncc", "nnh", "nyc", "nyh")


def _user_terms(n: float, y: float, covariate: float | None) -> tuple[float, ...]:
    """One user's contribution to each of :data:`_SUM_FIELDS`."""
    c, h = (covariate, 1.0) if covariate is not None else (0.0, 0.0)
    nn = n * n
    return (n, y, nn, y * y, n * y, n * c, n * h, nn * c, nn * c * c, nn * h, n * y * c, n * y * h)


class UserRatioStats:
    """Incrementally maintained :class:`RatioMoments` of one metric, from ``(user_id, value)`` observations.

    A user keeps contributing interactions over time, which changes their ``n_i``/``y_i`` and therefore
    the squared sums; we keep each user's totals and adjust the running sums by the difference, so every
    update is O(1) and :meth:`moments` is exact at any time. Memory is one entry per user.

    A user's pre-experiment value (the CUPED covariate) is fixed when they first appear: later ``covariate``
    arguments for a user already present are ignored.
    """

    __slots__ = ("_per_user", "_sums")

    def __init__(self) -> None:
        self._per_user: dict[str, tuple[float, float, float | None]] = {}
        self._sums = [0.0] * len(_SUM_FIELDS)

    def add(self, user_id: str, value: float, count: float = 1.0, covariate: float | None = None) -> None:
        """Record ``count`` interactions of ``user_id`` whose values sum to ``value``; ``covariate`` is the
        user's pre-experiment value of the metric, if known."""
        self._update(user_id, count, value, covariate)

    def retract(self, user_id: str, value: float, count: float = 1.0) -> None:
        """Undo an earlier :meth:`add` (an outcome that was amended or replaced)."""
        self._update(user_id, -count, -value, None)

    def _update(self, user_id: str, d_n: float, d_y: float, covariate: float | None) -> None:
        known = self._per_user.get(user_id)
        if known is None:
            old_n, old_y, c = 0.0, 0.0, covariate
            old = (0.0,) * len(_SUM_FIELDS)
        else:
            old_n, old_y, c = known
            old = _user_terms(old_n, old_y, c)
        new_n, new_y = old_n + d_n, old_y + d_y
        if new_n <= 0:
            # A user retracted to nothing leaves no trace, not a rounding residue in y.
            self._per_user.pop(user_id, None)
            new = (0.0,) * len(_SUM_FIELDS)
        else:
            self._per_user[user_id] = (new_n, new_y, c)
            new = _user_terms(new_n, new_y, c)
        s = self._sums
        for k in range(len(s)):
            s[k] += new[k] - old[k]

    def merge(self, other: UserRatioStats) -> None:
        """Fold ``other`` into this one; correct even when both saw the same users (e.g. two partitions)."""
        for user_id, (n_i, y_i, c_i) in other._per_user.items():
            self._update(user_id, n_i, y_i, c_i)

    def moments(self) -> RatioMoments:
        """The current sufficient statistics."""
        return RatioMoments(len(self._per_user), *self._sums)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """What the decision needs from one arm: distinct users, interactions and per-metric moments."""

    users: int = 0
    interactions: int = 0
    metrics: Mapping[OutcomeMetric, RatioMoments] = field(default_factory=dict)

    def moments(self, metric: OutcomeMetric) -> RatioMoments:
        """The metric's moments; empty when the arm has none for it."""
        return self.metrics.get(metric, RatioMoments())


class ArmAccumulator:
    """Incremental per-arm statistics over all metrics, fed one interaction at a time."""

    __slots__ = ("_interactions", "_metrics", "_per_user_interactions")

    def __init__(self) -> None:
        self._per_user_interactions: dict[str, int] = {}
        self._interactions = 0
        self._metrics: dict[OutcomeMetric, UserRatioStats] = {}

    def add(
        self,
        user_id: str,
        values: Mapping[OutcomeMetric, float | None],
        covariates: Mapping[OutcomeMetric, float | None] | None = None,
    ) -> bool:
        """Record one interaction of ``user_id``; metrics whose value is ``None`` do not apply to it.

        ``covariates`` are the user's pre-experiment values (taken when the user is new to a metric).
        Returns whether the user is new to this arm.
        """
        joined = self._count(user_id, +1)
        for metric, value in values.items():
            if value is not None:
                covariate = covariates.get(metric) if covariates is not None else None
                self._metrics.setdefault(metric, UserRatioStats()).add(user_id, value, covariate=covariate)
        return joined

    def retract(self, user_id: str, values: Mapping[OutcomeMetric, float | None]) -> bool:
        """Undo :meth:`add` of the same values: an amended outcome is replaced by retract(old), add(new).

        Returns whether the user has left this arm (no interaction of theirs is counted any more).
        """
        left = self._count(user_id, -1)
        for metric, value in values.items():
            if value is not None:
                self._metrics.setdefault(metric, UserRatioStats()).retract(user_id, value)
        return left

    def _count(self, user_id: str, delta: int) -> bool:
        before = self._per_user_interactions.get(user_id, 0)
        left = before + delta
        self._interactions += delta
        if left <= 0:
            self._per_user_interactions.pop(user_id, None)
        else:
            self._per_user_interactions[user_id] = left
        return (before <= 0) != (left <= 0)

    def merge(self, other: ArmAccumulator) -> None:
        """Fold ``other`` into this one; users seen by both are combined, not double counted."""
        for user_id, count in other._per_user_interactions.items():
            self._count(user_id, count)
        for metric, stats in other._metrics.items():
            self._metrics.setdefault(metric, UserRatioStats()).merge(stats)

    def users(self) -> Iterator[str]:
        """The users with at least one counted interaction."""
        return iter(self._per_user_interactions)

    def snapshot(self) -> ArmStats:
        """An immutable copy of the current statistics, for :func:`decision.evaluate`."""
        return ArmStats(
            users=len(self._per_user_interactions),
            interactions=self._interactions,
            metrics={metric: stats.moments() for metric, stats in self._metrics.items()},
        )


# ----------------------------------------------------------------------------------------------------
# Effects and the anytime-valid test


@dataclass(frozen=True, slots=True)
class Effect:
    """An estimate with its (plug-in) variance; ``variance`` is NaN when it cannot be estimated."""

    estimate: float
    variance: float

    @property
    def estimable(self) -> bool:
        """True when both numbers are finite and the variance is positive."""
        return math.isfinite(self.estimate) and math.isfinite(self.variance) and self.variance > 0


def relative_effect(control: RatioMoments, treatment: RatioMoments) -> Effect:
    """``mean_T / mean_C - 1`` with its delta-method variance (both arms' user-level variances).

    ``Var ~= Var_T / m_C^2 + m_T^2 Var_C / m_C^4``; not estimable when the control mean is 0.
    """
    m_c, m_t = control.mean, treatment.mean
    v_c, v_t = control.variance_of_mean(), treatment.variance_of_mean()
    if not (m_c > 0 and math.isfinite(m_t)):
        return Effect(math.nan, math.nan)
    return Effect(m_t / m_c - 1.0, v_t / m_c**2 + m_t**2 * v_c / m_c**4)


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """The normal-mixture test of ``theta = 0`` and the confidence sequence at one look.

    ``p_value`` is ``min(1, 1/e_value)`` at this look; the experiment's always-valid p-value is the
    running minimum over looks (a caller that keeps history may take it; the decision ends the experiment
    at the first crossing anyway). ``ci_low``/``ci_high`` hold the effect with probability ``1 - alpha``
    simultaneously at every look (infinite when the effect is not estimable).
    """

    estimate: float
    ci_low: float
    ci_high: float
    alpha: float
    e_value: float
    p_value: float


def mixture_log_e_value(effect: Effect, mixture_sd: float, null: float = 0.0) -> float:
    """log of the normal-mixture likelihood ratio ``Lambda(null)`` (module docstring); 0 if not estimable."""
    if not effect.estimable:
        return 0.0
    v, t2 = effect.variance, mixture_sd * mixture_sd
    d = effect.estimate - null
    return 0.5 * math.log(v / (v + t2)) + t2 * d * d / (2.0 * v * (v + t2))


def mixture_radius(variance: float, alpha: float, mixture_sd: float) -> float:
    """Half-width of the normal-mixture confidence sequence for an estimate with this variance."""
    if not (math.isfinite(variance) and variance > 0):
        return math.inf
    t2 = mixture_sd * mixture_sd
    return math.sqrt(
        variance * (variance + t2) / t2 * (2.0 * math.log(1.0 / alpha) + math.log1p(t2 / variance))
    )


def sequential_test(effect: Effect, alpha: float, mixture_sd: float) -> SequentialResult:
    """The mSPRT of ``theta = 0`` and the ``1 - alpha`` confidence sequence for one effect, at one look.

    ``ci_low > 0`` (or ``ci_high < 0``) happens, across all looks of an experiment with no true effect,
    with probability at most ``alpha`` (asymptotically, by Ville's inequality).
    """
    if not 0 < alpha < 1 or mixture_sd <= 0:
        raise ValueError("need 0 < alpha < 1 and mixture_sd > 0")
    log_e = mixture_log_e_value(effect, mixture_sd)
    radius = mixture_radius(effect.variance, alpha, mixture_sd)
    e_value = math.exp(min(log_e, 700.0))
    return SequentialResult(
        estimate=effect.estimate,
        ci_low=effect.estimate - radius if effect.estimable else -math.inf,
        ci_high=effect.estimate + radius if effect.estimable else math.inf,
        alpha=alpha,
        e_value=e_value,
        p_value=min(1.0, math.exp(-log_e)),
    )


@lru_cache(maxsize=256)
def optimal_mixture_sd(relative_effect: float, alpha: float, power: float = 0.8) -> float:
    """The mixture scale ``tau`` that makes the test most powerful for an effect of this size.

    The boundary is tightest at ``tau^2 = x V`` where ``x = 2 log(1/alpha) + log(1 + x)`` (set the
    derivative of the radius in ``tau`` to zero); the variance ``V`` at which the effect is detected with
    ``power`` solves ``|effect| = (sqrt(1 + x) + z_power) sqrt(V)``. Result: ``tau ~= 0.75 |effect|`` at
    alpha = 0.025; the boundary is flat around the optimum, so a rough effect is good enough.
    """
    two_log = 2.0 * math.log(1.0 / alpha)
    x = two_log
    for _ in range(50):
        x = two_log + math.log1p(x)
    return math.sqrt(x) * abs(relative_effect) / (math.sqrt(1.0 + x) + _NORMAL.inv_cdf(power))


# ----------------------------------------------------------------------------------------------------
# Sample size


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Interactions needed per arm (users when each user has one interaction, see ``design_effect``)."""

    control: int
    treatment: int
    mixture_sd: float

    @property
    def total(self) -> int:
        """Both arms together."""
        return self.control + self.treatment


def required_sample_size(
    baseline_rate: float,
    relative_effect: float,
    alpha: float = 0.05,
    split: tuple[float, float] = (0.8, 0.2),
    power: float = 0.8,
    mixture_sd: float | None = None,
    baseline_sd: float | None = None,
    design_effect: float = 1.0,
    min_relative_improvement: float = 0.0,
    improvement_alpha: float = 0.25,
) -> SampleSize:
    """Per-arm sample size at which :func:`sequential_test` detects ``relative_effect`` with ``power``.

    ``relative_effect`` is the true ``mean_T / mean_C - 1`` (-0.10 for a regeneration rate going from
    30% to 27%); ``alpha`` is the level of the test (pass ``ExperimentConfig.primary_alpha``); ``split`` is
    the intended (control, treatment) share of users; ``mixture_sd`` defaults to
    :func:`optimal_mixture_sd` of the effect and must match the one the experiment uses.

    The returned ``n`` is where the confidence sequence *at that single look* excludes 0 with probability
    ``power``: ``P(|effect_hat| - radius(V_hat) > 0) = power``, with the spread of that margin from the delta
    method (the plug-in radius moves with the estimate, which matters). Looking earlier can only add
    detections, so the probability to have detected *by* ``n`` with any look schedule is at least ``power``
    (up to the normal approximation) -- conservative by construction, and checked in simulation.

    For a mean metric pass ``baseline_sd`` (the per-interaction standard deviation); ``design_effect``
    inflates the variance for users with several correlated interactions (``1 + (m - 1) * ICC`` for ``m``
    interactions per user).

    With ``min_relative_improvement`` the improvement must also be credibly more than that minimum (the
    ``primary_better`` rule of :mod:`experiments.decision`: the sequence at the two-sided level
    ``2 * improvement_alpha`` clears it); ``n`` is where the harder of the two conditions holds with
    ``power``. An improvement that is not larger than the minimum has no such ``n``: ValueError.
    """
    control_share, treatment_share = split
    if not (0 < treatment_share < 1 and math.isclose(control_share + treatment_share, 1.0)):
        raise ValueError("split must be two positive shares summing to 1")
    if relative_effect == 0 or relative_effect <= -1:
        raise ValueError("relative_effect must be non-zero and > -1")
    if not 0 < alpha < 1 or not 0 < power < 1 or design_effect <= 0:
        raise ValueError("alpha and power must lie in (0, 1) and design_effect must be positive")
    if min_relative_improvement < 0 or not 0 < improvement_alpha < 0.5:
        raise ValueError("need min_relative_improvement >= 0 and 0 < improvement_alpha < 0.5")
    if min_relative_improvement > 0 and -relative_effect <= min_relative_improvement:
        raise ValueError("an improvement no larger than the minimum is never promoted with any power")
    m_c = baseline_rate
    m_t = baseline_rate * (1.0 + relative_effect)
    if baseline_sd is None:
        if not (0 < m_c < 1 and 0 < m_t < 1):
            raise ValueError("a rate metric needs baseline and treatment rates inside (0, 1)")

        def unit_variance(m: float) -> float:
            return m * (1.0 - m)

    else:
        if m_c <= 0 or baseline_sd <= 0:
            raise ValueError("a mean metric needs a positive baseline and baseline_sd")
        sd2 = baseline_sd**2

        def unit_variance(m: float) -> float:
            return sd2

    tau = optimal_mixture_sd(relative_effect, alpha, power) if mixture_sd is None else mixture_sd
    z = _NORMAL.inv_cdf(power)
    sign = math.copysign(1.0, relative_effect)

    # Each condition as a margin that must be positive: (shift, level) = the sequence at ``level`` clears
    # ``shift`` (0: it excludes no difference; the minimum: the improvement is credibly above it).
    conditions = [(0.0, alpha)]
    if min_relative_improvement > 0:
        conditions.append((min_relative_improvement, 2.0 * improvement_alpha))

    def detects(total: float) -> bool:
        n_t = total * treatment_share / design_effect
        n_c = total * control_share / design_effect
        for shift, level in conditions:

            def margin(mt: float, mc: float, shift: float = shift, level: float = level) -> float:
                # "The sequence clears the shift" as a function of the arm means, written linearly in them
                # (sign * (m_t / m_c - 1) - shift > radius  <=>  sign * (m_t - m_c) - shift * m_c > radius
                # * m_c) because a ratio of means is skewed and its normal approximation overstates the
                # power at low rates.
                v = unit_variance(mt) / n_t / mc**2 + mt**2 * unit_variance(mc) / n_c / mc**4
                return sign * (mt - mc) - shift * mc - mixture_radius(v, level, tau) * mc

            # The plug-in radius moves with the estimate (correlation ~ +0.9), which widens the spread of
            # the margin by ~8%; ignoring it overstates the power by 2-3 points. So: delta method on it.
            h_t, h_c = m_t * 1e-4, m_c * 1e-4
            d_t = (margin(m_t + h_t, m_c) - margin(m_t - h_t, m_c)) / (2 * h_t)
            d_c = (margin(m_t, m_c + h_c) - margin(m_t, m_c - h_c)) / (2 * h_c)
            spread = math.sqrt(d_t**2 * unit_variance(m_t) / n_t + d_c**2 * unit_variance(m_c) / n_c)
            if margin(m_t, m_c) < z * spread:
                return False
        return True

    low, high = 1.0, 2.0
    while not detects(high):
        low, high = high, high * 2.0
    while high - low > 0.5:
        mid = (low + high) / 2.0
        low, high = (low, mid) if detects(mid) else (mid, high)
    return SampleSize(
        control=math.ceil(high * control_share), treatment=math.ceil(high * treatment_share), mixture_sd=tau
    )
