"""Simulated error rates and power of the experiment statistics and the regression alerts.

Run from the repository root: ``.venv/bin/python -m bench.bench_experiments [--scale 1.0] [--seed 1]``.
It reuses the simulation models of the unit tests (``tests/unit``) with more runs and more settings, and
prints one line per figure with its binomial standard error.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from statistics import median

from experiments import (
    DetectorState,
    ExperimentConfig,
    RatioMoments,
    RegressionConfig,
    assess,
    required_sample_size,
    srm_test,
    step,
)
from schemas.experiments import AlertKind, DecisionAction, OutcomeMetric
from tests.unit.test_experiment_decision import (
    BASE,
    CONTROL,
    TREATMENT,
    clustered_user_pool,
    simulate_clustered_aa,
    simulate_experiment,
    with_rates,
)
from tests.unit.test_regression import VERSION, observation, rate_windows, steady, step_rise


def share(hits: int, runs: int) -> str:
    p = hits / runs
    return f"{p:7.2%} +- {math.sqrt(max(p * (1 - p), 1e-12) / runs):.2%}  ({hits}/{runs})"


def timed(title: str, body: Callable[[], None]) -> None:
    started = time.perf_counter()
    print(f"\n## {title}")
    body()
    print(f"   ({time.perf_counter() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every number of runs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    def runs(n: int) -> int:
        return max(10, round(n * args.scale))

    config = ExperimentConfig(CONTROL, TREATMENT)
    print(
        f"default config: split {config.split}, alpha {config.alpha} (primary {config.primary_alpha}, "
        f"each guardrail {config.guardrail_alpha}), mixture sd {config.effective_mixture_sd:.4f}"
    )

    def aa() -> None:
        for windows, per_window in ((40, 250), (200, 100)):
            n = runs(4_000 if windows == 40 else 1_000)
            outcomes = Counter(
                simulate_experiment(rng, config, BASE, BASE, per_window, windows)[0].action for _ in range(n)
            )
            decided = outcomes[DecisionAction.PROMOTE] + outcomes[DecisionAction.REVERT]
            print(f"   {windows:3d} looks x {per_window} users: promote+revert {share(decided, n)}")
            print(f"   {'':25} invalid (SRM)  {share(outcomes[DecisionAction.INVALID], n)}")

    def power() -> None:
        needed = required_sample_size(0.30, -0.10, alpha=config.primary_alpha, split=config.split)
        print(f"   required: {needed.control} control + {needed.treatment} treatment interactions")
        treatment = with_rates(regeneration_rate=0.27)
        for windows in (1, 5, 20, 40, 200):
            n = runs(300 if windows == 1 else 1_000)
            per_window = math.ceil(needed.total / windows)
            promoted = sum(
                simulate_experiment(rng, config, BASE, treatment, per_window, windows)[0].action
                is DecisionAction.PROMOTE
                for _ in range(n)
            )
            print(f"   {windows:3d} looks: promoted {share(promoted, n)}")

    def srm() -> None:
        print(f"   45/55 of 10,000 users on 50/50: p = {srm_test((4_500, 5_500), (0.5, 0.5)).p_value:.2e}")
        for treated_share in (0.51, 0.52):
            n = runs(1_000)
            cfg = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5))
            flagged = sum(
                simulate_experiment(rng, cfg, BASE, BASE, 1_000, 10, treatment_share=treated_share)[0].action
                is DecisionAction.INVALID
                for _ in range(n)
            )
            print(f"   {treated_share:.0%} on 50/50, 10 looks to 10k users: flagged {share(flagged, n)}")

    def clustered() -> None:
        cfg = ExperimentConfig(CONTROL, TREATMENT, split=(0.5, 0.5), guardrails=())
        pool = clustered_user_pool(rng, 20_000)
        n = runs(2_000)
        results = [simulate_clustered_aa(rng, cfg, pool, 100, 20) for _ in range(n)]
        decisive = (DecisionAction.PROMOTE, DecisionAction.REVERT)
        print(f"   users as unit:        false decisions {share(sum(u in decisive for u, _ in results), n)}")
        print(f"   interactions as unit: false decisions {share(sum(i in decisive for _, i in results), n)}")

    def regression() -> None:
        default = RegressionConfig()
        streams, windows = runs(100), 1_440
        alerts = 0
        for _ in range(streams):
            state = DetectorState(VERSION, OutcomeMetric.ABANDONMENT_RATE, default)
            for index, moments in enumerate(rate_windows(rng, steady(0.10), windows)):
                state, events = step(state, observation(index, moments))
                alerts += len(events)
        print(f"   defaults, {streams} stable days of 1-min windows: {alerts} false alerts (budget: 1%/day)")
        lax = RegressionConfig(false_alarm_budget=0.01, horizon_windows=1, min_rel_rise=0.0)
        breaches = tested = 0
        for _ in range(runs(20)):
            baseline: list[RatioMoments] = []
            for moments in rate_windows(rng, steady(0.10), 1_000):
                if len(baseline) >= lax.min_baseline_windows:
                    tested += 1
                    breaches += assess(tuple(baseline), moments, lax).breach
                baseline = [*baseline, moments][-lax.baseline_windows :]
        print(f"   per-window breach rate at a nominal 1%: {share(breaches, tested)}")
        opened_after: list[int] = []
        resolved_after: list[int] = []
        for _ in range(runs(200)):
            state = DetectorState(VERSION, OutcomeMetric.ABANDONMENT_RATE, default)
            for index, moments in enumerate(rate_windows(rng, step_rise(0.10, 0.20, 100, 160), 220)):
                state, events = step(state, observation(index, moments))
                for event in events:
                    if event.kind is AlertKind.ALERT:
                        opened_after.append(index - 100)
                    else:
                        resolved_after.append(index - 160)
        print(
            f"   10% -> 20% for 60 windows (~200 users each): {len(opened_after)} alerts and "
            f"{len(resolved_after)} resolves in {runs(200)} runs; median windows to alert "
            f"{median(opened_after) if opened_after else '-'}, to resolve after recovery "
            f"{median(resolved_after) if resolved_after else '-'}"
        )

    timed("Regression alerts", regression)
    timed("A/A, decision after every window (default config)", aa)
    timed("Power for 30% -> 27% at the reported sample size", power)
    timed("Sample-ratio mismatch", srm)
    timed("Clustered A/A: ~8 interactions per user, ICC 1/3, 20 looks", clustered)


if __name__ == "__main__":
    main()
