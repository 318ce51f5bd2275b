"""The figures behind docs/experiments.md: error rates and power of the decisions, the SRM check, CUPED and
the regression alerts, with many runs.

Run from the repository root: ``.venv/bin/python -m bench.bench_experiments [--scale 1.0] [--seed 1]``.
The decision figures come from ``experiments.simulate`` -- the same runs as ``feedbackloop experiments
simulate`` (each line says which options) -- and the unit tests check the same targets with fewer runs.
Prints one line per figure, with its binomial standard error where it is a share.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from statistics import median

from experiments.regression import DetectorState, RegressionConfig, WindowObservation, step
from experiments.simulate import SimulationSpec, binomial, pre_period_correlation, simulate
from experiments.srm import srm_log_e_value
from experiments.stats import RatioMoments
from schemas.experiments import AlertKind, DecisionAction, OutcomeMetric


def share(hits: int | float, runs: int) -> str:
    p = hits / runs
    return f"{p:7.2%} +- {math.sqrt(max(p * (1 - p), 1e-12) / runs):.2%}"


def timed(title: str, body: Callable[[], None]) -> None:
    started = time.perf_counter()
    print(f"\n## {title}", flush=True)
    body()
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every number of runs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    def runs(n: int) -> int:
        return max(20, round(n * float(args.scale)))

    def decisions() -> None:
        cases: list[tuple[str, dict[str, object], int | None]] = [
            ("A/A", {"effect": 0.0}, None),
            ("half the minimum (-5%)", {"effect": -0.05}, None),
            ("the minimum (-10%)", {"effect": -0.10}, None),
            ("1.5x the minimum (-15%)", {"effect": -0.15, "users": 30_000}, 30_000),
            ("2x the minimum (-20%)", {"effect": -0.20, "users": 30_000}, 30_000),
            ("worse (+10%)", {"effect": 0.10}, None),
            ("fake -10% with 78/22 observed", {"effect": -0.10, "observed_split": (78, 22)}, None),
        ]
        for label, fields, _ in cases:
            spec = SimulationSpec(runs=runs(1_000), seed=args.seed, **fields)  # type: ignore[arg-type]
            result = simulate(spec)
            med = result.median_users()
            print(
                f"   {label:32} promote {share(result.share(DecisionAction.PROMOTE) * spec.runs, spec.runs)}"
                f"  revert {result.share(DecisionAction.REVERT):6.2%}  invalid "
                f"{result.share(DecisionAction.INVALID):6.2%}  by {spec.users:,} users; median users to a "
                f"decision {'-' if med is None else f'{med:,.0f}'}",
                flush=True,
            )

    def false_srm() -> None:
        """Two weeks of one-minute looks; the acceptance region is computed once per number of users."""
        looks = 14 * 24 * 60
        for per_minute in (1, 10):
            total = looks * per_minute
            bar = math.log(1000.0)

            def flags(n: int, treated: int, bar: float = bar) -> bool:
                return 0 <= treated <= n and srm_log_e_value((n - treated, treated), (0.8, 0.2)) >= bar

            low, high = [-1] * (total + 1), [total + 1] * (total + 1)
            lo, hi = -1, 1
            for n in range(1, total + 1):
                expected = round(0.2 * n)
                while lo >= 0 and not flags(n, lo):
                    lo -= 1
                while lo + 1 < expected and flags(n, lo + 1):
                    lo += 1
                hi = max(hi, expected + 1)
                while hi <= n and not flags(n, hi):
                    hi += 1
                while hi - 1 > expected and flags(n, hi - 1):
                    hi -= 1
                low[n], high[n] = lo, hi
            rng = random.Random(args.seed)
            n_runs = runs(1_000)
            sequential = fixed = 0
            for _ in range(n_runs):
                treated = n = 0
                hit_sequential = hit_fixed = False
                for _ in range(looks):
                    treated += binomial(rng, per_minute, 0.2)
                    n += per_minute
                    hit_sequential = hit_sequential or treated <= low[n] or treated >= high[n]
                    hit_fixed = hit_fixed or (n >= 25 and (treated - 0.2 * n) ** 2 >= 10.828 * 0.16 * n)
                    if hit_sequential and hit_fixed:
                        break
                sequential += hit_sequential
                fixed += hit_fixed
            print(
                f"   {per_minute} user(s)/minute: sequential (0.001) {share(sequential, n_runs)};"
                f" chi-square p<0.001 every look {share(fixed, n_runs)}",
                flush=True,
            )

    def minimum_users() -> None:
        """The issue's case: 5% base rate, heterogeneous users with ~12 interactions each, A/A."""
        base = {"effect": 0.0, "control_rate": 0.05, "rate_spread": 0.05, "interactions": 12.0,
                "users": 20_000, "look_every": 100, "runs": runs(1_000), "seed": args.seed,
                "min_relative_improvement": 0.10}  # fmt: skip
        for label, minimum in (("500 users per arm", 500), ("~500 interactions (42 users)", 42)):
            spec = SimulationSpec(min_users_per_arm=minimum, **base)
            result = simulate(spec)
            found = sum(r.detected is not None or r.action is DecisionAction.REVERT for r in result.runs)
            print(
                f"   {label:30} false 'better or worse' {share(found, spec.runs)} "
                f"(primary alpha {spec.config().primary_alpha})",
                flush=True,
            )

    def cuped() -> None:
        base = SimulationSpec(
            effect=-0.10, users=20_000, look_every=250, runs=runs(1_000), seed=args.seed, rate_spread=0.23,
            interactions=5.0, pre_interactions=10.0, cuped=False,
        )  # fmt: skip
        plain = simulate(base)
        adjusted = simulate(dataclasses.replace(base, cuped=True))
        a, b = plain.users_for_detection(0.8), adjusted.users_for_detection(0.8)
        print(f"   pre-period vs in-experiment rate: correlation {pre_period_correlation(base)}")
        if a is not None and b is not None:
            print(
                f"   80% found the 10% gain better by {a:,} users without CUPED, {b:,} with "
                f"({b / a - 1:+.0%})"
            )
        homogeneous = simulate(SimulationSpec(effect=-0.10, users=30_000, look_every=250, runs=runs(1_000),
                                              seed=args.seed))  # fmt: skip
        print(f"   for reference, single-interaction users alike: {homogeneous.users_for_detection(0.8):,}")

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    config = RegressionConfig(min_abs_rise=0.02)  # the evaluator's defaults

    def window(rng: random.Random, index: int, n: int, rate: float) -> WindowObservation:
        y = binomial(rng, n, rate)
        start = t0 + timedelta(minutes=index)
        end = start + timedelta(minutes=1)
        return WindowObservation(
            "v", OutcomeMetric.REGENERATION_RATE, start, end, RatioMoments(n, n, y, n, y, y)
        )

    def first_alert(rng: random.Random, rate_at: Callable[[int], float], windows: int, n: int) -> int | None:
        state = DetectorState("v", OutcomeMetric.REGENERATION_RATE, config)
        for index in range(windows):
            state, events = step(state, window(rng, index, n, rate_at(index)))
            if any(e.kind is AlertKind.ALERT for e in events):
                return index
        return None

    def regression() -> None:
        rng = random.Random(args.seed)
        for n in (100, 200, 400):
            n_runs = runs(500)
            found = [
                first_alert(rng, lambda i: 0.45 if i >= 120 else 0.35, 120 + 1_440, n) for _ in range(n_runs)
            ]
            early = sum(f is not None and f < 120 for f in found)
            within = [f - 120 for f in found if f is not None and f >= 120]
            two_hours = share(sum(w < 120 for w in within), n_runs)
            print(
                f"   0.35 -> 0.45 at {n} per window: within 2 h {two_hours}, within a day "
                f"{share(len(within), n_runs)}, median {median(within) if within else '-'} windows; {early} "
                "alerts before the jump",
                flush=True,
            )

        def ramp(index: int) -> float:
            return 0.35 + 0.35 * min(1.0, max(0, index - 120) / 240)

        n_runs = runs(500)
        found = [first_alert(rng, ramp, 360, 200) for _ in range(n_runs)]
        within = [f - 120 for f in found if f is not None and f >= 120]
        print(
            f"   ramp 0.35 -> 0.70 over 4 h at 200 per window: before it ends {share(len(within), n_runs)},"
            f" median {median(within) if within else '-'} windows into it",
            flush=True,
        )
        for rate, n in ((0.35, 200), (0.10, 200), (0.05, 40)):
            streams, length = runs(100), 10_000
            alerts = 0
            for _ in range(streams):
                state = DetectorState("v", OutcomeMetric.REGENERATION_RATE, config)
                for index in range(length):
                    state, events = step(state, window(rng, index, n, rate))
                    alerts += sum(e.kind is AlertKind.ALERT for e in events)
            total = streams * length
            print(f"   stable {rate:.0%} at {n} per window: {alerts} false alerts in {total:,} windows")

    timed(
        "Decisions (80/20, control 0.35, a look every 500 users, defaults; 50,000 users unless said)",
        decisions,
    )
    timed("False SRM over two weeks of one-minute looks (healthy 80/20)", false_srm)
    timed(
        "The minimum counts users: A/A at 5%, users with ~12 interactions and their own rates", minimum_users
    )
    timed("CUPED: a 10% gain, users whose pre-period rate correlates ~0.5 with their rate in it", cuped)
    timed("Regression alerts (evaluator defaults)", regression)


if __name__ == "__main__":
    main()
