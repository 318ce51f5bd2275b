"""CUPED: the adjusted effect from user-level sums, its validity at every look, and the users it saves."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from experiments.cuped import cuped_relative_effect
from experiments.simulate import SimulationSpec, pre_period_correlation, simulate
from experiments.stats import RatioMoments, UserRatioStats, relative_effect
from schemas.experiments import DecisionAction

User = tuple[float, float, float | None]


def population(rng: random.Random, size: int, effect: float, history: float = 1.0) -> list[User]:
    """Users with their own rate; ``history`` of them with a pre-experiment rate over 10 interactions."""
    users: list[User] = []
    for _ in range(size):
        p = rng.betavariate(1.4, 2.6)
        n = 1 + int(math.log(1 - rng.random()) / math.log(0.75))
        y = sum(rng.random() < p * (1 + effect) for _ in range(n))
        c = sum(rng.random() < p for _ in range(10)) / 10 if rng.random() < history else None
        users.append((float(n), float(y), c))
    return users


def brute_force(control: list[User], treatment: list[User]) -> tuple[float, float]:
    """The adjusted relative effect and its variance, spelled out user by user (one covariate, everyone
    has one): linearized residuals, the pooled coefficient, the adjusted means, the delta method."""
    arms = []
    for users in (control, treatment):
        n = sum(u[0] for u in users)
        r = sum(u[1] for u in users) / n
        x = sum(u[0] * (u[2] or 0.0) for u in users) / n
        k = len(users)
        e_y = [u[1] - r * u[0] for u in users]
        e_x = [u[0] * (u[2] or 0.0) - x * u[0] for u in users]
        f = k / (k - 1) / n**2
        arms.append((r, x, f * sum(a * a for a in e_y), f * sum(a * b for a, b in zip(e_y, e_x, strict=True)),
                     f * sum(b * b for b in e_x)))  # fmt: skip
    (r_c, x_c, vy_c, cyx_c, vx_c), (r_t, x_t, vy_t, cyx_t, vx_t) = arms
    g_t, g_c = 1 / r_c**2, r_t**2 / r_c**4
    theta = (g_t * cyx_t + g_c * cyx_c) / (g_t * vx_t + g_c * vx_c)
    n_c, n_t = sum(u[0] for u in control), sum(u[0] for u in treatment)
    pooled = (x_c * n_c + x_t * n_t) / (n_c + n_t)
    m_c, m_t = r_c - theta * (x_c - pooled), r_t - theta * (x_t - pooled)
    v_c = vy_c - 2 * theta * cyx_c + theta**2 * vx_c
    v_t = vy_t - 2 * theta * cyx_t + theta**2 * vx_t
    return m_t / m_c - 1, v_t / m_c**2 + m_t**2 * v_c / m_c**4


def test_the_adjusted_effect_matches_the_user_by_user_computation() -> None:
    rng = random.Random(1)
    control, treatment = population(rng, 3_000, 0.0), population(rng, 1_000, -0.1)
    adjusted = cuped_relative_effect(
        RatioMoments.from_user_totals(control), RatioMoments.from_user_totals(treatment)
    )
    estimate, variance = brute_force(control, treatment)
    assert adjusted.effect.estimate == pytest.approx(estimate, rel=1e-9)
    assert adjusted.effect.variance == pytest.approx(variance, rel=1e-9)
    assert adjusted.theta[1] == 0.0  # everyone has a history: the indicator carries nothing
    assert adjusted.variance_reduction > 0.2


def test_without_any_history_the_effect_is_the_plain_one() -> None:
    rng = random.Random(2)
    control, treatment = population(rng, 500, 0.0, history=0.0), population(rng, 500, 0.0, history=0.0)
    c, t = RatioMoments.from_user_totals(control), RatioMoments.from_user_totals(treatment)
    adjusted = cuped_relative_effect(c, t)
    assert adjusted.effect == relative_effect(c, t)
    assert (adjusted.theta, adjusted.variance_reduction) == ((0.0, 0.0), 0.0)


def test_new_users_without_history_are_adjusted_by_the_indicator_alone() -> None:
    """Half the users have no history: the adjustment uses both covariates and still reduces variance."""
    rng = random.Random(3)
    control, treatment = population(rng, 4_000, 0.0, history=0.5), population(rng, 4_000, 0.0, history=0.5)
    adjusted = cuped_relative_effect(
        RatioMoments.from_user_totals(control), RatioMoments.from_user_totals(treatment)
    )
    assert adjusted.variance_reduction > 0.05
    assert abs(adjusted.effect.estimate) < 4 * math.sqrt(adjusted.effect.variance)


def test_incremental_stats_with_covariates_equal_the_batch_computation() -> None:
    """Users come back in any order; the covariate is the one given at their first interaction."""
    rng = random.Random(4)
    stats = UserRatioStats()
    totals: dict[str, list[float]] = {}
    covariates: dict[str, float | None] = {}
    for _ in range(5_000):
        user = f"u{rng.randint(0, 300)}"
        value = float(rng.random() < 0.3)
        covariate = rng.random() if rng.random() < 0.7 else None
        stats.add(user, value, covariate=covariate)
        covariates.setdefault(user, covariate)
        totals.setdefault(user, [0.0, 0.0])
        totals[user][0] += 1
        totals[user][1] += value
    expected = RatioMoments.from_user_totals((n, y, covariates[u]) for u, (n, y) in totals.items())
    got = stats.moments()
    for name in ("n", "y", "nn", "yy", "ny", "nc", "nh", "nnc", "nncc", "nnh", "nyc", "nyh"):
        assert getattr(got, name) == pytest.approx(getattr(expected, name)), name


# The CUPED target of issue 14: users whose pre-experiment rate correlates about 0.5 with their rate in the
# experiment (a spread of 0.23 around 35%, 5 interactions in the experiment and 10 before, on average).
CORRELATED: dict[str, Any] = {
    "rate_spread": 0.23,
    "interactions": 5.0,
    "pre_interactions": 10.0,
    "population": 20_000,
}


def test_the_simulated_users_correlate_as_the_target_says() -> None:
    correlation = pre_period_correlation(SimulationSpec(**CORRELATED))
    assert correlation == pytest.approx(0.5, abs=0.05)


def test_cuped_reaches_80_percent_power_for_a_10_percent_gain_with_25_percent_fewer_users() -> None:
    """The same simulated users analysed with and without CUPED (every run has its own seed): the users by
    which 80% of the runs have found the 10% gain significantly better."""
    base = {"effect": -0.10, "users": 15_000, "runs": 150, "seed": 14_5, **CORRELATED}
    plain = simulate(SimulationSpec(cuped=False, **base)).users_for_detection(0.8)
    adjusted = simulate(SimulationSpec(cuped=True, **base)).users_for_detection(0.8)
    assert plain is not None
    assert adjusted is not None
    assert adjusted <= 0.75 * plain


def test_cuped_keeps_the_sequence_valid_at_every_look() -> None:
    """A/A on the same users with CUPED, a look every 500 users: found better or worse in at most the
    primary's alpha of the runs."""
    spec = SimulationSpec(
        effect=0.0, users=15_000, runs=200, seed=14_6, min_relative_improvement=0.10, **CORRELATED
    )
    result = simulate(spec)
    found = sum(r.detected is not None or r.action is DecisionAction.REVERT for r in result.runs)
    assert found / len(result.runs) <= spec.config().primary_alpha
