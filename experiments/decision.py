"""The decision after each window of a prompt A/B experiment: continue, promote, revert or invalid. Pure.

Rules, in the order they are applied (the first that fires wins; the contract's
:class:`~schemas.experiments.DecisionRule` names them):

1. ``assignment_mismatch`` -> ``invalid``: more than ``max_assignment_mismatch`` of the users are logged in
   another arm than the consistent hash of the experiment record puts them in (judged from ``1 /
   max_assignment_mismatch`` users on, so one stray user cannot end a young experiment).
2. ``sample_ratio_mismatch`` -> ``invalid``: the sequential sample-ratio test (:mod:`experiments.srm`)
   proves the users per arm do not follow the split (level ``srm_threshold`` over all looks). Nothing
   else is trusted when assignment or logging is broken.
3. ``insufficient_sample`` -> ``continue``: an arm has fewer than ``min_users_per_arm`` users (users are
   the unit: 500 interactions can be 40 users) or fewer than ``min_interactions_per_arm`` interactions.
4. ``guardrail_worse`` -> ``revert``: a guardrail's anytime-valid confidence sequence for the relative
   change lies entirely above ``guardrail_tolerance`` (significantly worse). It also blocks promote, since
   it is checked first.
5. ``primary_worse`` -> ``revert``: the primary metric's confidence sequence lies entirely above 0.
6. ``primary_better`` -> ``promote``: the primary's confidence sequence lies entirely below 0 (the treatment
   is better), the improvement is *credibly more than the minimum* (below), and the sample-ratio check
   passes: the users per arm do not lean towards a mismatch (``SrmResult.confirmed``: e-value below 3).
7. ``sample_ratio_unconfirmed`` -> ``continue``: rule 6 but for the last condition: the users lean towards
   a mismatch not yet proven; wait.
8. ``below_minimum_improvement`` -> ``continue``: significantly better, but not credibly by more than the
   minimum (yet): keep going, or end the test by hand if the sequence shows the gain is surely smaller.
9. ``no_significant_difference`` -> ``continue``.

The minimum improvement
    "Promote if more than 10 % better" is a one-sided test of ``H0: improvement <= minimum`` that must be
    rejected: the upper end of the primary's confidence sequence at the two-sided level
    ``2 * improvement_alpha`` (so one-sided ``improvement_alpha``) must lie below ``-minimum``.
    It is anytime-valid like the rest, so a treatment exactly at the minimum is promoted with probability
    at most ``improvement_alpha`` however often one looks (0.25: "credible" is three-to-one odds that the
    gain exceeds the minimum), and one further below it far less. Simulated at 80/20, a 35 % control rate,
    a look every 500 users and the 10 % default: half the minimum is promoted in 0.6 % of runs by 50,000
    users, a 15 % gain in 87 % by 30,000 (docs/experiments.md has the table). The previous rule promoted
    when a 10 % gain was merely plausible (the far end of the sequence) and promoted a true 5 % in 61 %.

Error budget
    ``alpha`` bounds, in an A/A test with any number of looks, the probability of *any* promote or revert
    (asymptotically). It is split by Bonferroni: ``primary_alpha`` for the two-sided primary test and
    ``guardrail_alpha`` for each guardrail's two-sided test (only its "worse" side acts). The minimum
    improvement and the sample-ratio confirmation only ever hold a promote back.

Variance reduction
    With ``cuped`` every comparison uses the CUPED-adjusted effect (:mod:`experiments.cuped`) when users
    carry pre-experiment values, the plain one otherwise; the test is the same.

All metrics are lower-is-better, so the relative effect ``mean_T / mean_C - 1`` is negative for an
improvement. See :mod:`experiments.stats` for the methods and their references.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.cuped import cuped_relative_effect
from experiments.srm import DEFAULT_CONCENTRATION, SrmResult, srm_test
from experiments.stats import (
    ArmStats,
    optimal_mixture_sd,
    relative_effect,
    sequential_test,
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
    #: No promote or revert before each arm has this many users ...
    min_users_per_arm: int = 500
    #: ... and this many interactions.
    min_interactions_per_arm: int = 2
    #: Relative improvement of the primary worth promoting (0.10: at least 10% lower).
    min_relative_improvement: float = 0.10
    #: Bound on the probability of any wrong promote/revert over the whole experiment.
    alpha: float = 0.05
    #: Share of ``alpha`` spent on the primary metric when there are guardrails.
    primary_alpha_share: float = 0.5
    #: Bound on promoting a treatment whose improvement is exactly the minimum (one-sided, all looks).
    improvement_alpha: float = 0.25
    #: A guardrail only counts as worse when its relative increase is surely above this.
    guardrail_tolerance: float = 0.0
    #: Bound on invalidating a healthy experiment for a sample ratio mismatch, over all looks.
    srm_threshold: float = 0.001
    srm_concentration: float = DEFAULT_CONCENTRATION
    #: Share of users logged in another arm than the hash's above which the experiment is invalid.
    max_assignment_mismatch: float = 0.01
    #: Adjust every comparison for the users' pre-experiment values (CUPED) when they have some.
    cuped: bool = True
    #: Scale of the normal mixture over relative effects; ``None`` tunes it to ``min_relative_improvement``.
    mixture_sd: float | None = None

    def __post_init__(self) -> None:
        if self.control == self.treatment:
            raise ValueError("control and treatment must differ")
        if not (min(self.split) > 0 and math.isclose(sum(self.split), 1.0)):
            raise ValueError("split must be two positive shares summing to 1")
        if not 0 < self.alpha < 1 or not 0 < self.primary_alpha_share <= 1:
            raise ValueError("need 0 < alpha < 1 and 0 < primary_alpha_share <= 1")
        if not 0 < self.improvement_alpha < 0.5:
            raise ValueError("improvement_alpha must lie in (0, 0.5)")
        if self.primary in self.guardrails:
            raise ValueError("the primary metric cannot also be a guardrail")
        if self.min_relative_improvement < 0:
            raise ValueError("min_relative_improvement must be >= 0")
        if self.min_users_per_arm < 2 or self.min_interactions_per_arm < 2:
            raise ValueError("min_users_per_arm and min_interactions_per_arm must be >= 2")
        if not 0 < self.srm_threshold < 1 or not 0 < self.max_assignment_mismatch < 1:
            raise ValueError("srm_threshold and max_assignment_mismatch must lie in (0, 1)")

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
class AssignmentCounts:
    """How many of an experiment's users the consistent hash puts in the arm they were logged in.

    ``users`` counts (user, logged variant) pairs over every variant logged for the experiment, and
    ``mismatched`` those whose variant is not the hash's.
    """

    users: int = 0
    mismatched: int = 0

    @property
    def share(self) -> float:
        """Mismatched share of the users (0 with none)."""
        return self.mismatched / self.users if self.users else 0.0


@dataclass(frozen=True, slots=True)
class AssignmentResult:
    """The assignment check at one look: the counts, the threshold and the verdict."""

    counts: AssignmentCounts
    threshold: float

    @property
    def checked(self) -> bool:
        """Judged from ``1 / threshold`` users on: before, one stray user would be above the threshold."""
        return self.counts.users * self.threshold >= 1.0

    @property
    def mismatch(self) -> bool:
        """More than ``threshold`` of the users are in another arm than the hash's."""
        return self.checked and self.counts.share > self.threshold


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """Sample sizes of one arm at this look."""

    name: str
    users: int
    interactions: int


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric compared between arms: means, relative effect, its confidence sequence and p-value.

    ``relative_effect`` is ``treatment_mean / control_mean - 1`` (negative is better), CUPED-adjusted when
    ``variance_reduction`` is not None; ``ci_low``/``ci_high`` are its anytime-valid ``ci_level``
    confidence sequence at this look; ``p_value`` is always-valid (``min(1, 1/e_value)``, running minimum
    left to the caller). ``*_n`` count interactions carrying the metric, ``*_users`` the users behind them.
    ``credible_improvement`` (primary only) is the improvement the data exceed at the one-sided level
    ``improvement_alpha``; promote needs it above the minimum.
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
    variance_reduction: float | None = None
    credible_improvement: float | None = None

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
    assignment: AssignmentResult | None
    primary: MetricResult | None
    guardrails: tuple[MetricResult, ...]


def compare(
    metric: OutcomeMetric,
    role: str,
    control: ArmStats,
    treatment: ArmStats,
    alpha: float,
    mixture_sd: float,
    *,
    cuped: bool = False,
    improvement_alpha: float | None = None,
) -> MetricResult:
    """Compare one metric between arms with the normal-mixture test at level ``alpha`` (two-sided).

    With ``cuped`` the effect is adjusted for pre-experiment values; with ``improvement_alpha`` the
    result also carries the improvement credibly exceeded at that one-sided level.
    """
    c, t = control.moments(metric), treatment.moments(metric)
    reduction: float | None = None
    if cuped:
        adjusted = cuped_relative_effect(c, t)
        effect, reduction = adjusted.effect, adjusted.variance_reduction
    else:
        effect = relative_effect(c, t)
    test = sequential_test(effect, alpha, mixture_sd)
    credible = None
    if improvement_alpha is not None:
        credible = -sequential_test(effect, 2.0 * improvement_alpha, mixture_sd).ci_high
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
        variance_reduction=reduction,
        credible_improvement=credible,
    )


def _describe(result: MetricResult) -> str:
    return (
        f"{result.metric} {result.control_mean:.4g} -> {result.treatment_mean:.4g} "
        f"({result.relative_effect:+.1%}, {result.ci_level:.1%} CS "
        f"[{result.ci_low:+.1%}, {result.ci_high:+.1%}], p={result.p_value:.3g})"
    )


def evaluate(
    config: ExperimentConfig,
    stats_by_arm: Mapping[str, ArmStats],
    assignment: AssignmentCounts | None = None,
) -> Decision:
    """Decide what to do with the experiment given each arm's statistics so far (rules: module docstring).

    Arms missing from ``stats_by_arm`` count as empty; arms other than control and treatment are ignored.
    ``assignment`` is the hash check's counts (None: not checked). Pure: the same statistics always give
    the same decision, so replays are harmless.
    """
    control = stats_by_arm.get(config.control, ArmStats())
    treatment = stats_by_arm.get(config.treatment, ArmStats())
    arms = (
        ArmSummary(config.control, control.users, control.interactions),
        ArmSummary(config.treatment, treatment.users, treatment.interactions),
    )
    srm = srm_test(
        (control.users, treatment.users), config.split, config.srm_threshold, config.srm_concentration
    )
    audit = None if assignment is None else AssignmentResult(assignment, config.max_assignment_mismatch)

    def decide(
        action: DecisionAction,
        rule: DecisionRule,
        reason: str,
        primary: MetricResult | None = None,
        guardrails: tuple[MetricResult, ...] = (),
    ) -> Decision:
        return Decision(action, rule, reason, arms[0], arms[1], srm, audit, primary, guardrails)

    if audit is not None and audit.mismatch:
        return decide(
            DecisionAction.INVALID,
            DecisionRule.ASSIGNMENT_MISMATCH,
            f"{audit.counts.mismatched} of {audit.counts.users} users ({audit.counts.share:.1%}) are logged "
            f"in another arm than the consistent hash of the experiment puts them in "
            f"(> {audit.threshold:.1%})",
        )
    if srm.mismatch:
        return decide(
            DecisionAction.INVALID,
            DecisionRule.SAMPLE_RATIO_MISMATCH,
            f"users {srm.observed} vs expected {tuple(round(e) for e in srm.expected)}: "
            f"sequential SRM e-value {srm.e_value:.3g} >= {1 / srm.threshold:.0f} (chi2={srm.chi2:.1f})",
        )
    short_users = min(control.users, treatment.users)
    short_interactions = min(control.interactions, treatment.interactions)
    if short_users < config.min_users_per_arm or short_interactions < config.min_interactions_per_arm:
        return decide(
            DecisionAction.CONTINUE,
            DecisionRule.INSUFFICIENT_SAMPLE,
            f"{short_users} users and {short_interactions} interactions in the smaller arm, "
            f"{config.min_users_per_arm} users and {config.min_interactions_per_arm} interactions needed",
        )

    tau = config.effective_mixture_sd
    primary = compare(
        config.primary,
        "primary",
        control,
        treatment,
        config.primary_alpha,
        tau,
        cuped=config.cuped,
        improvement_alpha=config.improvement_alpha,
    )
    guardrails = tuple(
        compare(metric, "guardrail", control, treatment, config.guardrail_alpha, tau, cuped=config.cuped)
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
        credible = primary.credible_improvement
        assert credible is not None
        minimum = config.min_relative_improvement
        if credible <= minimum:
            return decide(
                DecisionAction.CONTINUE,
                DecisionRule.BELOW_MINIMUM_IMPROVEMENT,
                f"better, but not credibly by more than {minimum:.0%} "
                f"(credibly by {credible:.1%}): " + _describe(primary),
                primary,
                guardrails,
            )
        if not srm.confirmed:
            return decide(
                DecisionAction.CONTINUE,
                DecisionRule.SAMPLE_RATIO_UNCONFIRMED,
                f"better by more than {minimum:.0%}, but the users per arm {srm.observed} lean towards a "
                f"sample ratio mismatch (e-value {srm.e_value:.3g} >= {srm.confirm_below:g}): waiting",
                primary,
                guardrails,
            )
        return decide(
            DecisionAction.PROMOTE,
            DecisionRule.PRIMARY_BETTER,
            f"better by more than {minimum:.0%} (credibly by {credible:.1%}): " + _describe(primary),
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
