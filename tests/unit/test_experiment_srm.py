"""The sequential sample-ratio test: its e-value, its validity under continuous looking, its power."""

from __future__ import annotations

import math
import random

import pytest

from experiments.simulate import binomial
from experiments.srm import chi2_sf, srm_log_e_value, srm_test


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [(3.841458820694124, 1, 0.05), (10.827566170662733, 1, 0.001), (5.991464547107979, 2, 0.05),
     (11.070497693516351, 5, 0.05), (0.5, 3, 0.9188914116546758)],
)  # fmt: skip
def test_chi2_survival_function_matches_tabulated_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-6)


def test_chi2_survival_function_closed_forms() -> None:
    for x in (0.01, 1.0, 7.0, 30.0, 150.0):
        assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)
        for half_df in (1, 2, 5, 12):
            # Even df: a Poisson tail, exp(-x/2) * sum_{k < df/2} (x/2)^k / k!.
            poisson = math.exp(-x / 2) * sum((x / 2) ** k / math.factorial(k) for k in range(half_df))
            assert chi2_sf(x, 2 * half_df) == pytest.approx(poisson, rel=1e-9)


def test_the_e_value_is_the_beta_binomial_bayes_factor() -> None:
    """Two arms: the Dirichlet mixture is a Beta(K p, K (1 - p)) prior on the treatment share; integrate the
    likelihood ratio against it numerically and compare."""
    concentration, share = 100.0, 0.2
    control, treated = 140, 60
    a, b = concentration * share, concentration * (1 - share)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    steps = 200_000
    total = 0.0
    for i in range(1, steps):
        q = i / steps
        log_prior = (a - 1) * math.log(q) + (b - 1) * math.log1p(-q) - log_beta
        log_ratio = treated * math.log(q / share) + control * math.log((1 - q) / (1 - share))
        total += math.exp(log_prior + log_ratio) / steps
    assert srm_log_e_value((control, treated), (0.8, 0.2), concentration) == pytest.approx(
        math.log(total), abs=1e-4
    )


def test_the_e_value_is_a_martingale_under_the_intended_split() -> None:
    """E[E_{n+1} | counts] = E_n exactly: the next user goes to each arm with its intended share."""
    for counts in ((0, 0), (7, 1), (700, 250), (8_123, 1_877)):
        now = math.exp(srm_log_e_value(counts, (0.8, 0.2)))
        after = 0.8 * math.exp(srm_log_e_value((counts[0] + 1, counts[1]), (0.8, 0.2))) + 0.2 * math.exp(
            srm_log_e_value((counts[0], counts[1] + 1), (0.8, 0.2))
        )
        assert after == pytest.approx(now, rel=1e-9)


def test_srm_flags_45_55_on_an_intended_50_50() -> None:
    result = srm_test((4_500, 5_500), (0.5, 0.5))
    assert result.mismatch
    assert not result.confirmed
    assert result.chi2 == pytest.approx(100.0)
    assert result.p_value == pytest.approx(1 / result.e_value)


def test_srm_accepts_the_intended_split_and_waits_on_tiny_samples() -> None:
    healthy = srm_test((8_010, 1_990), (0.8, 0.2))
    assert not healthy.mismatch
    assert healthy.confirmed
    tiny = srm_test((9, 1), (0.8, 0.2))
    assert tiny.checked
    assert not tiny.mismatch
    assert not srm_test((0, 0), (0.8, 0.2)).checked
    assert srm_test((3_000, 3_000, 4_000), (1, 1, 1)).mismatch


def test_a_lean_that_is_not_proof_is_not_confirmed() -> None:
    leaning = srm_test((7_880, 2_120), (0.8, 0.2))
    assert not leaning.mismatch
    assert not leaning.confirmed


def test_looking_after_every_user_keeps_false_alarms_under_the_threshold() -> None:
    """500 healthy experiments checked after each of 2,000 users at a lax threshold of 5%: at most 5% are
    ever flagged. A chi-square test at p < 0.05 after every user flags most of them."""
    rng = random.Random(1)
    runs, users, threshold = 500, 2_000, 0.05
    bar = math.log(1 / threshold)
    sequential = fixed = 0
    for _ in range(runs):
        treated = 0
        flagged_sequential = flagged_fixed = False
        for n in range(1, users + 1):
            treated += rng.random() < 0.2
            if not flagged_sequential and srm_log_e_value((n - treated, treated), (0.8, 0.2)) >= bar:
                flagged_sequential = True
            if not flagged_fixed and n >= 25 and (treated - 0.2 * n) ** 2 >= 3.841 * 0.16 * n:
                flagged_fixed = True
            if flagged_sequential and flagged_fixed:
                break
        sequential += flagged_sequential
        fixed += flagged_fixed
    assert sequential / runs <= threshold
    assert fixed / runs > 0.3


def test_a_two_point_mismatch_is_found_within_20_000_users() -> None:
    """78/22 on 80/20, checked every 500 users: flagged in >= 95% of runs by 20,000 users."""
    rng = random.Random(2)
    runs, found = 200, 0
    for _ in range(runs):
        treated = users = 0
        while users < 20_000:
            treated += binomial(rng, 500, 0.22)
            users += 500
            if srm_test((users - treated, treated), (0.8, 0.2)).mismatch:
                found += 1
                break
    assert found / runs >= 0.95


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        srm_test((10, 5), (0.8, 0.0))
    with pytest.raises(ValueError, match="threshold"):
        srm_test((10, 5), (0.8, 0.2), threshold=0.0)
    with pytest.raises(ValueError, match="concentration"):
        srm_log_e_value((10, 5), (0.8, 0.2), concentration=0.0)
