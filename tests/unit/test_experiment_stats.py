"""Sufficient statistics, the anytime-valid test, the SRM check and the sample size."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from experiments import (
    ArmAccumulator,
    Effect,
    RatioMoments,
    UserRatioStats,
    optimal_mixture_sd,
    outcome_values,
    relative_effect,
    required_sample_size,
    sequential_test,
)
from experiments.stats import mixture_radius
from schemas import InteractionOutcome
from schemas.experiments import OutcomeMetric

# ----------------------------------------------------------------------------------------------------
# Sufficient statistics


def brute_force_variance(users: list[tuple[float, float]]) -> float:
    """The delta-method variance of sum(y)/sum(n), spelled out from per-user totals."""
    n = sum(u[0] for u in users)
    r = sum(u[1] for u in users) / n
    k = len(users)
    return sum((y - r * m) ** 2 for m, y in users) / n**2 * k / (k - 1)


def test_moments_give_the_delta_method_variance_of_a_ratio() -> None:
    rng = random.Random(1)
    users = [(float(m), float(rng.randint(0, m))) for m in (rng.randint(1, 20) for _ in range(300))]
    moments = RatioMoments.from_user_totals(users)
    assert moments.users == 300
    assert moments.mean == pytest.approx(sum(y for _, y in users) / sum(m for m, _ in users))
    assert moments.variance_of_mean() == pytest.approx(brute_force_variance(users))


def test_single_interaction_users_reduce_to_the_binomial_variance() -> None:
    moments = RatioMoments.from_user_totals([(1.0, 1.0)] * 30 + [(1.0, 0.0)] * 70)
    assert moments.variance_of_mean() == pytest.approx(0.3 * 0.7 / 100 * 100 / 99)


def test_empty_or_single_user_moments_have_no_variance() -> None:
    assert math.isnan(RatioMoments().mean)
    assert math.isnan(RatioMoments.from_user_totals([(3.0, 1.0)]).variance_of_mean())


def test_incremental_user_stats_equal_the_batch_computation() -> None:
    """Users come back many times in any order; the running sums stay exact."""
    rng = random.Random(2)
    stats = UserRatioStats()
    totals: dict[str, list[float]] = {}
    for _ in range(5_000):
        user = f"u{rng.randint(0, 400)}"
        value = float(rng.random() < 0.3)
        stats.add(user, value)
        totals.setdefault(user, [0.0, 0.0])
        totals[user][0] += 1
        totals[user][1] += value
    expected = RatioMoments.from_user_totals((n, y) for n, y in totals.values())
    got = stats.moments()
    assert got.users == expected.users
    for name in ("n", "y", "nn", "yy", "ny"):
        assert getattr(got, name) == pytest.approx(getattr(expected, name))


def test_merging_partitions_that_share_users_does_not_double_count() -> None:
    rng = random.Random(3)
    whole, left, right = UserRatioStats(), UserRatioStats(), UserRatioStats()
    for i in range(2_000):
        user, value = f"u{rng.randint(0, 150)}", rng.random()
        whole.add(user, value)
        (left if i % 2 else right).add(user, value)
    left.merge(right)
    assert left.moments().users == whole.moments().users
    assert left.moments().variance_of_mean() == pytest.approx(whole.moments().variance_of_mean())


def test_retract_undoes_an_amended_outcome() -> None:
    stats = UserRatioStats()
    stats.add("a", 1.0)
    stats.add("b", 0.0)
    before = stats.moments()
    stats.add("a", 0.0)
    stats.retract("a", 0.0)
    assert stats.moments() == before
    stats.retract("b", 0.0)
    assert stats.moments().users == 1


def interaction_outcome(user_id: str, **flags: object) -> InteractionOutcome:
    now = datetime(2026, 11, 26, 10, tzinfo=UTC)
    fields: dict[str, object] = {
        "interaction_id": uuid4(),
        "version": 1,
        "session_id": "s1",
        "user_id": user_id,
        "prompt": "summarize this",
        "prompt_version": "v1.1",
        "model": "gpt-4o-mini",
        "input_category": None,
        "experiment_id": "exp-1",
        "variant": "v1.1",
        "response_chars": 120,
        "response_time_ms": 900,
        "interaction_created_at": now,
        "settled_at": now,
        "amended": False,
        "feedback_events": 1,
        "regenerated": False,
        "edited": False,
        "edit_distance": None,
        "edit_distance_norm": None,
        "word_edit_distance": None,
        "edit_size": None,
        "thumbs_up": False,
        "thumbs_down": False,
        "copied": False,
        "copied_fraction": None,
        "partial_copy": False,
        "accepted": False,
        "rephrased": False,
        "clarifying_followup": False,
        "next_interaction_id": None,
        "abandoned": False,
        "short_dwell": False,
        "corrected": False,
        "time_to_first_correction_ms": None,
        "completed_without_edit": True,
    }
    fields.update(flags)
    return InteractionOutcome.model_validate(fields)


def test_arm_accumulator_counts_users_interactions_and_edit_distance_of_edits_only() -> None:
    acc = ArmAccumulator()
    acc.add("a", outcome_values(interaction_outcome("a", regenerated=True)))
    edited = interaction_outcome(
        "a",
        edited=True,
        corrected=True,
        edit_distance=12,
        edit_distance_norm=0.1,
        completed_without_edit=False,
    )
    acc.add("a", outcome_values(edited))
    acc.add("b", outcome_values(interaction_outcome("b", abandoned=True)))
    snapshot = acc.snapshot()
    assert (snapshot.users, snapshot.interactions) == (2, 3)
    assert snapshot.moments(OutcomeMetric.REGENERATION_RATE).mean == pytest.approx(1 / 3)
    assert snapshot.moments(OutcomeMetric.CORRECTION_RATE).mean == pytest.approx(1 / 3)
    assert snapshot.moments(OutcomeMetric.ABANDONMENT_RATE).mean == pytest.approx(1 / 3)
    assert snapshot.moments(OutcomeMetric.EDIT_DISTANCE).n == 1
    assert snapshot.moments(OutcomeMetric.EDIT_DISTANCE).mean == pytest.approx(0.1)
    assert snapshot.moments(OutcomeMetric.RESPONSE_TIME).mean == pytest.approx(900.0)

    other = ArmAccumulator()
    other.add("b", outcome_values(interaction_outcome("b")))
    acc.merge(other)
    assert (acc.snapshot().users, acc.snapshot().interactions) == (2, 4)
    acc.retract("b", outcome_values(interaction_outcome("b")))
    assert acc.snapshot() == snapshot


# ----------------------------------------------------------------------------------------------------
# The anytime-valid test


def test_relative_effect_and_its_delta_method_variance() -> None:
    control = RatioMoments.from_user_totals([(1.0, 1.0)] * 300 + [(1.0, 0.0)] * 700)
    treatment = RatioMoments.from_user_totals([(1.0, 1.0)] * 270 + [(1.0, 0.0)] * 730)
    effect = relative_effect(control, treatment)
    assert effect.estimate == pytest.approx(-0.10)
    v_c, v_t = control.variance_of_mean(), treatment.variance_of_mean()
    assert effect.variance == pytest.approx(v_t / 0.3**2 + 0.27**2 * v_c / 0.3**4)
    assert not relative_effect(RatioMoments.from_user_totals([(1.0, 0.0)] * 10), treatment).estimable


def test_confidence_sequence_and_p_value_agree() -> None:
    """The sequence excludes 0 exactly when the always-valid p-value is at most alpha."""
    for estimate in (x / 1_000 for x in range(-150, 151, 3)):
        result = sequential_test(Effect(estimate, 0.03**2), alpha=0.05, mixture_sd=0.08)
        excludes_zero = result.ci_low > 0 or result.ci_high < 0
        assert excludes_zero == (result.p_value <= 0.05), estimate
        assert result.p_value == pytest.approx(min(1.0, 1 / result.e_value))


def test_radius_is_the_normal_mixture_boundary_of_howard_et_al() -> None:
    """Unit-variance form sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha)), V = 1/t."""
    for t, rho2, alpha in ((10, 0.1, 0.05), (1_000, 0.01, 0.025), (50_000, 0.5, 0.001)):
        expected = math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha))
        assert mixture_radius(1 / t, alpha, math.sqrt(rho2)) == pytest.approx(expected)


def test_unestimable_effect_is_never_significant() -> None:
    result = sequential_test(Effect(math.nan, math.nan), alpha=0.05, mixture_sd=0.1)
    assert (result.ci_low, result.ci_high, result.p_value) == (-math.inf, math.inf, 1.0)


def test_confidence_sequence_covers_the_truth_at_every_look_at_once() -> None:
    """Gaussian random walks with a true effect of 0.05, 200 looks each: the share of runs whose sequence
    misses the truth at *any* look stays under alpha (a fixed 95% interval re-checked would miss ~40%)."""
    rng = random.Random(4)
    alpha, runs, misses, fixed_misses = 0.05, 2_000, 0, 0
    for _ in range(runs):
        total, missed, fixed_missed = 0.0, False, False
        for t in range(1, 201):
            total += rng.gauss(0.05, 1.0)
            effect = Effect(total / t, 1.0 / t)
            result = sequential_test(effect, alpha, mixture_sd=0.3)
            missed = missed or not result.ci_low <= 0.05 <= result.ci_high
            fixed_missed = fixed_missed or abs(effect.estimate - 0.05) > 1.96 * math.sqrt(effect.variance)
        misses += missed
        fixed_misses += fixed_missed
    assert misses / runs <= alpha
    assert fixed_misses / runs > 4 * alpha


def test_optimal_mixture_sd_makes_the_boundary_tightest_at_the_planned_size() -> None:
    alpha, effect = 0.025, 0.10
    tau = optimal_mixture_sd(effect, alpha)
    needed = required_sample_size(0.3, -effect, alpha=alpha, split=(0.5, 0.5), mixture_sd=tau)
    for other in (0.6 * tau, 1.5 * tau):
        assert required_sample_size(0.3, -effect, alpha=alpha, split=(0.5, 0.5), mixture_sd=other).total > (
            needed.total
        )


# ----------------------------------------------------------------------------------------------------
# Sample size


def test_sample_size_grows_for_smaller_effects_stricter_alpha_and_uneven_splits() -> None:
    base = required_sample_size(0.30, -0.10, alpha=0.05, split=(0.5, 0.5))
    assert base.control == base.treatment
    assert required_sample_size(0.30, -0.05, alpha=0.05, split=(0.5, 0.5)).total > 3 * base.total
    assert required_sample_size(0.30, -0.10, alpha=0.01, split=(0.5, 0.5)).total > base.total
    uneven = required_sample_size(0.30, -0.10, alpha=0.05, split=(0.8, 0.2))
    assert uneven.total > base.total
    assert uneven.control == pytest.approx(4 * uneven.treatment, rel=0.01)
    clustered = required_sample_size(0.30, -0.10, alpha=0.05, split=(0.5, 0.5), design_effect=3.0)
    assert clustered.total == pytest.approx(3 * base.total, rel=0.01)


def test_sample_size_is_larger_than_a_fixed_horizon_test_needs() -> None:
    """The price of peeking: a one-look z-test (alpha 5%, power 80%) needs ~3,550 per arm for 30% -> 27%."""
    fixed = (1.959964 + 0.841621) ** 2 * (0.3 * 0.7 + 0.27 * 0.73) / 0.03**2
    sequential = required_sample_size(0.30, -0.10, alpha=0.05, split=(0.5, 0.5))
    assert 1.2 * fixed < sequential.control < 2.5 * fixed


def test_sample_size_for_a_mean_metric_uses_its_standard_deviation() -> None:
    narrow = required_sample_size(0.2, -0.10, baseline_sd=0.1)
    wide = required_sample_size(0.2, -0.10, baseline_sd=0.2)
    assert wide.total == pytest.approx(4 * narrow.total, rel=0.02)


@pytest.mark.parametrize(
    "arguments",
    [
        {"baseline_rate": 0.3, "relative_effect": 0.0},
        {"baseline_rate": 0.0, "relative_effect": -0.1},
        {"baseline_rate": 0.6, "relative_effect": 1.0},
        {"baseline_rate": 0.3, "relative_effect": -0.1, "split": (0.5, 0.4)},
        {"baseline_rate": 0.3, "relative_effect": -0.1, "alpha": 1.5},
    ],
)
def test_sample_size_refuses_impossible_inputs(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        required_sample_size(**arguments)  # type: ignore[arg-type]
