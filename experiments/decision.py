"""The decision after each window of a prompt A/B experiment: continue, promote, revert or invalid. Pure.

Rules, in the order they are applied (the first that fires wins; :class:`DecisionRule` names them):

1. ``sample_ratio_mismatch`` -> ``invalid``: the user counts per arm fail the chi-square goodness-of-fit
   test against the intended split (p < ``srm_threshold``). Nothing else is trusted when assignment or
   logging is broken.
2. ``insufficient_sample`` -> ``continue``: an arm has fewer than ``min_interactions_per_arm`` interactions.
3. ``guardrail_worse`` -> ``revert``: a guardrail's anytime-valid confidence sequence for the relative
   change lies entirely above ``guardrail_tolerance`` (significantly worse). It also blocks promote, since
   it is checked first.
4. ``primary_worse`` -> ``revert``: the primary metric's confidence sequence lies entirely above 0.
5. ``primary_better`` -> ``promote``: the primary's confidence sequence lies entirely below 0 (the treatment
   is better) *and* an improvement of at least ``min_relative_improvement`` is still plausible, i.e. the
   sequence's far end reaches it (``-ci_low >= min_relative_improvement``).
6. ``below_minimum_improvement`` -> ``continue``: significantly better, but the whole confidence sequence
   shows an improvement smaller than the minimum: not worth the change, a human should end the test.
7. ``no_significant_difference`` -> ``continue``.

Why this definition of the minimum improvement. Requiring the *bound* of the interval to clear 10% makes a
true 10% improvement undetectable (the sequence covers the truth, so its bound stays below 10% with
probability >= 1 - alpha). Requiring the *point estimate* to reach 10% gives a power at a true 10% that
depends on how often one looks (about 50% at a single look). The rule above refuses exactly the
improvements the data prove too small, costs a true improvement of at least the minimum no power (its far
bound reaches the minimum unless the sequence misses the truth, probability <= alpha), and so
:func:`stats.required_sample_size` stays the honest plan.

Error budget. ``alpha`` bounds, in an A/A test with any number of looks, the probability of *any* promote or
revert (asymptotically). It is split by Bonferroni: ``primary_alpha`` for the two-sided primary test and
``guardrail_alpha`` for each guardrail's two-sided test (only its "worse" side acts).

All metrics are lower-is-better, so the relative effect ``mean_T / mean_C - 1`` is negative for an
improvement. See :mod:`experiments.stats` for the methods and their references.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.stats import (
    ArmStats,
    SrmResult,
    optimal_mixture_sd,
    relative_effect,
    sequential_test,
    srm_test,
)
from schemas.experiments import DecisionAction, DecisionRule, OutcomeMetric


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """One experiment: its arms, intended split, metrics and decision thresholds."""

    control: str
    treatment: str
    #: Intended (control, treatment) shares of users.
    split: tuple[float, float] = (0.8, 0.2)
    primary: OutcomeMetric = OutcomeMetric.REGENERATION_RATE
    guardrails: tuple[OutcomeMetric, ...] = (OutcomeMetric.ABANDONMENT_RATE, OutcomeMetric.RESPONSE_TIME)
    min_interactions_per_arm: int = 500
    #: Relative improvement of the primary worth promoting (0.10: at least 10% lower).
    min_relative_improvement: float = 0.10
    #: Bound on the probability of any wrong promote/revert over the whole experiment.
    alpha: float = 0.05
    #: Share of ``alpha`` spent on the primary metric when there are guardrails.
    primary_alpha_share: float = 0.5
    #: A guardrail only counts as worse when its relative increase is surely above this.
    guardrail_tolerance: float = 0.0
    srm_threshold: float = 0.001
    #: Scale of the normal mixture over relative effects; ``None`` tunes it to ``min_relative_improvement``.
    mixture_sd: float | None = None

    def __post_init__(self) -> None:
        if self.control == self.treatment:
            raise ValueError("control and treatment must differ")
        if not (min(self.split) > 0 and math.isclose(sum(self.split), 1.0)):
            raise ValueError("split must be two positive shares summing to 1")
        if not 0 < self.alpha < 1 or not 0 < self.primary_alpha_share <= 1:
            raise ValueError("need 0 < alpha < 1 and 0 < primary_alpha_share <= 1")
        if self.primary in self.guardrails:
            raise ValueError("the primary metric cannot also be a guardrail")
        if self.min_relative_improvement < 0 or self.min_interactions_per_arm < 2:
            raise ValueError("min_relative_improvement must be >= 0 and min_interactions_per_arm >= 2")

    @property
    def primary_alpha(self) -> float:
        """Level of the primary metric's two-sided test (all of ``alpha`` without guardrails)."""
        return self.alpha * self.primary_alpha_share if self.guardrails else self.alpha

    @property
    def guardrail_alpha(self) -> float:
        """Level of each guardrail's test: the rest of ``alpha`` split evenly."""
        if not self.guardrails:
            return 0.0
        return self.alpha * (1.0 - self.primary_alpha_share) / len(self.guardrails)

    @property
    def effective_mixture_sd(self) -> float:
        """The mixture scale in use: ``mixture_sd``, or the one most powerful for the minimum improvement."""
        if self.mixture_sd is not None:
            return self.mixture_sd
        return optimal_mixture_sd(max(self.min_relative_improvement, 0.01), self.primary_alpha)


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """Sample sizes of one arm at this look."""

    name: str
    users: int
    interactions: int


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric compared between arms: means, relative effect, its confidence sequence and p-value.

    ``relative_effect = treatment_mean / control_mean - 1`` (negative is better); ``ci_low``/``ci_high``
    are its anytime-valid ``ci_level`` confidence sequence at this look; ``p_value`` is always-valid
    (``min(1, 1/e_value)``, running minimum left to the caller). ``*_n`` count interactions carrying the
    metric, ``*_users`` the users behind them.
    """

    metric: OutcomeMetric
    role: str
    control_mean: float
    treatment_mean: float
    control_n: int
    treatment_n: int
    control_users: int
    treatment_users: int
    relative_effect: float
    ci_low: float
    ci_high: float
    ci_level: float
    p_value: float
    e_value: float

    @property
    def significantly_better(self) -> bool:
        """The treatment is lower on this metric, with the stated confidence."""
        return self.ci_high < 0

    @property
    def significantly_worse(self) -> bool:
        """The treatment is higher on this metric, with the stated confidence."""
        return self.ci_low > 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The action, the rule that fired, a one-line reason and every number behind it."""

    action: DecisionAction
    rule: DecisionRule
    reason: str
    control: ArmSummary
    treatment: ArmSummary
    srm: SrmResult
    primary: MetricResult | None
    guardrails: tuple[MetricResult, ...]


def compare(
    metric: OutcomeMetric,
    role: str,
    control: ArmStats,
    treatment: ArmStats,
    alpha: float,
    mixture_sd: float,
) -> MetricResult:
    """Compare one metric between arms with the normal-mixture test at level ``alpha`` (two-sided)."""
    c, t = control.moments(metric), treatment.moments(metric)
    test = sequential_test(relative_effect(c, t), alpha, mixture_sd)
    return MetricResult(
        metric=metric,
        role=role,
        control_mean=c.mean,
        treatment_mean=t.mean,
        control_n=round(c.n),
        treatment_n=round(t.n),
        control_users=c.users,
        treatment_users=t.users,
        relative_effect=test.estimate,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        ci_level=1.0 - alpha,
        p_value=test.p_value,
        e_value=test.e_value,
    )


def _describe(result: MetricResult) -> str:
    return (
        f"{result.metric} {result.control_mean:.4g} -> {result.treatment_mean:.4g} "
        f"({result.relative_effect:+.1%}, {result.ci_level:.1%} CS "
        f"[{result.ci_low:+.1%}, {result.ci_high:+.1%}], p={result.p_value:.3g})"
    )


def evaluate(config: ExperimentConfig, stats_by_arm: Mapping[str, ArmStats]) -> Decision:
    """Decide what to do with the experiment given each arm's statistics so far (rules: module docstring).

    Arms missing from ``stats_by_arm`` count as empty; arms other than control and treatment are ignored.
    Pure: the same statistics always give the same decision, so replays are harmless.
    """
    control = stats_by_arm.get(config.control, ArmStats())
    treatment = stats_by_arm.get(config.treatment, ArmStats())
    arms = (
        ArmSummary(config.control, control.users, control.interactions),
        ArmSummary(config.treatment, treatment.users, treatment.interactions),
    )
    srm = srm_test((control.users, treatment.users), config.split, config.srm_threshold)

    def decide(
        action: DecisionAction,
        rule: DecisionRule,
        reason: str,
        primary: MetricResult | None = None,
        guardrails: tuple[MetricResult, ...] = (),
    ) -> Decision:
        return Decision(action, rule, reason, arms[0], arms[1], srm, primary, guardrails)

    if srm.mismatch:
        return decide(
            DecisionAction.INVALID,
            DecisionRule.SAMPLE_RATIO_MISMATCH,
            f"users {srm.observed} vs expected {tuple(round(e) for e in srm.expected)}: "
            f"chi2={srm.chi2:.1f}, p={srm.p_value:.2g} < {srm.threshold}",
        )
    smallest = min(control.interactions, treatment.interactions)
    if smallest < config.min_interactions_per_arm:
        return decide(
            DecisionAction.CONTINUE,
            DecisionRule.INSUFFICIENT_SAMPLE,
            f"{smallest} interactions in the smaller arm, {config.min_interactions_per_arm} needed",
        )

    tau = config.effective_mixture_sd
    primary = compare(config.primary, "primary", control, treatment, config.primary_alpha, tau)
    guardrails = tuple(
        compare(metric, "guardrail", control, treatment, config.guardrail_alpha, tau)
        for metric in config.guardrails
    )
    worse = [g for g in guardrails if g.ci_low > config.guardrail_tolerance]
    if worse:
        return decide(
            DecisionAction.REVERT,
            DecisionRule.GUARDRAIL_WORSE,
            "guardrail worse: " + "; ".join(_describe(g) for g in worse),
            primary,
            guardrails,
        )
    if primary.significantly_worse:
        return decide(
            DecisionAction.REVERT,
            DecisionRule.PRIMARY_WORSE,
            "worse: " + _describe(primary),
            primary,
            guardrails,
        )
    if primary.significantly_better:
        if -primary.ci_low >= config.min_relative_improvement:
            return decide(
                DecisionAction.PROMOTE,
                DecisionRule.PRIMARY_BETTER,
                "better: " + _describe(primary),
                primary,
                guardrails,
            )
        return decide(
            DecisionAction.CONTINUE,
            DecisionRule.BELOW_MINIMUM_IMPROVEMENT,
            f"better but by less than {config.min_relative_improvement:.0%}: " + _describe(primary),
            primary,
            guardrails,
        )
    return decide(
        DecisionAction.CONTINUE,
        DecisionRule.NO_SIGNIFICANT_DIFFERENCE,
        "no significant difference: " + _describe(primary),
        primary,
        guardrails,
    )
