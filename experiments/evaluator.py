"""The experiment evaluator and the regression watch, as a pure function of the outcomes log. No I/O.

:class:`Evaluator` is fed the messages of ``ai.outcomes.v1`` (with their partition and offset) and the
experiments of ``ai.experiments.v1``; :meth:`Evaluator.advance` returns what to publish: a
:class:`~schemas.ExperimentDecision` whenever an experiment's decision changes, a
:class:`~schemas.RegressionAlert` when a prompt version's incident opens or resolves, and, with auto-apply,
the promoted/reverted revision of an experiment. ``experiments.service`` does the Kafka side.

Exact and replayable
    Each interaction counts once, at its highest outcome ``version``: a higher version retracts the old
    values from every statistic and adds the new ones (the accumulators support both), a lower or equal
    one is a duplicate.

    Time is the outcomes' own event time (:mod:`experiments.clock`): the evaluator *looks* at every window
    boundary once every partition's clock has reached it, and what a look counts depends only on the log,
    not on how the partitions' messages interleaved when they were read. A replay from the start of the
    topic -- after a crash, on another machine -- makes the same looks with the same numbers and derives
    the same records, with the same deterministic ids (:mod:`experiments.records`).

    The one exception is liveness at the end of traffic: a partition that stays silent would hold every
    look back, so the service calls :meth:`advance` with ``flush=True`` when all partitions have been
    read to their end and nothing came for a while (and when it stops). That looks at everything read so
    far and closes the windows some partition has passed; an outcome read afterwards with an earlier
    effective time counts at the next look (or, for a closed window, not at all).

Decisions
    Users are the randomization unit (the SDK's consistent hash), interactions the measurements; the
    statistics are user-level ratio metrics, the test an anytime-valid mixture SPRT, so a look per window
    is allowed (``stats`` and ``decision`` module docstrings). A decision is emitted when its (action,
    rule) differs from the last one; ``promote``, ``revert`` and ``invalid`` end the evaluation of that
    experiment (the error guarantee is about the first crossing).

    Every user's logged variant is checked against the consistent hash of the experiment record
    (:mod:`experiments.audit`). With CUPED, each user who enters an experiment brings their values so far
    from every other outcome (their pre-exposure history) as covariates (:mod:`experiments.cuped`). The
    history counts each outcome message of version 1 at the look that counts it -- never amendments, so
    it needs no memory per interaction; a duplicated message counts twice, the same on every replay --
    which keeps the covariates a function of the log like everything else.

Regressions
    Outcomes are also binned by their interaction's ``created_at`` into windows per prompt version, as they
    are read, and a window is assessed once the clocks cut it (:mod:`experiments.clock`); its members are
    summed in interaction-id order, so the window's numbers are the same on every replay. What a
    partition emits for the window after the cut (late events, amendments) does not count. Each
    (version, metric) runs the debounced detector of :mod:`experiments.regression` over its windows. A
    version that an experiment tests against a control (the version it would replace) starts with that
    control's baseline until it has windows of its own.
"""

from __future__ import annotations

import sys
import uuid
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from experiments.audit import AssignmentAudit
from experiments.clock import EventTime
from experiments.config import EvaluatorConfig, experiment_config
from experiments.decision import ExperimentConfig, evaluate
from experiments.records import alert_record, apply_decision, decision_record
from experiments.regression import DetectorState, RegressionEvent, WindowObservation, step
from experiments.stats import ArmAccumulator, outcome_values
from schemas import InteractionOutcome, to_epoch_ms
from schemas.assignment import experiment_variants
from schemas.experiments import (
    DecisionAction,
    DecisionRule,
    Experiment,
    ExperimentDecision,
    OutcomeMetric,
    RegressionAlert,
)

#: The metrics in a fixed order: an outcome's values are kept as a tuple in this order.
METRICS: tuple[OutcomeMetric, ...] = tuple(OutcomeMetric)

Emission = ExperimentDecision | RegressionAlert | Experiment
Values = tuple[float | None, ...]
#: What waits for a look: an experiment outcome, or (user, values) of another outcome for the history.
_Pending = InteractionOutcome | tuple[str, Values]


@dataclass(slots=True)
class _Counted:
    """How one interaction is counted right now (its highest version so far)."""

    version: int
    group: str
    user_id: str
    values: Values


def _values(outcome: InteractionOutcome) -> Values:
    by_metric = outcome_values(outcome)
    return tuple(by_metric[m] for m in METRICS)


def _mapping(values: Values) -> dict[OutcomeMetric, float | None]:
    return dict(zip(METRICS, values, strict=True))


@dataclass(slots=True)
class _Run:
    """The evaluation of one experiment (one ``created_at``; revisions update its status)."""

    spec: Experiment
    config: ExperimentConfig
    dirty: bool = True
    looks: int = 0
    sequence: int = 0
    last: tuple[DecisionAction, DecisionRule] | None = None
    finished: bool = False
    min_p: dict[OutcomeMetric, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.spec.is_running and not self.finished


@dataclass(slots=True)
class _Seed:
    """A detector that started with another version's baseline."""

    source: str
    windows: int
    own_added: int = 0


@dataclass
class EvaluatorCounters:
    """What the evaluator has done, for logs and tests."""

    #: Outcome messages read.
    outcomes: int = 0
    #: Experiment outcomes counted (a first version, or a higher one replacing the old values) ...
    applied: int = 0
    #: ... and those that were not (the same or a lower version again).
    duplicates: int = 0
    #: Outcomes that came after their regression window was cut (late events, amendments).
    late_for_regression: int = 0
    #: Users with a history (CUPED) and users who entered an experiment with one.
    users_with_history: int = 0
    covariates_taken: int = 0
    looks: int = 0
    flushes: int = 0
    decisions: int = 0
    alerts: int = 0


class Evaluator:
    """Per-experiment arm statistics and per-version regression detectors, advanced look by look.

    Promises (module docstring): the records :meth:`advance` returns depend only on the outcomes log
    (each partition's messages in order) and the experiments, not on how partitions interleave, as long as
    ``flush`` is not used; ids are deterministic.
    """

    def __init__(self, config: EvaluatorConfig, partitions: Iterable[int]) -> None:
        self.config = config
        self.counters = EvaluatorCounters()
        self._time: EventTime[_Pending] = EventTime(partitions, config.window_ms, config.settle_delay_ms)
        # Experiments: arm statistics by experiment id and variant, for every tagged outcome (whether or
        # not the experiment is known yet), and the evaluations of the known experiments.
        self._arms: dict[str, dict[str, ArmAccumulator]] = {}
        self._in_experiment: dict[uuid.UUID, _Counted] = {}
        self._runs: dict[str, _Run] = {}
        self._audits: dict[str, AssignmentAudit] = {}
        # CUPED: each user's (n, y) per metric over their version-1 outcomes so far, and the snapshot each
        # experiment took of it when the user entered (their pre-experiment values).
        self._history: dict[str, array[float]] = {}
        self._covariates: dict[str, dict[str, dict[OutcomeMetric, float | None]]] = {}
        # Regressions: the members of each open window (highest version each); closed ones are forgotten.
        self._windows: dict[int, dict[uuid.UUID, _Counted]] = {}
        self._detectors: dict[tuple[str, OutcomeMetric], DetectorState] = {}
        self._seeds: dict[tuple[str, OutcomeMetric], _Seed] = {}

    # ------------------------------------------------------------------ input

    def observe_experiment(self, experiment: Experiment) -> None:
        """Take an experiment revision; older revisions than the one known are ignored."""
        run = self._runs.get(experiment.experiment_id)
        if run is not None and run.spec.created_at == experiment.created_at:
            if experiment.revision > run.spec.revision:
                run.spec = experiment
                run.config = experiment_config(experiment, self.config)
                self._audit(experiment.experiment_id).configure(
                    experiment_variants(experiment), self._arms.get(experiment.experiment_id, {})
                )
            return
        if run is not None and experiment.created_at < run.spec.created_at:
            return
        # New, or re-created under the same id: a fresh evaluation over the statistics so far.
        self._runs[experiment.experiment_id] = _Run(experiment, experiment_config(experiment, self.config))
        self._audit(experiment.experiment_id).configure(
            experiment_variants(experiment), self._arms.get(experiment.experiment_id, {})
        )

    def _audit(self, experiment_id: str) -> AssignmentAudit:
        audit = self._audits.get(experiment_id)
        if audit is None:
            audit = self._audits[experiment_id] = AssignmentAudit(experiment_id)
        return audit

    def offer(self, partition: int, offset: int, outcome: InteractionOutcome) -> None:
        """Take one outcome message as read from ``partition`` at ``offset``.

        It joins its regression window now (or is late for it) and an experiment's statistics at the
        next look that counts it.
        """
        self.counters.outcomes += 1
        effective = self._time.read(partition, to_epoch_ms(outcome.settled_at))
        self._count_in_window(partition, outcome)
        if outcome.experiment_id is not None and outcome.variant is not None:
            self._time.wait(effective, partition, offset, outcome)
        elif self.config.cuped and outcome.version == 1:
            # Only what the history needs waits for the look: far smaller than the outcome.
            self._time.wait(effective, partition, offset, (sys.intern(outcome.user_id), _values(outcome)))

    def experiments(self) -> dict[str, Experiment]:
        """The latest revision of every experiment known."""
        return {exp_id: run.spec for exp_id, run in self._runs.items()}

    def detector(self, version: str, metric: OutcomeMetric) -> DetectorState | None:
        """The regression detector of a prompt version and metric, once it has seen a window."""
        return self._detectors.get((version, metric))

    # ------------------------------------------------------------------ time

    def advance(self, *, flush: bool = False) -> list[Emission]:
        """Make every look and close every regression window that is due; return what they emitted.

        Without ``flush`` a look at ``T`` is due when every partition's clock has reached ``T``, and a
        window is due when every partition has moved past it. With ``flush`` the looks go up to the first
        boundary after the newest clock and every window some partition has passed is closed, so
        everything read so far counts (the end-of-traffic rule; :mod:`experiments.clock`).
        """
        if not self._time.started:
            return []
        if flush:
            self.counters.flushes += 1
        out: list[Emission] = []
        for t, counted in self._time.due_looks(flush=flush):
            out.extend(self._look(t, counted))
        for start in self._time.due_windows(self._windows, flush=flush):
            out.extend(self._close_window(start))
        return out

    def _look(self, t: int, counted: list[_Pending]) -> list[Emission]:
        self.counters.looks += 1
        for item in counted:
            if isinstance(item, tuple):
                self._count_in_history(*item)
            else:
                self._count_in_experiment(item)
        out: list[Emission] = []
        for experiment_id in sorted(self._runs):
            run = self._runs[experiment_id]
            if run.active and run.dirty:
                out.extend(self._decide(run, t))
        return out

    # ------------------------------------------------------------------ counting

    def _count_in_experiment(self, outcome: InteractionOutcome) -> None:
        assert outcome.experiment_id is not None
        assert outcome.variant is not None
        iid = outcome.interaction_id
        before = self._in_experiment.get(iid)
        if before is not None and outcome.version <= before.version:
            self.counters.duplicates += 1
            return
        self.counters.applied += 1
        values = _values(outcome)
        experiment_id = outcome.experiment_id
        arms = self._arms.setdefault(experiment_id, {})
        audit = self._audit(experiment_id)
        if before is not None and arms[before.group].retract(before.user_id, _mapping(before.values)):
            audit.left(before.group, before.user_id)
        variant = sys.intern(outcome.variant)
        user = sys.intern(outcome.user_id)
        covariates = self._covariates_of(experiment_id, user) if self.config.cuped else None
        if arms.setdefault(variant, ArmAccumulator()).add(user, _mapping(values), covariates):
            audit.joined(variant, user)
        self._in_experiment[iid] = _Counted(outcome.version, variant, user, values)
        if self.config.cuped and outcome.version == 1:
            self._count_in_history(user, values)
        run = self._runs.get(experiment_id)
        if run is not None:
            run.dirty = True

    def _count_in_history(self, user: str, values: Values) -> None:
        history = self._history.get(user)
        if history is None:
            history = self._history[user] = array("d", bytes(16 * len(METRICS)))
            self.counters.users_with_history += 1
        for k, value in enumerate(values):
            if value is not None:
                history[2 * k] += 1.0
                history[2 * k + 1] += value

    def _covariates_of(self, experiment_id: str, user: str) -> dict[OutcomeMetric, float | None]:
        """The user's pre-experiment values, fixed the first time they are asked for in this experiment."""
        taken = self._covariates.setdefault(experiment_id, {})
        covariates = taken.get(user)
        if covariates is None:
            history = self._history.get(user)
            covariates = {
                metric: history[2 * k + 1] / history[2 * k]
                if history is not None and history[2 * k]
                else None
                for k, metric in enumerate(METRICS)
            }
            taken[user] = covariates
            if history is not None:
                self.counters.covariates_taken += 1
        return covariates

    def _count_in_window(self, partition: int, outcome: InteractionOutcome) -> None:
        start = self._time.window_start(to_epoch_ms(outcome.interaction_created_at))
        if not self._time.takes(partition, start):
            self.counters.late_for_regression += 1
            return
        members = self._windows.setdefault(start, {})
        before = members.get(outcome.interaction_id)
        if before is None or outcome.version > before.version:
            members[outcome.interaction_id] = _Counted(
                outcome.version,
                sys.intern(outcome.prompt_version),
                sys.intern(outcome.user_id),
                _values(outcome),
            )

    # ------------------------------------------------------------------ experiments

    def _decide(self, run: _Run, t: int) -> list[Emission]:
        run.dirty = False
        run.looks += 1
        experiment_id = run.spec.experiment_id
        arms = self._arms.get(experiment_id, {})
        decision = evaluate(
            run.config,
            {variant: acc.snapshot() for variant, acc in arms.items()},
            self._audit(experiment_id).counts(),
        )
        for result in (decision.primary, *decision.guardrails):
            if result is not None:
                run.min_p[result.metric] = min(run.min_p.get(result.metric, 1.0), result.p_value)
        key = (decision.action, decision.rule)
        if key == run.last:
            return []
        run.last = key
        run.sequence += 1
        record = decision_record(
            run.spec,
            decision,
            sequence=run.sequence,
            looks=run.looks,
            as_of_ms=t,
            min_p=run.min_p,
            database=self.config.database,
            improvement_alpha=run.config.improvement_alpha,
        )
        self.counters.decisions += 1
        out: list[Emission] = [record]
        if decision.action is not DecisionAction.CONTINUE:
            run.finished = True  # the guarantee is about the first crossing; later looks change nothing
            if self.config.auto_apply and decision.action in (DecisionAction.PROMOTE, DecisionAction.REVERT):
                applied = apply_decision(run.spec, record, applied_by="evaluator", at=record.as_of)
                run.spec = applied
                out.append(applied)
        return out

    # ------------------------------------------------------------------ regressions

    def _close_window(self, start: int) -> list[Emission]:
        members = self._windows.pop(start)
        window_ms = self.config.window_ms
        # Added in interaction-id order: the float sums do not depend on the order outcomes were read in.
        by_version: dict[str, ArmAccumulator] = {}
        for iid in sorted(members):
            counted = members[iid]
            by_version.setdefault(counted.group, ArmAccumulator()).add(
                counted.user_id, _mapping(counted.values)
            )
        window_start = datetime.fromtimestamp(start / 1000, UTC)
        window_end = datetime.fromtimestamp((start + window_ms) / 1000, UTC)
        out: list[Emission] = []
        for version in sorted(by_version):
            stats = by_version[version].snapshot()
            for metric in self.config.regression_metrics:
                moments = stats.moments(metric)
                if moments.n <= 0:
                    continue
                key = (version, metric)
                state = self._detectors.get(key) or self._new_detector(version, metric)
                observation = WindowObservation(version, metric, window_start, window_end, moments)
                new_state, events = step(state, observation)
                seed = self._seeds.get(key)
                if (
                    seed is not None
                    and new_state.baseline.windows
                    and new_state.baseline.windows[-1] is moments
                ):
                    seed.own_added += 1
                self._detectors[key] = new_state
                for event in events:
                    out.append(self._alert(event, new_state, observation))
        return out

    def _new_detector(self, version: str, metric: OutcomeMetric) -> DetectorState:
        state = DetectorState(version, metric, self.config.regression)
        source = self._replaced_by(version)
        if source is not None:
            theirs = self._detectors.get((source, metric))
            if theirs is not None and len(theirs.baseline) >= self.config.regression.min_baseline_windows:
                self._seeds[(version, metric)] = _Seed(source, len(theirs.baseline))
                state = DetectorState(version, metric, self.config.regression, baseline=theirs.baseline)
        return state

    def _replaced_by(self, version: str) -> str | None:
        """The control of the newest experiment that tests ``version`` as its treatment."""
        tests = [run.spec for run in self._runs.values() if run.spec.treatment == version]
        if not tests:
            return None
        return max(tests, key=lambda spec: (spec.created_at, spec.experiment_id)).control

    def _alert(
        self, event: RegressionEvent, state: DetectorState, observation: WindowObservation
    ) -> RegressionAlert:
        self.counters.alerts += 1
        seed = self._seeds.get((event.version, event.metric))
        seeded_from = None
        if (
            seed is not None
            and min(seed.windows, self.config.regression.baseline_windows - seed.own_added) > 0
        ):
            seeded_from = seed.source
        return alert_record(event, state, observation, self.config, seeded_from)


__all__ = ["METRICS", "Emission", "Evaluator", "EvaluatorCounters"]
