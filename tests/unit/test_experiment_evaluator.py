"""The experiment evaluator on simulated outcome logs: decisions, regression incidents, and exactness.

The logs are built the way the processors write them: one list per partition, each in emission order, every
outcome stamped with the processor's watermark as ``settled_at`` (rounded up to the batch that emitted it),
some interactions amended later with a higher version, some outcomes delivered twice. Reading a log means
interleaving its partitions in chunks, as a consumer would.
"""

from __future__ import annotations

import math
import random
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from experiments import RegressionConfig
from experiments.config import EvaluatorConfig
from experiments.evaluator import Emission, Evaluator
from experiments.evidence import experiment_evidence_sql, regression_evidence_sql
from experiments.records import alert_id, apply_decision, changed_status, decision_id
from infra.settings import ExperimentSettings, Settings
from producers.assignment import Experiment as Assignment
from schemas import InteractionOutcome
from schemas.experiments import (
    AlertKind,
    AlertSeverity,
    DecisionAction,
    DecisionRule,
    Experiment,
    ExperimentDecision,
    ExperimentStatus,
    OutcomeMetric,
    RegressionAlert,
)
from sinks.clickhouse import migrate
from sinks.rows import TABLES

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=300)
PARTITIONS = 4

# ----------------------------------------------------------------------------------------------------
# Simulated outcome logs


def outcome(
    *,
    user: str,
    created: datetime,
    settled: datetime,
    version: str = "v1.0",
    interaction_id: uuid.UUID | None = None,
    outcome_version: int = 1,
    experiment_id: str | None = None,
    regenerated: bool = False,
    abandoned: bool = False,
    edit_norm: float | None = None,
    response_time_ms: int = 800,
    session: str | None = None,
) -> InteractionOutcome:
    """A valid outcome; the signals not given are off."""
    edited = edit_norm is not None
    return InteractionOutcome.model_validate(
        {
            "interaction_id": interaction_id or uuid.uuid4(),
            "version": outcome_version,
            "session_id": session or f"{user}-s",
            "user_id": user,
            "prompt": "p",
            "prompt_version": version,
            "model": "m",
            "input_category": None,
            "experiment_id": experiment_id,
            "variant": version if experiment_id else None,
            "response_chars": 100,
            "response_time_ms": response_time_ms,
            "interaction_created_at": created,
            "settled_at": settled,
            "amended": outcome_version > 1,
            "feedback_events": int(regenerated) + int(edited),
            "regenerated": regenerated,
            "edited": edited,
            "edit_distance": round(100 * edit_norm) if edit_norm is not None else None,
            "edit_distance_norm": edit_norm,
            "word_edit_distance": 3 if edited else None,
            "edit_size": "medium" if edited else None,
            "thumbs_up": False,
            "thumbs_down": False,
            "copied": not abandoned,
            "copied_fraction": 1.0 if not abandoned else None,
            "partial_copy": False,
            "accepted": False,
            "rephrased": False,
            "clarifying_followup": False,
            "next_interaction_id": None,
            "abandoned": abandoned,
            "short_dwell": False,
            "corrected": regenerated or edited,
            "time_to_first_correction_ms": 5000 if regenerated or edited else None,
            "completed_without_edit": not (abandoned or regenerated or edited),
        }
    )


def batch_time(at: datetime, batch_s: float) -> datetime:
    """The watermark of the processor batch that emits something due at ``at``."""
    seconds = (at - T0).total_seconds()
    return T0 + timedelta(seconds=math.ceil(seconds / batch_s) * batch_s)


Log = dict[int, list[InteractionOutcome]]


def as_log(outcomes: Sequence[InteractionOutcome], partitions: int = PARTITIONS) -> Log:
    """Route outcomes to partitions by session, each partition in emission (settled_at) order."""
    log: Log = {p: [] for p in range(partitions)}
    for item in outcomes:
        log[zlib.crc32(item.session_id.encode()) % partitions].append(item)
    for messages in log.values():
        messages.sort(key=lambda o: o.settled_at)
    return log


@dataclass(frozen=True)
class Arm:
    """How users of one variant behave."""

    regenerate: float
    abandon: float = 0.15
    latency_ms: float = 800.0


def experiment_log(
    rng: random.Random,
    arms: dict[str, Arm],
    *,
    experiment_id: str = "exp-1",
    weights: dict[str, int] | None = None,
    users: int = 800,
    per_user: tuple[int, int] = (3, 7),
    span: timedelta = timedelta(hours=2),
    batch_s: float = 20.0,
    amend_share: float = 0.05,
    duplicate_share: float = 0.02,
    history: int = 0,
    personal: bool = False,
    lost: float = 0.0,
) -> Log:
    """Users assigned by the SDK's hash (``weights``, default 80/20) act per their arm; some outcomes are
    amended later (version 2: the user regenerated after all) and some delivered twice.

    ``history``: each user's outcomes (no experiment) in the two hours before it, with the control's rate.
    ``personal``: each user regenerates at their own multiple (0.1 to 1.9) of the rates, before and during.
    ``lost``: the share of treatment users whose outcomes a logging bug loses."""
    assignment = Assignment(experiment_id, weights or dict(zip(arms, (80, 20), strict=False)))
    control_rate = next(iter(arms.values())).regenerate
    out: list[InteractionOutcome] = []
    for u in range(users):
        user = f"user-{u:05d}"
        variant = assignment.assign(user).variant
        arm = arms[variant]
        factor = rng.uniform(0.1, 1.9) if personal else 1.0
        for k in range(history):
            created = T0 - timedelta(seconds=rng.uniform(1, 7_200))
            out.append(
                outcome(
                    user=user,
                    created=created,
                    settled=batch_time(created + SETTLE, batch_s),
                    version="v1.0",
                    session=f"{user}-h{k}",
                    interaction_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    regenerated=rng.random() < min(1.0, control_rate * factor),
                )
            )
        if lost and variant != next(iter(arms)) and rng.random() < lost:
            continue
        for k in range(rng.randint(*per_user)):
            created = T0 + timedelta(seconds=rng.uniform(0, span.total_seconds()))
            settled = batch_time(created + SETTLE, batch_s)
            common: dict[str, Any] = {
                "user": user,
                "created": created,
                "version": variant,
                "experiment_id": experiment_id,
                "session": f"{user}-s{k}",
                "interaction_id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "abandoned": rng.random() < arm.abandon,
                "response_time_ms": round(rng.lognormvariate(math.log(arm.latency_ms), 0.3)),
            }
            regenerated = rng.random() < min(1.0, arm.regenerate * factor)
            if regenerated and rng.random() < amend_share * 4:
                # First settled without the regeneration, amended by a late event.
                out.append(outcome(settled=settled, regenerated=False, **common))
                later = batch_time(settled + timedelta(seconds=rng.uniform(30, 900)), batch_s)
                out.append(outcome(settled=later, regenerated=True, outcome_version=2, **common))
            else:
                out.append(outcome(settled=settled, regenerated=regenerated, **common))
            if rng.random() < duplicate_share:
                out.append(out[-1])
    return as_log(out)


def interleavings(log: Log, rng: random.Random) -> Iterator[tuple[int, int, InteractionOutcome]]:
    """Every message of every partition once, partitions interleaved in random chunks."""
    positions = dict.fromkeys(log, 0)
    while True:
        live = [p for p, at in positions.items() if at < len(log[p])]
        if not live:
            return
        p = rng.choice(live)
        chunk = rng.randint(1, 400)
        for offset in range(positions[p], min(positions[p] + chunk, len(log[p]))):
            yield p, offset, log[p][offset]
        positions[p] = min(positions[p] + chunk, len(log[p]))


def run(
    log: Log,
    experiments: Sequence[Experiment] = (),
    *,
    seed: int = 0,
    config: EvaluatorConfig | None = None,
    advance_every: int = 50,
) -> tuple[Evaluator, list[Emission]]:
    """Read the whole log in one random interleaving, advancing now and then; flush at the end."""
    evaluator = Evaluator(config or EvaluatorConfig(), log)
    for experiment in experiments:
        evaluator.observe_experiment(experiment)
    emitted: list[Emission] = []
    for count, (partition, offset, item) in enumerate(interleavings(log, random.Random(seed)), 1):
        evaluator.offer(partition, offset, item)
        if count % advance_every == 0:
            emitted.extend(evaluator.advance())
    emitted.extend(evaluator.advance())
    emitted.extend(evaluator.advance(flush=True))
    return evaluator, emitted


def experiment(
    experiment_id: str = "exp-1", control: str = "v1.0", treatment: str = "v1.1", **fields: Any
) -> Experiment:
    """An experiment record; the simulated logs are small, so 100 users per arm is the minimum."""
    return Experiment.model_validate(
        {
            "experiment_id": experiment_id,
            "revision": 1,
            "control": control,
            "treatment": treatment,
            "min_users_per_arm": 100,
            "created_at": T0,
            "updated_at": T0,
            **fields,
        }
    )


def decisions(emitted: Sequence[Emission]) -> list[ExperimentDecision]:
    return [e for e in emitted if isinstance(e, ExperimentDecision)]


def alerts(emitted: Sequence[Emission]) -> list[RegressionAlert]:
    return [e for e in emitted if isinstance(e, RegressionAlert)]


def final_arms(log: Log) -> dict[str, tuple[set[str], dict[uuid.UUID, InteractionOutcome]]]:
    """Users and latest outcome per interaction of each variant, computed directly from the log."""
    latest: dict[uuid.UUID, InteractionOutcome] = {}
    for messages in log.values():
        for item in messages:
            if item.interaction_id not in latest or item.version > latest[item.interaction_id].version:
                latest[item.interaction_id] = item
    arms: dict[str, tuple[set[str], dict[uuid.UUID, InteractionOutcome]]] = {}
    for item in latest.values():
        users, items = arms.setdefault(item.variant or "", (set(), {}))
        users.add(item.user_id)
        items[item.interaction_id] = item
    return arms


# ----------------------------------------------------------------------------------------------------
# Decisions


def test_a_true_improvement_is_promoted_with_the_numbers_behind_it() -> None:
    log = experiment_log(random.Random(1), {"v1.0": Arm(0.35), "v1.1": Arm(0.18)})
    _, emitted = run(log, [experiment()])
    made = decisions(emitted)
    assert [(d.action, d.rule) for d in made] == [
        (DecisionAction.CONTINUE, DecisionRule.INSUFFICIENT_SAMPLE),
        (DecisionAction.PROMOTE, DecisionRule.PRIMARY_BETTER),
    ]
    first, promote = made
    assert [d.sequence for d in made] == [1, 2]
    assert promote.looks > first.looks >= 1
    assert promote.as_of > first.as_of
    assert min(promote.control.users, promote.treatment.users) >= 100
    assert promote.min_users_per_arm == 100
    primary = promote.primary
    assert primary is not None
    assert primary.metric is OutcomeMetric.REGENERATION_RATE
    assert primary.control_mean == pytest.approx(0.35, abs=0.05)
    assert primary.treatment_mean == pytest.approx(0.18, abs=0.05)
    assert primary.treatment_mean is not None
    assert primary.control_mean is not None
    assert primary.relative_effect == pytest.approx(primary.treatment_mean / primary.control_mean - 1)
    assert primary.ci_low is not None
    assert primary.ci_high is not None
    assert primary.relative_effect is not None
    assert primary.ci_low < primary.relative_effect < primary.ci_high < 0
    assert primary.credible_improvement is not None
    assert primary.credible_improvement > 0.10
    assert primary.variance_reduction == 0.0  # nobody has a history before the experiment here
    assert primary.p_value_min <= primary.p_value < 0.025
    assert [g.metric for g in promote.guardrails] == [
        OutcomeMetric.ABANDONMENT_RATE,
        OutcomeMetric.RESPONSE_TIME,
    ]
    assert promote.srm.checked
    assert not promote.srm.mismatch
    assert promote.srm.confirmed
    assert promote.srm.e_value is not None
    assert promote.srm.e_value < 1
    assert promote.assignment is not None
    assert (promote.assignment.mismatched_users, promote.assignment.mismatch) == (0, False)
    assert promote.assignment.users == promote.control.users + promote.treatment.users
    assert "better" in promote.reason
    assert "exp-1" in promote.evidence_sql
    assert promote.decision_id == decision_id(experiment(), 2, "promote", "primary_better")


def test_a_worse_treatment_is_reverted() -> None:
    log = experiment_log(random.Random(2), {"v1.0": Arm(0.35), "v1.1": Arm(0.55)})
    _, emitted = run(log, [experiment()])
    last = decisions(emitted)[-1]
    assert (last.action, last.rule) == (DecisionAction.REVERT, DecisionRule.PRIMARY_WORSE)
    assert last.primary is not None
    assert last.primary.ci_low is not None
    assert last.primary.ci_low > 0


def test_a_guardrail_that_gets_worse_reverts() -> None:
    arms = {"v1.0": Arm(0.35, abandon=0.10), "v1.1": Arm(0.35, abandon=0.40)}
    _, emitted = run(experiment_log(random.Random(3), arms), [experiment()])
    last = decisions(emitted)[-1]
    assert (last.action, last.rule) == (DecisionAction.REVERT, DecisionRule.GUARDRAIL_WORSE)
    assert "abandonment_rate" in last.reason


def test_an_app_that_hard_codes_its_own_assignment_is_caught_by_the_hash_check() -> None:
    """The app lists the variants the other way round ({v1.1: 20, v1.0: 80}): the users per arm still fit
    80/20, so the sample-ratio check sees nothing, but recomputing each user's variant from the record
    finds two in five of them in the wrong arm."""
    arms = {"v1.0": Arm(0.35), "v1.1": Arm(0.18)}
    log = experiment_log(random.Random(4), arms, weights={"v1.1": 20, "v1.0": 80})
    _, emitted = run(log, [experiment()])
    made = decisions(emitted)
    last = made[-1]
    assert (last.action, last.rule) == (DecisionAction.INVALID, DecisionRule.ASSIGNMENT_MISMATCH)
    assert not last.srm.mismatch
    assert last.assignment is not None
    assert last.assignment.mismatch
    assert last.assignment.mismatch_share == pytest.approx(0.4, abs=0.05)
    assert all(d.action is not DecisionAction.PROMOTE for d in made)


def test_a_logging_bug_that_loses_treatment_users_is_a_sample_ratio_mismatch() -> None:
    """The variants are right (the hash check passes) but 60% of the treatment's users never reach the log."""
    arms = {"v1.0": Arm(0.35), "v1.1": Arm(0.18)}
    log = experiment_log(random.Random(4), arms, users=3_000, lost=0.6)
    _, emitted = run(log, [experiment()])
    last = decisions(emitted)[-1]
    assert (last.action, last.rule) == (DecisionAction.INVALID, DecisionRule.SAMPLE_RATIO_MISMATCH)
    assert last.srm.mismatch
    assert last.assignment is not None
    assert last.assignment.mismatched_users == 0


def test_users_history_before_the_experiment_reduces_the_variance() -> None:
    """Users with their own regeneration rates and two hours of outcomes before the experiment: each brings
    their rate so far as the CUPED covariate, and the comparison's variance shrinks."""
    arms = {"v1.0": Arm(0.35), "v1.1": Arm(0.25)}
    log = experiment_log(random.Random(9), arms, users=1_500, history=12, personal=True)
    with_history, emitted = run(log, [experiment()])
    assert with_history.counters.covariates_taken == with_history.counters.users_with_history == 1_500
    adjusted = [d.primary for d in decisions(emitted) if d.primary is not None]
    assert adjusted
    assert all(p.variance_reduction is not None and p.variance_reduction > 0 for p in adjusted)
    plain = decisions(run(log, [experiment()], config=EvaluatorConfig(cuped=False))[1])
    assert all(d.primary is None or d.primary.variance_reduction is None for d in plain)


def test_each_interaction_counts_once_at_its_highest_version() -> None:
    log = experiment_log(random.Random(5), {"v1.0": Arm(0.35), "v1.1": Arm(0.18)}, amend_share=0.2)
    amended = sum(1 for messages in log.values() for o in messages if o.version > 1)
    assert amended > 100
    expected = final_arms(log)
    evaluator, _ = run(log, [experiment()])
    assert evaluator.counters.duplicates > 0
    # Look at all of it: a re-created experiment is evaluated afresh at the next look.
    evaluator.observe_experiment(experiment(created_at=T0 + timedelta(days=1)))
    evaluator.offer(0, 10**9, log[0][-1])  # a duplicate, so that there is a next look
    final = decisions(evaluator.advance(flush=True))[-1]
    assert final.primary is not None
    for arm, mean in (
        (final.control, final.primary.control_mean),
        (final.treatment, final.primary.treatment_mean),
    ):
        users, items = expected[arm.variant]
        assert (arm.users, arm.interactions) == (len(users), len(items))
        assert mean == pytest.approx(sum(o.regenerated for o in items.values()) / len(items))


def test_the_records_do_not_depend_on_how_partitions_interleave() -> None:
    """With amendments, duplicates and users' history (their CUPED covariates) in the log."""
    log = experiment_log(
        random.Random(6), {"v1.0": Arm(0.35), "v1.1": Arm(0.25)}, amend_share=0.1, history=3, personal=True
    )
    runs = [
        run(log, [experiment()], seed=seed, advance_every=every)[1]
        for seed, every in ((1, 7), (2, 50), (3, 997))
    ]
    dumps = [[e.model_dump() for e in emitted] for emitted in runs]
    assert dumps[0] == dumps[1] == dumps[2]
    assert len(decisions(runs[0])) >= 2


def test_a_replay_after_a_crash_derives_the_same_records() -> None:
    log = experiment_log(random.Random(7), {"v1.0": Arm(0.35), "v1.1": Arm(0.18)})
    evaluator = Evaluator(EvaluatorConfig(), log)
    evaluator.observe_experiment(experiment())
    before_crash: list[Emission] = []
    for count, (partition, offset, item) in enumerate(interleavings(log, random.Random(1))):
        if count > sum(len(m) for m in log.values()) // 2:
            break  # killed here: whatever it published so far is on the topics
        evaluator.offer(partition, offset, item)
        before_crash.extend(evaluator.advance())
    _, after_restart = run(log, [experiment()], seed=9)
    assert before_crash, "the crash should come after the first decision"
    assert [e.model_dump() for e in after_restart[: len(before_crash)]] == [
        e.model_dump() for e in before_crash
    ]


def test_stopped_experiments_are_not_decided_and_a_recreated_one_starts_over() -> None:
    log = experiment_log(random.Random(8), {"v1.0": Arm(0.35), "v1.1": Arm(0.18)}, users=300)
    stopped = changed_status(experiment(), ExperimentStatus.STOPPED, T0)
    assert decisions(run(log, [experiment(), stopped])[1]) == []
    again = experiment(created_at=T0 + timedelta(hours=1))
    first = decisions(run(log, [experiment()])[1])
    second = decisions(run(log, [experiment(), again])[1])
    assert [d.rule for d in first] == [d.rule for d in second]
    assert {d.decision_id for d in first}.isdisjoint(d.decision_id for d in second)
    assert all(d.experiment_created_at == again.created_at for d in second)


def test_auto_apply_publishes_the_promoted_revision_with_the_decision() -> None:
    log = experiment_log(random.Random(1), {"v1.0": Arm(0.35), "v1.1": Arm(0.18)})
    evaluator, emitted = run(log, [experiment()], config=EvaluatorConfig(auto_apply=True))
    promote = decisions(emitted)[-1]
    revisions = [e for e in emitted if isinstance(e, Experiment)]
    assert len(revisions) == 1
    applied = revisions[0]
    assert (applied.revision, applied.status) == (2, ExperimentStatus.PROMOTED)
    assert applied.applied is not None
    assert applied.applied.decision == promote
    assert (applied.applied.production_version, applied.applied.retired_version) == ("v1.1", "v1.0")
    assert applied.applied.applied_by == "evaluator"
    assert evaluator.experiments()["exp-1"] == applied


def test_applying_by_hand_needs_promote_or_revert() -> None:
    applied = apply_decision(
        experiment(), None, applied_by="cli:ana", at=T0, action="revert", note="guardrail"
    )
    assert applied.status is ExperimentStatus.REVERTED
    assert applied.applied is not None
    assert applied.applied.production_version == "v1.0"
    with pytest.raises(ValueError, match="promote or revert"):
        apply_decision(experiment(), None, applied_by="cli:ana", at=T0)


# ----------------------------------------------------------------------------------------------------
# Regressions


RateAt = Callable[[int], float]


def version_log(
    rng: random.Random,
    abandon_at: RateAt,
    *,
    version: str = "v2.0",
    windows: int = 40,
    per_window: int = 80,
    first_window: int = 0,
    batch_s: float = 20.0,
) -> list[InteractionOutcome]:
    """``per_window`` interactions of 60 users per minute, abandoned with probability ``abandon_at(w)``."""
    out = []
    for w in range(first_window, first_window + windows):
        for _ in range(per_window):
            created = T0 + timedelta(minutes=w, seconds=rng.uniform(0, 59.999))
            user = f"{version}-user-{rng.randrange(60)}"
            out.append(
                outcome(
                    user=user,
                    created=created,
                    settled=batch_time(created + SETTLE, batch_s),
                    version=version,
                    session=f"{user}-{uuid.uuid4()}",
                    regenerated=rng.random() < 0.10,
                    abandoned=rng.random() < abandon_at(w),
                    edit_norm=rng.uniform(0.1, 0.3) if rng.random() < 0.5 else None,
                )
            )
    return out


def jump(base: float, raised: float, start: int, end: int) -> RateAt:
    return lambda w: raised if start <= w < end else base


def test_a_jump_in_abandonment_alerts_once_and_resolves_once() -> None:
    log = as_log(version_log(random.Random(11), jump(0.10, 0.45, 15, 21)))
    evaluator, emitted = run(log, advance_every=37)
    found = alerts(emitted)
    assert [(a.kind, a.metric) for a in found] == [
        (AlertKind.ALERT, OutcomeMetric.ABANDONMENT_RATE),
        (AlertKind.RESOLVE, OutcomeMetric.ABANDONMENT_RATE),
    ]
    alert, resolve = found
    assert alert.incident_id == resolve.incident_id
    assert alert.alert_id == alert_id(str(alert.incident_id), "alert")
    assert alert.prompt_version == "v2.0"
    assert alert.opened_at == T0 + timedelta(minutes=15)
    assert alert.window_start == T0 + timedelta(minutes=15)  # 10% -> 45%: one window is evidence enough
    assert alert.cusum is not None
    assert alert.cusum_threshold is not None
    assert alert.cusum >= alert.cusum_threshold
    assert alert.observed > alert.expected_high > alert.expected == pytest.approx(0.10, abs=0.03)
    assert alert.severity.value == AlertSeverity.HIGH.value
    assert alert.window_interactions == 80
    assert resolve.window_start >= T0 + timedelta(minutes=21 + 4)
    assert "prompt_version = 'v2.0'" in alert.evidence_sql
    assert "avg(abandoned)" in alert.evidence_sql
    assert alert.baseline_seeded_from is None
    assert evaluator.counters.late_for_regression == 0


def test_a_regression_window_takes_the_batch_that_settled_it_and_nothing_later() -> None:
    config = EvaluatorConfig(regression=RegressionConfig(min_window_interactions=1))
    evaluator = Evaluator(config, [0])
    created = T0 + timedelta(seconds=10)
    threshold = T0 + timedelta(minutes=1) + SETTLE
    jumped = threshold + timedelta(minutes=10)  # a big batch: the watermark leapt past the threshold
    for settled in (jumped, jumped, jumped + timedelta(seconds=20)):
        evaluator.offer(0, 0, outcome(user="u", created=created, settled=settled, version="v"))
        evaluator.advance()
    assert evaluator.counters.late_for_regression == 1  # the third came in a later batch
    state = evaluator.detector("v", OutcomeMetric.ABANDONMENT_RATE)
    assert state is not None
    assert [m.n for m in state.baseline] == [2.0]


def test_a_new_version_is_compared_with_the_version_it_replaces() -> None:
    rng = random.Random(12)
    old = version_log(rng, jump(0.10, 0.10, 0, 0), version="v1.0", windows=40)
    new = version_log(rng, jump(0.40, 0.40, 0, 0), version="v1.1", windows=20, first_window=20)
    _, emitted = run(as_log(old + new), [experiment()])
    found = alerts(emitted)
    assert [(a.kind, a.prompt_version, a.metric) for a in found] == [
        (AlertKind.ALERT, "v1.1", OutcomeMetric.ABANDONMENT_RATE)
    ]
    assert found[0].baseline_seeded_from == "v1.0"
    assert found[0].window_start <= T0 + timedelta(minutes=22)


def test_steady_versions_raise_no_alert() -> None:
    log = as_log(version_log(random.Random(13), jump(0.12, 0.12, 0, 0), windows=60))
    assert alerts(run(log)[1]) == []


# ----------------------------------------------------------------------------------------------------
# Contract, configuration, ClickHouse


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"treatment": "v1.0"}, "different prompt versions"),
        ({"guardrail_metrics": ["regeneration_rate"]}, "cannot also be a guardrail"),
        ({"guardrail_metrics": ["abandonment_rate", "abandonment_rate"]}, "must not repeat"),
        ({"status": "promoted"}, "applied action"),
        ({"split": [80, 0]}, "greater than 0"),
        ({"min_relative_improvement": 1.5}, "less than 1"),
    ],
)
def test_invalid_experiments_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        experiment(**fields)


def test_settings_shape_the_evaluator() -> None:
    settings = Settings(
        experiments=ExperimentSettings(
            window_s=30,
            auto_apply=True,
            regression_metrics=("abandonment_rate",),
            regression_min_relative_rise=0.3,
            evidence_link_template="https://ch.example/play?query={sql}",
        )
    )
    config = EvaluatorConfig.from_settings(settings)
    assert config.window_ms == 30_000
    assert config.settle_delay_ms == 300_000
    assert config.auto_apply
    assert config.regression_metrics == (OutcomeMetric.ABANDONMENT_RATE,)
    assert config.regression.min_rel_rise == 0.3
    assert config.database == settings.clickhouse.database
    log = as_log(version_log(random.Random(11), jump(0.10, 0.45, 15, 21)))
    link = alerts(run(log, config=config)[1])[0].evidence_link
    assert link is not None
    assert link.startswith("https://ch.example/play?query=SELECT%20")


def test_evidence_queries_run_and_records_become_rows(chdb_client: Client, chdb_database: str) -> None:
    migrate(chdb_client, chdb_database)
    db = chdb_database
    chdb_client.query(experiment_evidence_sql(db, "exp-'1"))
    for metric in OutcomeMetric:
        chdb_client.query(regression_evidence_sql(db, "v'1", metric, 60_000, 0, 3_600_000))
    log = experiment_log(random.Random(1), {"v1.0": Arm(0.35), "v1.1": Arm(0.18)})
    made = decisions(run(log, [experiment()])[1])
    found = alerts(run(as_log(version_log(random.Random(11), jump(0.10, 0.45, 15, 21))))[1])
    spec = {s.table: s for s in TABLES}
    for table, records in (("experiment_decisions", made), ("regression_alerts", found[:1])):
        rows = [spec[table].to_row(r.model_dump_json().encode()) for r in records]
        chdb_client.insert(f"{db}.{table}", rows, column_names=list(spec[table].columns))
    current = chdb_client.query(
        "SELECT experiment_id, action, primary_relative_effect, guardrails "
        f"FROM {db}.experiment_current_decisions"
    ).result_rows
    assert len(current) == 1
    assert current[0][:2] == ("exp-1", "promote")
    assert made[-1].primary is not None
    assert current[0][2] == pytest.approx(made[-1].primary.relative_effect)
    assert "abandonment_rate" in current[0][3]
    open_now = chdb_client.query(f"SELECT prompt_version, metric FROM {db}.open_regressions").result_rows
    assert open_now == [("v2.0", "abandonment_rate")]
