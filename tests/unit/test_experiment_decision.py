"""The experiment decision: its rules on hand-built statistics, and simulation acceptance tests.

The simulations draw user-level aggregates directly (a binomial count per arm and window, or whole users
resampled from a pool) instead of individual events, which keeps thousands of peeking experiments fast.
``bench/bench_experiments.py`` reuses them with more runs and prints the figures.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache

import pytest

from experiments import (
    ArmStats,
    Decision,
    ExperimentConfig,
    RatioMoments,
    evaluate,
    required_sample_size,
)
from schemas.experiments import DecisionAction, DecisionRule, OutcomeMetric

CONTROL, TREATMENT = "v1.0", "v1.1"
LATENCY_MEAN_MS, LATENCY_SD_MS = 800.0, 300.0

# ----------------------------------------------------------------------------------------------------
# Simulation helpers (also used by bench/bench_experiments.py)


@lru_cache(maxsize=1024)
def _binomial_cdf(n: int, p: float) -> tuple[float, ...]:
    log_p, log_q = math.log(p), math.log1p(-p)
    acc, cdf = 0.0, []
    for k in range(n + 1):
        acc += math.exp(
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
        )
        cdf.append(acc)
    return tuple(cdf)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """An exact Binomial(n, p) draw by inverting the (cached) CDF: one uniform per draw."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    cdf = _binomial_cdf(n, p)
    return min(bisect.bisect_left(cdf, rng.random() * cdf[-1]), n)


def single_interaction_window(
    rng: random.Random, users: int, rates: Mapping[OutcomeMetric, float]
) -> dict[OutcomeMetric, RatioMoments]:
    """Moments of ``users`` new users with one interaction each: binomial counts for the rate metrics and
    normal latencies, whose sum and sum of squares are drawn exactly (normal sum, chi-square deviations)."""
    moments = {metric: _binary_moments(users, binomial(rng, users, p)) for metric, p in rates.items()}
    if users > 1:
        total = rng.gauss(users * LATENCY_MEAN_MS, math.sqrt(users) * LATENCY_SD_MS)
        squares = rng.gammavariate((users - 1) / 2, 2 * LATENCY_SD_MS**2) + total * total / users
        moments[OutcomeMetric.RESPONSE_TIME] = RatioMoments(users, users, total, users, squares, total)
    return moments


def _binary_moments(interactions: int, events: int) -> RatioMoments:
    # One interaction per "user": n_i = 1 and y_i in {0, 1}, so n^2 = n and y^2 = n*y = y.
    return RatioMoments(interactions, interactions, events, interactions, events, events)


def simulate_experiment(
    rng: random.Random,
    config: ExperimentConfig,
    control_rates: Mapping[OutcomeMetric, float],
    treatment_rates: Mapping[OutcomeMetric, float],
    users_per_window: int,
    windows: int,
    treatment_share: float | None = None,
) -> tuple[Decision, int]:
    """Run one experiment, evaluating after every window; stop at the first promote/revert/invalid.

    Users are assigned with probability ``treatment_share`` (default: the config's intended share).
    Returns the last decision and the number of windows seen.
    """
    share = config.split[1] if treatment_share is None else treatment_share
    totals: dict[str, dict[OutcomeMetric, RatioMoments]] = {CONTROL: {}, TREATMENT: {}}
    users = {CONTROL: 0, TREATMENT: 0}
    decision = evaluate(config, {})
    for window in range(1, windows + 1):
        treated = binomial(rng, users_per_window, share)
        for arm, n, rates in (
            (CONTROL, users_per_window - treated, control_rates),
            (TREATMENT, treated, treatment_rates),
        ):
            for metric, moments in single_interaction_window(rng, n, rates).items():
                totals[arm][metric] = totals[arm].get(metric, RatioMoments()) + moments
            users[arm] += n
        stats = {arm: ArmStats(users[arm], users[arm], dict(totals[arm])) for arm in totals}
        decision = evaluate(config, stats)
        if decision.action is not DecisionAction.CONTINUE:
            return decision, window
    return decision, windows


UserRow = tuple[int, int, int, int, int]


def clustered_user_pool(
    rng: random.Random,
    size: int,
    mean_interactions: float = 8.0,
    rate: float = 0.3,
    concentration: float = 2.0,
) -> list[UserRow]:
    """Users with many interactions (geometric, mean ``mean_interactions``) and their own regeneration rate
    (Beta with mean ``rate``; ICC = 1 / (concentration + 1), 1/3 by default). Rows hold ``(n, y, n^2, y^2,
    n*y)`` so that a resampled cohort's moments are column sums."""
    pool = []
    for _ in range(size):
        n = 1
        while rng.random() > 1.0 / mean_interactions:
            n += 1
        p = rng.betavariate(rate * concentration, (1 - rate) * concentration)
        y = sum(rng.random() < p for _ in range(n))
        pool.append((n, y, n * n, y * y, n * y))
    return pool


def simulate_clustered_aa(
    rng: random.Random, config: ExperimentConfig, pool: Sequence[UserRow], users_per_window: int, windows: int
) -> tuple[DecisionAction, DecisionAction]:
    """A/A test on users resampled from ``pool``, analysed two ways after every window: with users as the
    unit (the library) and, as a foil, with every interaction treated as independent. Returns the first
    non-continue action of each analysis (continue if none)."""
    sums = {CONTROL: [0, 0, 0, 0, 0, 0], TREATMENT: [0, 0, 0, 0, 0, 0]}
    by_user = by_interaction = DecisionAction.CONTINUE
    for _ in range(windows):
        treated = binomial(rng, users_per_window, config.split[1])
        for arm, k in ((CONTROL, users_per_window - treated), (TREATMENT, treated)):
            if k:
                cohort = [k, *(sum(column) for column in zip(*rng.choices(pool, k=k), strict=True))]
                sums[arm] = [a + b for a, b in zip(sums[arm], cohort, strict=True)]
        user_level = {
            arm: ArmStats(s[0], s[1], {OutcomeMetric.REGENERATION_RATE: RatioMoments(*s)})
            for arm, s in sums.items()
        }
        naive = {
            arm: ArmStats(s[0], s[1], {OutcomeMetric.REGENERATION_RATE: _binary_moments(s[1], s[2])})
            for arm, s in sums.items()
        }
        if by_user is DecisionAction.CONTINUE:
            by_user = evaluate(config, user_level).action
        if by_interaction is DecisionAction.CONTINUE:
            by_interaction = evaluate(config, naive).action
    return by_user, by_interaction


# ----------------------------------------------------------------------------------------------------
# Rules on hand-built statistics


def arm(users: int, rates: Mapping[OutcomeMetric, float], latency_ms: float = LATENCY_MEAN_MS) -> ArmStats:
    """An arm of single-interaction users with exactly these rates and a latency with sd 300 ms."""
    metrics = {metric: _binary_moments(users, round(rate * users)) for metric, rate in rates.items()}
    total = users * latency_ms
    squares = (users - 1) * LATENCY_SD_MS**2 + total * total / users
    metrics[OutcomeMetric.RESPONSE_TIME] = RatioMoments(users, users, total, users, squares, total)
    return ArmStats(users, users, metrics)


BASE = {OutcomeMetric.REGENERATION_RATE: 0.30, OutcomeMetric.ABANDONMENT_RATE: 0.10}


def with_rates(**changes: float) -> dict[OutcomeMetric, float]:
    rates = dict(BASE)
    rates.update({OutcomeMetric(name): value for name, value in changes.items()})
    return rates


@pytest.fixture
def config() -> ExperimentConfig:
    return ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5))


def test_no_data_continues_for_lack_of_sample(config: ExperimentConfig) -> None:
    decision = evaluate(config, {})
    assert (decision.action, decision.rule) == (DecisionAction.CONTINUE, DecisionRule.INSUFFICIENT_SAMPLE)
    assert decision.primary is None


def test_below_minimum_sample_never_decides_even_on_a_huge_effect(config: ExperimentConfig) -> None:
    stats = {CONTROL: arm(400, BASE), TREATMENT: arm(400, with_rates(regeneration_rate=0.05))}
    assert evaluate(config, stats).rule is DecisionRule.INSUFFICIENT_SAMPLE


def test_clear_improvement_is_promoted_with_the_numbers_behind_it(config: ExperimentConfig) -> None:
    stats = {CONTROL: arm(20_000, BASE), TREATMENT: arm(20_000, with_rates(regeneration_rate=0.24))}
    decision = evaluate(config, stats)
    assert (decision.action, decision.rule) == (DecisionAction.PROMOTE, DecisionRule.PRIMARY_BETTER)
    primary = decision.primary
    assert primary is not None
    assert (primary.metric, primary.control_n, primary.treatment_n) == (
        OutcomeMetric.REGENERATION_RATE,
        20_000,
        20_000,
    )
    assert primary.control_mean == pytest.approx(0.30)
    assert primary.treatment_mean == pytest.approx(0.24)
    assert primary.relative_effect == pytest.approx(-0.20)
    assert primary.ci_low < -0.20 < primary.ci_high < 0
    assert primary.ci_level == pytest.approx(1 - config.primary_alpha)
    assert primary.p_value < config.primary_alpha
    assert primary.p_value == pytest.approx(1 / primary.e_value)
    assert {g.metric for g in decision.guardrails} == {
        OutcomeMetric.ABANDONMENT_RATE,
        OutcomeMetric.RESPONSE_TIME,
    }
    assert (decision.control.users, decision.treatment.interactions) == (20_000, 20_000)
    assert "regeneration_rate" in decision.reason


def test_worse_guardrail_blocks_promote_and_reverts(config: ExperimentConfig) -> None:
    treatment = with_rates(regeneration_rate=0.24, abandonment_rate=0.13)
    decision = evaluate(config, {CONTROL: arm(20_000, BASE), TREATMENT: arm(20_000, treatment)})
    assert (decision.action, decision.rule) == (DecisionAction.REVERT, DecisionRule.GUARDRAIL_WORSE)
    assert decision.primary is not None
    assert decision.primary.significantly_better
    assert "abandonment_rate" in decision.reason


def test_slower_responses_are_a_guardrail_too(config: ExperimentConfig) -> None:
    stats = {CONTROL: arm(20_000, BASE), TREATMENT: arm(20_000, BASE, latency_ms=900.0)}
    decision = evaluate(config, stats)
    assert (decision.action, decision.rule) == (DecisionAction.REVERT, DecisionRule.GUARDRAIL_WORSE)
    assert "response_time_ms" in decision.reason


def test_guardrail_tolerance_allows_a_small_known_cost() -> None:
    config = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5), guardrail_tolerance=0.25)
    stats = {CONTROL: arm(20_000, BASE), TREATMENT: arm(20_000, BASE, latency_ms=900.0)}
    assert evaluate(config, stats).rule is DecisionRule.NO_SIGNIFICANT_DIFFERENCE


def test_worse_primary_reverts(config: ExperimentConfig) -> None:
    stats = {CONTROL: arm(20_000, BASE), TREATMENT: arm(20_000, with_rates(regeneration_rate=0.36))}
    decision = evaluate(config, stats)
    assert (decision.action, decision.rule) == (DecisionAction.REVERT, DecisionRule.PRIMARY_WORSE)


def test_improvement_proven_smaller_than_the_minimum_is_not_promoted(config: ExperimentConfig) -> None:
    stats = {CONTROL: arm(400_000, BASE), TREATMENT: arm(400_000, with_rates(regeneration_rate=0.291))}
    decision = evaluate(config, stats)
    assert (decision.action, decision.rule) == (
        DecisionAction.CONTINUE,
        DecisionRule.BELOW_MINIMUM_IMPROVEMENT,
    )
    assert decision.primary is not None
    assert -0.10 < decision.primary.ci_low < decision.primary.ci_high < 0


def test_small_difference_on_little_data_continues(config: ExperimentConfig) -> None:
    stats = {CONTROL: arm(2_000, BASE), TREATMENT: arm(2_000, with_rates(regeneration_rate=0.29))}
    decision = evaluate(config, stats)
    assert (decision.action, decision.rule) == (
        DecisionAction.CONTINUE,
        DecisionRule.NO_SIGNIFICANT_DIFFERENCE,
    )


def test_other_primary_metrics_are_supported() -> None:
    config = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5), primary=OutcomeMetric.CORRECTION_RATE)
    control = arm(20_000, {**BASE, OutcomeMetric.CORRECTION_RATE: 0.20})
    treatment = arm(20_000, {**BASE, OutcomeMetric.CORRECTION_RATE: 0.16})
    decision = evaluate(config, {CONTROL: control, TREATMENT: treatment})
    assert decision.action is DecisionAction.PROMOTE
    assert decision.primary is not None
    assert decision.primary.metric is OutcomeMetric.CORRECTION_RATE


def test_alpha_is_split_between_primary_and_guardrails() -> None:
    config = ExperimentConfig(CONTROL, TREATMENT)
    assert config.primary_alpha + len(config.guardrails) * config.guardrail_alpha == pytest.approx(
        config.alpha
    )
    alone = ExperimentConfig(CONTROL, TREATMENT, guardrails=())
    assert alone.primary_alpha == alone.alpha


@pytest.mark.parametrize(
    "changes",
    [
        {"treatment": CONTROL},
        {"split": (0.7, 0.2)},
        {"alpha": 0.0},
        {"guardrails": (OutcomeMetric.REGENERATION_RATE,)},
        {"min_relative_improvement": -0.1},
    ],
)
def test_inconsistent_configs_are_refused(changes: dict[str, object]) -> None:
    arguments: dict[str, object] = {"control": CONTROL, "treatment": TREATMENT, **changes}
    with pytest.raises(ValueError, match=r"."):
        ExperimentConfig(**arguments)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# Simulation acceptance tests


def test_aa_with_peeking_every_window_keeps_false_decisions_under_alpha() -> None:
    """2,000 A/A experiments, default config (80/20, two guardrails), a decision after each of 40 windows."""
    rng = random.Random(20260101)
    config = ExperimentConfig(CONTROL, TREATMENT)
    runs, windows = 2_000, 40
    outcomes = Counter(
        simulate_experiment(rng, config, BASE, BASE, 250, windows)[0].action for _ in range(runs)
    )
    false_decisions = (outcomes[DecisionAction.PROMOTE] + outcomes[DecisionAction.REVERT]) / runs
    assert false_decisions <= config.alpha, outcomes
    # The SRM check runs at every look too; Bonferroni over the looks bounds its false alarms.
    assert outcomes[DecisionAction.INVALID] / runs <= windows * config.srm_threshold, outcomes


def test_power_at_the_reported_sample_size() -> None:
    """A true 10% relative improvement (30% -> 27%) at the reported n is promoted in >= 80% of runs."""
    rng = random.Random(20260102)
    config = ExperimentConfig(CONTROL, TREATMENT)
    needed = required_sample_size(
        0.30, -0.10, alpha=config.primary_alpha, split=config.split, mixture_sd=config.effective_mixture_sd
    )
    runs, windows = 500, 40
    per_window = math.ceil(needed.total / windows)
    treatment = with_rates(regeneration_rate=0.27)
    promoted = sum(
        simulate_experiment(rng, config, BASE, treatment, per_window, windows)[0].action
        is DecisionAction.PROMOTE
        for _ in range(runs)
    )
    assert promoted / runs >= 0.80


def test_sample_ratio_mismatch_invalidates_the_experiment() -> None:
    """45/55 on an intended 50/50 with 10,000 users -- and a treatment that looks great."""
    config = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5))
    stats = {CONTROL: arm(4_500, BASE), TREATMENT: arm(5_500, with_rates(regeneration_rate=0.20))}
    decision = evaluate(config, stats)
    assert (decision.action, decision.rule) == (DecisionAction.INVALID, DecisionRule.SAMPLE_RATIO_MISMATCH)
    assert decision.srm.p_value < 1e-20


def test_simulated_assignment_bug_is_flagged_and_a_sound_one_is_not() -> None:
    rng = random.Random(20260103)
    config = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5))
    broken, _ = simulate_experiment(rng, config, BASE, BASE, 1_000, 10, treatment_share=0.55)
    assert (broken.action, broken.rule) == (DecisionAction.INVALID, DecisionRule.SAMPLE_RATIO_MISMATCH)
    assert broken.control.users + broken.treatment.users <= 10_000
    sound, _ = simulate_experiment(rng, config, BASE, BASE, 1_000, 10, treatment_share=0.5)
    assert sound.action is DecisionAction.CONTINUE


def test_clustered_users_aa_is_valid_where_interaction_level_analysis_fails() -> None:
    """Users with ~8 interactions each and their own regeneration rate (ICC 1/3), 1,000 A/A experiments with
    20 looks. Users as the unit: false decisions <= alpha. Interactions as the unit: far above it."""
    rng = random.Random(20260104)
    config = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5), guardrails=())
    pool = clustered_user_pool(rng, 20_000)
    runs = 1_000
    results = [simulate_clustered_aa(rng, config, pool, 100, 20) for _ in range(runs)]
    decisive = (DecisionAction.PROMOTE, DecisionAction.REVERT)
    user_level = sum(by_user in decisive for by_user, _ in results) / runs
    interaction_level = sum(naive in decisive for _, naive in results) / runs
    assert user_level <= config.alpha
    assert interaction_level > 4 * config.alpha
