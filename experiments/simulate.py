"""Simulated experiments through the evaluator's own decision code, for planning and for the tests. Pure.

``feedbackloop experiments simulate`` and the unit tests call :func:`simulate`: many experiments, each fed
users look by look, each look decided by :func:`experiments.decision.evaluate` with the configuration
:func:`experiments.config.experiment_config` builds from an experiment record -- the evaluator's path. A
run stops at its first promote, revert or invalid (as the evaluator does) or at ``users``.

The simulated users
    User ``i`` has a regeneration propensity ``p_i``: the control rate, or with ``rate_spread`` a draw from
    a Beta distribution with that mean and standard deviation. In the experiment they make ``n_i``
    interactions (geometric with mean ``interactions``; 1 by default) and regenerate each with probability
    ``p_i`` in control and ``p_i * (1 + effect)`` in treatment. Before it, ``m_i`` interactions (geometric
    on 0, 1, ... with mean ``pre_interactions``; none by default), each with probability ``p_i``: their
    rate is the user's pre-experiment value, the CUPED covariate (users with ``m_i = 0`` have none).
    Users arrive in treatment with probability ``observed_split`` (default: the intended ``split``; a
    different one is a logging or assignment bug). Guardrails are not simulated: they keep their share of
    ``alpha`` as in a real experiment and never act.

    Single-interaction users with one rate are drawn exactly (binomial counts per arm and look). Otherwise
    users are resampled from a simulated population of ``population`` users, each with both potential
    outcomes drawn from the same uniforms, so the population's own treatment effect is within a fraction
    of a percent of ``effect``; every run resamples it with its own seed.

Every run has its own seed (derived from ``seed`` and the run's number), so two specs that differ only in
how they decide (``cuped``, ``min_relative_improvement``) see the same users: their results differ only by
the decision.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter

from experiments.config import EvaluatorConfig, experiment_config
from experiments.decision import ExperimentConfig, evaluate
from experiments.stats import ArmStats, RatioMoments
from schemas.experiments import DecisionAction, DecisionRule, Experiment

#: The two arms' names in the simulated experiment record.
CONTROL, TREATMENT = "control", "treatment"


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """What to simulate: the users, the experiment's settings and how many runs (module docstring)."""

    control_rate: float = 0.35
    #: Relative change of the treatment's rate: -0.10 lowers it by 10 % (an improvement).
    effect: float = 0.0
    #: Intended (control, treatment) weights, as in the experiment record.
    split: tuple[int, int] = (80, 20)
    #: The weights users actually arrive in; None: the intended ones.
    observed_split: tuple[int, int] | None = None
    users: int = 50_000
    look_every: int = 500
    runs: int = 1_000
    #: Standard deviation of the users' own rates around the arm's rate (0: all users alike).
    rate_spread: float = 0.0
    interactions: float = 1.0
    pre_interactions: float = 0.0
    cuped: bool = True
    min_users_per_arm: int = 500
    min_relative_improvement: float = 0.10
    alpha: float = 0.05
    improvement_alpha: float = 0.25
    srm_threshold: float = 0.001
    population: int = 50_000
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.control_rate < 1 or not 0 < self.control_rate * (1 + self.effect) <= 1:
            raise ValueError("the control rate and the treatment's (with the effect) must lie in (0, 1]")
        for name, weights in (("split", self.split), ("observed_split", self.observed_split)):
            if weights is not None and (len(weights) != 2 or min(weights) <= 0):
                raise ValueError(f"{name} needs two positive weights, e.g. (80, 20)")
        if self.users < 1 or self.look_every < 1 or self.runs < 1 or self.population < 100:
            raise ValueError("users, look_every and runs must be positive and population >= 100")
        if self.rate_spread < 0 or self.rate_spread**2 >= self.control_rate * (1 - self.control_rate):
            raise ValueError("rate_spread must lie in [0, sqrt(rate * (1 - rate)))")
        if self.interactions < 1 or self.pre_interactions < 0:
            raise ValueError("interactions must be >= 1 and pre_interactions >= 0")

    @property
    def exact(self) -> bool:
        """Whether users are drawn exactly (alike, one interaction, no history) rather than resampled."""
        return self.rate_spread == 0 and self.interactions == 1 and self.pre_interactions == 0

    def experiment(self) -> Experiment:
        """The experiment record the runs decide on."""
        at = datetime(2026, 1, 1, tzinfo=UTC)
        return Experiment(
            experiment_id="simulated",
            revision=1,
            control=CONTROL,
            treatment=TREATMENT,
            split=self.split,
            min_users_per_arm=self.min_users_per_arm,
            min_relative_improvement=self.min_relative_improvement,
            alpha=self.alpha,
            created_at=at,
            updated_at=at,
        )

    def config(self) -> ExperimentConfig:
        """The decision configuration, built as the evaluator builds it."""
        evaluator = EvaluatorConfig(
            improvement_alpha=self.improvement_alpha, srm_threshold=self.srm_threshold, cuped=self.cuped
        )
        return experiment_config(self.experiment(), evaluator)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended: the action and rule of its last decision and the users it had seen; and the
    users at the first look where the primary was significantly better (None: never)."""

    action: DecisionAction
    rule: DecisionRule
    users: int
    detected: int | None = None


@dataclass(frozen=True)
class SimulationResult:
    """The runs of one spec and their summary."""

    spec: SimulationSpec
    runs: tuple[RunResult, ...] = field(repr=False)

    def share(self, action: DecisionAction, by_users: int | None = None) -> float:
        """Share of runs that ended in ``action`` (within ``by_users`` users, if given)."""
        hits = sum(r.action is action and (by_users is None or r.users <= by_users) for r in self.runs)
        return hits / len(self.runs)

    def median_users(self, action: DecisionAction | None = None) -> float | None:
        """Median users at the decision over the runs that decided (``action``: only those)."""
        users = [
            r.users
            for r in self.runs
            if r.action is not DecisionAction.CONTINUE and (action is None or r.action is action)
        ]
        return statistics.median(users) if users else None

    def users_for(self, action: DecisionAction, share: float) -> int | None:
        """Fewest users by which ``share`` of the runs had ended in ``action`` (None: never reached)."""
        return _quantile(sorted(r.users for r in self.runs if r.action is action), share, len(self.runs))

    def users_for_detection(self, share: float) -> int | None:
        """Fewest users by which ``share`` of the runs had found the treatment significantly better: the
        power to detect, whether or not the improvement is large enough to promote."""
        return _quantile(
            sorted(r.detected for r in self.runs if r.detected is not None), share, len(self.runs)
        )

    def summary(self) -> dict[str, object]:
        """The fractions of runs that promote, revert, are invalidated or stay undecided, the median users
        to a decision, and the spec (for ``--json``)."""
        rules = Counter(r.rule.value for r in self.runs)
        return {
            "runs": len(self.runs),
            "promote": self.share(DecisionAction.PROMOTE),
            "revert": self.share(DecisionAction.REVERT),
            "invalid": self.share(DecisionAction.INVALID),
            "undecided": self.share(DecisionAction.CONTINUE),
            "median_users_to_decision": self.median_users(),
            "median_users_to_promote": self.median_users(DecisionAction.PROMOTE),
            "users_for_80pct_promote": self.users_for(DecisionAction.PROMOTE, 0.8),
            "users_for_80pct_detection": self.users_for_detection(0.8),
            "last_rules": dict(sorted(rules.items())),
            "spec": asdict(self.spec),
        }


def _quantile(sorted_users: list[int], share: float, runs: int) -> int | None:
    needed = math.ceil(share * runs)
    return sorted_users[needed - 1] if 0 < needed <= len(sorted_users) else None


# ----------------------------------------------------------------------------------------------------
# Drawing users


@lru_cache(maxsize=4096)
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


def _geometric(rng: random.Random, mean: float, start: int) -> int:
    """A geometric count on ``start, start + 1, ...`` with the given mean."""
    extra = mean - start
    if extra <= 0:
        return start
    q = extra / (1.0 + extra)  # P(one more)
    return start + int(math.log(1.0 - rng.random()) / math.log(q))


Row = tuple[float, ...]
_FIELDS = ("users", "n", "y", "nn", "yy", "ny", "nc", "nh", "nnc", "nncc", "nnh", "nyc", "nyh")


Columns = tuple[list[float], ...]
#: Users per block: a sample of ``k`` users is ``k // BLOCK`` blocks and ``k % BLOCK`` single users.
BLOCK = 25


@dataclass(frozen=True, slots=True)
class _Arm:
    """One arm's population: each user's contribution to the moments' sums, one list per field
    (:data:`_FIELDS`), and the same for consecutive blocks of :data:`BLOCK` users. The users are drawn
    independently, so a block is itself a draw of ``BLOCK`` independent users, and a sample costs one
    pick per block instead of one per user."""

    users: Columns
    blocks: Columns


def _population(spec: SimulationSpec) -> tuple[_Arm, _Arm]:
    """The simulated population under control and under treatment (module docstring); the same for specs
    that differ only in how they decide."""
    return _population_of(
        spec.control_rate, spec.effect, spec.rate_spread, spec.interactions, spec.pre_interactions,
        spec.population, spec.seed,
    )  # fmt: skip


@lru_cache(maxsize=4)
def _population_of(
    r: float, effect: float, s: float, interactions: float, pre_interactions: float, size: int, seed: int
) -> tuple[_Arm, _Arm]:
    rng = random.Random(f"population:{seed}")
    concentration = r * (1 - r) / (s * s) - 1.0 if s > 0 else math.inf
    control: list[Row] = []
    treatment: list[Row] = []
    for _ in range(size):
        p = rng.betavariate(r * concentration, (1 - r) * concentration) if s > 0 else r
        m = _geometric(rng, pre_interactions, 0) if pre_interactions > 0 else 0
        covariate = sum(rng.random() < p for _ in range(m)) / m if m else None
        n = _geometric(rng, interactions, 1)
        uniforms = [rng.random() for _ in range(n)]
        p_t = min(1.0, p * (1 + effect))
        for rows, rate in ((control, p), (treatment, p_t)):
            y = sum(u < rate for u in uniforms)
            rows.append(_row(RatioMoments.from_user_totals([(float(n), float(y), covariate)])))
    return _arm(control), _arm(treatment)


def _arm(rows: list[Row]) -> _Arm:
    users = tuple(list(column) for column in zip(*rows, strict=True))
    size = len(rows) // BLOCK * BLOCK
    blocks = tuple([math.fsum(column[i : i + BLOCK]) for i in range(0, size, BLOCK)] for column in users)
    return _Arm(users, blocks)


def _row(m: RatioMoments) -> Row:
    """The moments as a row: users, then every sum in the field order (rows of users add up)."""
    return tuple(float(getattr(m, name)) for name in _FIELDS)


def _sample_sums(rng: random.Random, arm: _Arm, count: int) -> list[float]:
    """The sums of ``count`` users drawn with replacement from the population (as blocks and singles)."""
    total = [0.0] * len(_FIELDS)
    blocks, singles = divmod(count, BLOCK)
    for columns, picks in ((arm.blocks, blocks), (arm.users, singles)):
        if not picks:
            continue
        size = len(columns[0])
        indexes = [int(rng.random() * size) for _ in range(picks)]
        if picks == 1:
            values = [column[indexes[0]] for column in columns]
        else:
            pick = itemgetter(*indexes)
            values = [math.fsum(pick(column)) for column in columns]
        total = [a + b for a, b in zip(total, values, strict=True)]
    return total


def pre_period_correlation(spec: SimulationSpec) -> float | None:
    """The correlation, over the simulated users with a pre-experiment value, between that value and their
    rate in the experiment (in control); None without pre-experiment interactions."""
    if spec.exact or spec.pre_interactions <= 0:
        return None
    users = _population(spec)[0].users
    n, y, nc, nh = (users[_FIELDS.index(name)] for name in ("n", "y", "nc", "nh"))
    pairs = [(nc[i] / n[i], y[i] / n[i]) for i in range(len(n)) if nh[i] > 0]
    if len(pairs) < 3:
        return None
    before, during = zip(*pairs, strict=True)
    try:
        return statistics.correlation(before, during)
    except statistics.StatisticsError:  # no spread in one of them
        return None


def _single_interaction(users: int, events: int) -> Row:
    # One interaction per user: n_i = 1 and y_i in {0, 1}, so n^2 = n and y^2 = n*y = y.
    return (users, users, events, users, events, events, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _moments(row: Sequence[float]) -> RatioMoments:
    return RatioMoments(round(row[0]), *row[1:])


def run_once(
    spec: SimulationSpec,
    config: ExperimentConfig,
    rng: random.Random,
    population: tuple[_Arm, _Arm] | None = None,
) -> RunResult:
    """One experiment, decided after every ``look_every`` users until its first non-continue decision."""
    weights = spec.observed_split or spec.split
    share = weights[1] / sum(weights)
    rates = (spec.control_rate, min(1.0, spec.control_rate * (1 + spec.effect)))
    sums = [[0.0] * 13, [0.0] * 13]
    seen = 0
    detected: int | None = None
    decision = evaluate(config, {})
    while seen < spec.users:
        arriving = min(spec.look_every, spec.users - seen)
        seen += arriving
        treated = binomial(rng, arriving, share)
        for arm, count in ((0, arriving - treated), (1, treated)):
            if not count:
                continue
            if population is None:
                row: Sequence[float] = _single_interaction(count, binomial(rng, count, rates[arm]))
            else:
                row = _sample_sums(rng, population[arm], count)
            sums[arm] = [a + b for a, b in zip(sums[arm], row, strict=True)]
        stats = {
            name: ArmStats(round(s[0]), round(s[1]), {config.primary: _moments(s)})
            for name, s in ((CONTROL, sums[0]), (TREATMENT, sums[1]))
        }
        decision = evaluate(config, stats)
        if detected is None and decision.primary is not None and decision.primary.significantly_better:
            detected = seen
        if decision.action is not DecisionAction.CONTINUE:
            break
    return RunResult(decision.action, decision.rule, seen, detected)


def simulate(spec: SimulationSpec) -> SimulationResult:
    """Run ``spec.runs`` simulated experiments (module docstring) and collect how each ended."""
    config = spec.config()
    population = None if spec.exact else _population(spec)
    runs = tuple(
        run_once(spec, config, random.Random(f"run:{spec.seed}:{index}"), population)
        for index in range(spec.runs)
    )
    return SimulationResult(spec, runs)


__all__ = [
    "CONTROL",
    "TREATMENT",
    "RunResult",
    "SimulationResult",
    "SimulationSpec",
    "binomial",
    "pre_period_correlation",
    "simulate",
]
