"""The experiment evaluator and the regression watch, as a pure function of the outcomes log. No I/O.

:class:`Evaluator` is fed the messages of ``ai.outcomes.v1`` (with their partition and offset) and the
experiments of ``ai.experiments.v1``; :meth:`Evaluator.advance` returns what to publish: a
:class:`~schemas.ExperimentDecision` whenever an experiment's decision changes, a
:class:`~schemas.RegressionAlert` when a prompt version's incident opens or resolves, and, with auto-apply,
the promoted/reverted revision of an experiment. ``experiments.service`` does the Kafka
side.

Exact and replayable
    Each interaction counts once, at its highest outcome ``version``: a higher version retracts the old
    values from every statistic and adds the new ones (the library's accumulators support both), a lower
    or equal one is a duplicate.

    Time is the outcomes' own event time: ``settled_at``, the processor's watermark when it emitted that
    version. A partition's *clock* is the largest ``settled_at`` read from it, and an outcome's *effective
    time* is its partition's clock when it was read -- so effective times never decrease within a
    partition. The evaluator *looks* at every window boundary ``T`` (a multiple of the window) once every
    partition's clock has reached ``T``; the look counts exactly the experiments' outcomes with effective
    time ``< T``, applied in (effective time, partition, offset) order, and evaluates the experiments
    that changed. When every partition has reached ``T`` no partition can
    deliver another outcome that belongs before ``T``, so what a look counts depends only on the log, not
    on how the partitions' messages interleaved when they were read: a replay from the start of the topic
    -- after a crash, on another machine -- makes the same looks with the same numbers and derives the
    same records, with the same deterministic ids.

    The one exception is liveness at the end of traffic: a partition that stays silent would hold every
    look back, so the service calls :meth:`advance` with ``flush=True`` when all partitions have been
    read to their end and nothing came for a while (and when it stops). That looks at everything read so
    far and closes the windows some partition has passed; an outcome read afterwards with an earlier
    effective time counts at the next look (or, for a closed window, not at all).

Decisions
    Users are the randomization unit (the SDK's consistent hash), interactions the measurements; the
    statistics are the library's user-level ratio metrics, the test its anytime-valid mixture SPRT, so a
    look per window is allowed (``stats`` and ``decision`` module docstrings). A decision is emitted when
    its (action, rule) differs from the last one; ``promote``, ``revert`` and ``invalid`` end the
    evaluation of that experiment (the error guarantee is about the first crossing).

Regressions
    Outcomes are also binned by their interaction's ``created_at`` into windows per prompt version, as they
    are read. The processors settle an interaction once their watermark passes ``created_at`` plus the
    settle delay, and ``settled_at`` is that watermark; so once a partition's clock has passed a window's
    end plus the delay, it has emitted every timely outcome of that window -- at the latest in the batch
    that crossed it, whose outcomes all carry the crossing value. A partition therefore contributes to a
    window what it emits until its clock moves past that crossing value, and a window is assessed once
    every partition has done so. That cut depends only on each partition's own log, and the members are
    summed in interaction-id order, so the window's numbers are the same on every replay. What a
    partition emits later for the window (late events, amendments) does not count. Each
    (version, metric) runs the library's debounced detector over its windows. A version that an
    experiment tests against a control (the version it would replace) starts with that control's
    baseline until it has windows of its own.
"""

from __future__ import annotations

import heapq
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from experiments.decision import (
    Action,
    Decision,
    ExperimentConfig,
    MetricResult,
    evaluate,
)
from experiments.regression import (
    DetectorState,
    RegressionConfig,
    RegressionEvent,
    WindowObservation,
    step,
)
from experiments.stats import ArmAccumulator, Metric, outcome_values
from schemas import InteractionOutcome, format_ms, to_epoch_ms
from schemas.experiments import (
    AlertKind,
    AlertSeverity,
    ArmNumbers,
    DecisionAction,
    DecisionRule,
    Experiment,
    ExperimentAction,
    ExperimentDecision,
    ExperimentStatus,
    MetricComparison,
    OutcomeMetric,
    RegressionAlert,
    SrmCheck,
    finite,
)

if TYPE_CHECKING:
    from infra.settings import Settings

#: Namespace of the deterministic ids of decisions and alerts.
_IDS = uuid.UUID("0b6f4c52-8a0e-4d83-a0f5-2f4f1b7f3c11")
#: The metrics in a fixed order: an outcome's values are kept as a tuple in this order.
METRICS: tuple[Metric, ...] = tuple(Metric)

Emission = ExperimentDecision | RegressionAlert | Experiment
Values = tuple[float | None, ...]


def as_metric(metric: OutcomeMetric | str) -> Metric:
    """The library's metric of a contract metric (they share their values)."""
    return Metric(str(metric))


@dataclass(frozen=True, slots=True)
class EvaluatorConfig:
    """How the evaluator looks: the window, when a regression window closes, the detectors' thresholds."""

    window_ms: int = 60_000
    #: The processors' settle delay: an interaction settles when their watermark passes created_at + this
    #: (the longest signal window). A regression window is complete once every partition has passed it.
    settle_delay_ms: int = 300_000
    regression: RegressionConfig = field(default_factory=lambda: RegressionConfig(min_abs_rise=0.02))
    regression_metrics: tuple[Metric, ...] = (
        Metric.REGENERATION_RATE,
        Metric.CORRECTION_RATE,
        Metric.ABANDONMENT_RATE,
        Metric.EDIT_DISTANCE,
    )
    auto_apply: bool = False
    #: ClickHouse database the evidence queries name.
    database: str = "feedbackloop"
    evidence_link_template: str | None = None

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.settle_delay_ms < 0:
            raise ValueError("window_ms must be positive and settle_delay_ms non-negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> EvaluatorConfig:
        """The configuration the settings describe (``experiments``, signal windows, ClickHouse database)."""
        ex = settings.experiments
        signals = settings.pipeline.signals
        # The same delay as the processors' PartitionState.
        settle_s = max(signals.abandon_window_s, signals.rephrase_window_s, signals.followup_window_s)
        return cls(
            window_ms=ex.window_s * 1000,
            settle_delay_ms=int(settle_s * 1000),
            regression=RegressionConfig(
                false_alarm_budget=ex.regression_false_alarm_budget,
                horizon_windows=ex.regression_horizon_windows,
                min_abs_rise=ex.regression_min_absolute_rise,
                min_rel_rise=ex.regression_min_relative_rise,
                baseline_windows=ex.regression_baseline_windows,
                min_baseline_windows=min(ex.regression_min_baseline_windows, ex.regression_baseline_windows),
                min_window_interactions=ex.regression_min_window_interactions,
                open_after=ex.regression_open_after,
                resolve_after=ex.regression_resolve_after,
            ),
            regression_metrics=tuple(Metric(m) for m in ex.regression_metrics),
            auto_apply=ex.auto_apply,
            database=settings.clickhouse.database,
            evidence_link_template=ex.evidence_link_template,
        )


def experiment_config(experiment: Experiment) -> ExperimentConfig:
    """The library's decision configuration of an experiment record."""
    control_weight, treatment_weight = experiment.split
    total = control_weight + treatment_weight
    return ExperimentConfig(
        control=experiment.control,
        treatment=experiment.treatment,
        split=(control_weight / total, treatment_weight / total),
        primary=as_metric(experiment.primary_metric),
        guardrails=tuple(as_metric(m) for m in experiment.guardrail_metrics),
        min_interactions_per_arm=experiment.min_interactions_per_arm,
        min_relative_improvement=experiment.min_relative_improvement,
        alpha=experiment.alpha,
    )


def decision_id(experiment: Experiment, sequence: int, action: str, rule: str) -> uuid.UUID:
    """Deterministic id of the ``sequence``-th decision of an experiment (a re-created experiment, with
    another ``created_at``, gets other ids)."""
    created = to_epoch_ms(experiment.created_at)
    return uuid.uuid5(
        _IDS, f"decision\x1f{experiment.experiment_id}\x1f{created}\x1f{sequence}\x1f{action}\x1f{rule}"
    )


def alert_id(incident_id: str, kind: str) -> uuid.UUID:
    """Deterministic id of an incident's alert or resolve."""
    return uuid.uuid5(_IDS, f"alert\x1f{incident_id}\x1f{kind}")


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_time(epoch_ms: int) -> str:
    """A DateTime64(3, 'UTC') literal of epoch milliseconds."""
    text = format_ms(epoch_ms).removesuffix("Z").replace("T", " ")
    return f"toDateTime64('{text}', 3, 'UTC')"


#: How each metric is computed per row group in ClickHouse (the same definitions as ``outcome_values``).
METRIC_SQL: Mapping[Metric, str] = {
    Metric.REGENERATION_RATE: "avg(regenerated)",
    Metric.CORRECTION_RATE: "avg(corrected)",
    Metric.ABANDONMENT_RATE: "avg(abandoned)",
    Metric.EDIT_DISTANCE: "avgIf(edit_distance_norm, edited)",
    Metric.RESPONSE_TIME: "avg(response_time_ms)",
}


def experiment_evidence_sql(database: str, experiment_id: str) -> str:
    """SQL that shows each arm's users, interactions and metrics, from ``interaction_outcomes``."""
    metrics = ",\n       ".join(f"{expr} AS {metric.value}" for metric, expr in METRIC_SQL.items())
    return (
        f"SELECT variant, uniqExact(user_id) AS users, count() AS interactions,\n       {metrics}\n"
        f"FROM {database}.interaction_outcomes FINAL\n"
        f"WHERE experiment_id = {sql_string(experiment_id)}\n"
        "GROUP BY variant ORDER BY variant"
    )


def regression_evidence_sql(
    database: str, version: str, metric: Metric, window_ms: int, from_ms: int, to_ms: int
) -> str:
    """SQL that shows the metric of ``version`` per window between ``from_ms`` and ``to_ms``."""
    extra = ", countIf(edited) AS edits" if metric is Metric.EDIT_DISTANCE else ""
    return (
        f"SELECT toStartOfInterval(interaction_created_at, INTERVAL {window_ms // 1000} SECOND) "
        f"AS window_start,\n       count() AS interactions, uniqExact(user_id) AS users{extra},\n"
        f"       {METRIC_SQL[metric]} AS {metric.value}\n"
        f"FROM {database}.interaction_outcomes FINAL\n"
        f"WHERE prompt_version = {sql_string(version)}\n"
        f"  AND interaction_created_at >= {sql_time(from_ms)}\n"
        f"  AND interaction_created_at < {sql_time(to_ms)}\n"
        "GROUP BY window_start ORDER BY window_start"
    )


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


def _mapping(values: Values) -> dict[Metric, float | None]:
    return dict(zip(METRICS, values, strict=True))


@dataclass(slots=True)
class _Run:
    """The evaluation of one experiment (one ``created_at``; revisions update its status)."""

    spec: Experiment
    config: ExperimentConfig
    dirty: bool = True
    looks: int = 0
    sequence: int = 0
    last: tuple[Action, str] | None = None
    finished: bool = False
    min_p: dict[Metric, float] = field(default_factory=dict)

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
        self._window_ms = config.window_ms
        # Per partition: its clock (largest settled_at read) and the clock before its latest increase.
        self._clock: dict[int, int | None] = dict.fromkeys(partitions)
        self._previous: dict[int, int | None] = dict.fromkeys(partitions)
        if not self._clock:
            raise ValueError("the evaluator needs at least one partition")
        # Experiment outcomes waiting for their look: (effective time, partition, offset, arrival, outcome);
        # the arrival number only keeps a message read twice from ever comparing outcomes.
        self._pending: list[tuple[int, int, int, int, InteractionOutcome]] = []
        self._last_look: int | None = None
        # Experiments: arm statistics by experiment id and variant, for every tagged outcome (whether or
        # not the experiment is known yet), and the evaluations of the known experiments.
        self._arms: dict[str, dict[str, ArmAccumulator]] = {}
        self._in_experiment: dict[uuid.UUID, _Counted] = {}
        self._runs: dict[str, _Run] = {}
        # Regressions: the members of each open window (highest version each); closed ones are forgotten.
        self._windows: dict[int, dict[uuid.UUID, _Counted]] = {}
        self._closed_through = -(2**62)
        self._detectors: dict[tuple[str, Metric], DetectorState] = {}
        self._seeds: dict[tuple[str, Metric], _Seed] = {}

    # ------------------------------------------------------------------ input

    def observe_experiment(self, experiment: Experiment) -> None:
        """Take an experiment revision; older revisions than the one known are ignored."""
        run = self._runs.get(experiment.experiment_id)
        if run is not None and run.spec.created_at == experiment.created_at:
            if experiment.revision > run.spec.revision:
                run.spec = experiment
                run.config = experiment_config(experiment)
            return
        if run is not None and experiment.created_at < run.spec.created_at:
            return
        # New, or re-created under the same id: a fresh evaluation over the statistics so far.
        self._runs[experiment.experiment_id] = _Run(experiment, experiment_config(experiment))

    def offer(self, partition: int, offset: int, outcome: InteractionOutcome) -> None:
        """Take one outcome message as read from ``partition`` at ``offset``.

        It joins its regression window now (or is late for it) and an experiment's statistics at the
        next look that counts it.
        """
        self.counters.outcomes += 1
        settled = to_epoch_ms(outcome.settled_at)
        clock = self._clock.get(partition)
        if clock is None or settled > clock:
            self._previous[partition] = clock
            self._clock[partition] = clock = settled
        self._count_in_window(partition, outcome)
        if outcome.experiment_id is None or outcome.variant is None:
            return
        effective = clock
        if self._last_look is not None and effective < self._last_look:
            effective = self._last_look  # read after a flush looked past it: it counts at the next look
        heapq.heappush(self._pending, (effective, partition, offset, self.counters.outcomes, outcome))

    def experiments(self) -> dict[str, Experiment]:
        """The latest revision of every experiment known."""
        return {exp_id: run.spec for exp_id, run in self._runs.items()}

    def detector(self, version: str, metric: Metric) -> DetectorState | None:
        """The regression detector of a prompt version and metric, once it has seen a window."""
        return self._detectors.get((version, metric))

    # ------------------------------------------------------------------ time

    def advance(self, *, flush: bool = False) -> list[Emission]:
        """Make every look and close every regression window that is due; return what they emitted.

        Without ``flush`` a look at ``T`` is due when every partition's clock has reached ``T``, and a
        window is due when every partition has moved past it (:meth:`_threshold`). With ``flush`` the looks
        go up to the first boundary after the newest clock and every window some partition has passed is
        closed, so everything read so far counts (the end-of-traffic rule; module docstring).
        """
        clocks = [c for c in self._clock.values() if c is not None]
        if not clocks:
            return []
        if flush:
            self.counters.flushes += 1
            # Everything read so far, including what was read after an earlier flush looked past it.
            limit = self._boundary_above(max(clocks + [item[0] for item in self._pending]))
        elif len(clocks) < len(self._clock):
            return []
        else:
            limit = min(clocks)
        out: list[Emission] = []
        while self._pending:
            t = self._boundary_above(self._pending[0][0])
            if self._last_look is not None:
                t = max(t, self._last_look + self._window_ms)
            if t > limit:
                break
            out.extend(self._look(t))
        passed: int | None
        if flush:
            passed = max(clocks)
        else:
            previous = [p for p in self._previous.values() if p is not None]
            passed = min(previous) if len(previous) == len(self._previous) else None
        if passed is not None:
            for start in sorted(self._windows):
                if self._threshold(start) > passed:
                    break
                out.extend(self._close_window(start))
        return out

    def _boundary_above(self, ms: int) -> int:
        return (ms // self._window_ms + 1) * self._window_ms

    def _threshold(self, start: int) -> int:
        """The watermark at which every (timely) interaction of the window starting at ``start`` has
        settled: the processors settle an interaction when their watermark passes created_at + delay."""
        return start + self._window_ms + self.config.settle_delay_ms

    def _look(self, t: int) -> list[Emission]:
        self.counters.looks += 1
        pending = self._pending
        while pending and pending[0][0] < t:
            self._count_in_experiment(heapq.heappop(pending)[4])
        out: list[Emission] = []
        for experiment_id in sorted(self._runs):
            run = self._runs[experiment_id]
            if run.active and run.dirty:
                out.extend(self._decide(run, t))
        self._last_look = t
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
        arms = self._arms.setdefault(outcome.experiment_id, {})
        if before is not None:
            arms[before.group].retract(before.user_id, _mapping(before.values))
        variant = sys.intern(outcome.variant)
        user = sys.intern(outcome.user_id)
        arms.setdefault(variant, ArmAccumulator()).add(user, _mapping(values))
        self._in_experiment[iid] = _Counted(outcome.version, variant, user, values)
        run = self._runs.get(outcome.experiment_id)
        if run is not None:
            run.dirty = True

    def _count_in_window(self, partition: int, outcome: InteractionOutcome) -> None:
        created = to_epoch_ms(outcome.interaction_created_at)
        start = created - created % self._window_ms
        previous = self._previous.get(partition)
        # Counted while this partition's clock has not passed the window's threshold before the latest
        # increase: so the window takes the whole batch in which the processor settled its interactions,
        # and nothing that partition emits afterwards -- the same cut whatever the interleaving.
        if start < self._closed_through or (previous is not None and previous >= self._threshold(start)):
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
        arms = self._arms.get(run.spec.experiment_id, {})
        decision = evaluate(run.config, {variant: acc.snapshot() for variant, acc in arms.items()})
        for result in (decision.primary, *decision.guardrails):
            if result is not None:
                run.min_p[result.metric] = min(run.min_p.get(result.metric, 1.0), result.p_value)
        key = (decision.action, str(decision.rule))
        if key == run.last:
            return []
        run.last = key
        run.sequence += 1
        record = self._decision_record(run, decision, t)
        self.counters.decisions += 1
        out: list[Emission] = [record]
        if decision.action is not Action.CONTINUE:
            run.finished = True  # the guarantee is about the first crossing; later looks change nothing
            if self.config.auto_apply and decision.action in (Action.PROMOTE, Action.REVERT):
                applied = apply_decision(run.spec, record, applied_by="evaluator", at=record.as_of)
                run.spec = applied
                out.append(applied)
        return out

    def _comparison(self, run: _Run, result: MetricResult) -> MetricComparison:
        return MetricComparison(
            metric=OutcomeMetric(result.metric.value),
            role="primary" if result.role == "primary" else "guardrail",
            control_mean=finite(result.control_mean),
            treatment_mean=finite(result.treatment_mean),
            control_n=result.control_n,
            treatment_n=result.treatment_n,
            control_users=result.control_users,
            treatment_users=result.treatment_users,
            relative_effect=finite(result.relative_effect),
            ci_low=finite(result.ci_low),
            ci_high=finite(result.ci_high),
            ci_level=result.ci_level,
            p_value=result.p_value,
            p_value_min=run.min_p.get(result.metric, result.p_value),
            e_value=result.e_value,
        )

    def _decision_record(self, run: _Run, decision: Decision, t: int) -> ExperimentDecision:
        spec = run.spec
        srm = decision.srm
        control_users, treatment_users = srm.observed
        expected_control, expected_treatment = srm.expected
        return ExperimentDecision(
            decision_id=decision_id(spec, run.sequence, decision.action.value, decision.rule.value),
            experiment_id=spec.experiment_id,
            experiment_created_at=spec.created_at,
            sequence=run.sequence,
            action=DecisionAction(decision.action.value),
            rule=DecisionRule(decision.rule.value),
            reason=decision.reason,
            as_of=datetime.fromtimestamp(t / 1000, UTC),
            looks=run.looks,
            control=ArmNumbers(
                variant=decision.control.name,
                users=decision.control.users,
                interactions=decision.control.interactions,
            ),
            treatment=ArmNumbers(
                variant=decision.treatment.name,
                users=decision.treatment.users,
                interactions=decision.treatment.interactions,
            ),
            srm=SrmCheck(
                observed_users=(control_users, treatment_users),
                expected_users=(expected_control, expected_treatment),
                chi2=srm.chi2,
                p_value=srm.p_value,
                threshold=srm.threshold,
                checked=srm.checked,
                mismatch=srm.mismatch,
            ),
            primary=self._comparison(run, decision.primary) if decision.primary is not None else None,
            guardrails=tuple(self._comparison(run, g) for g in decision.guardrails),
            split=spec.split,
            alpha=spec.alpha,
            min_interactions_per_arm=spec.min_interactions_per_arm,
            min_relative_improvement=spec.min_relative_improvement,
            evidence_sql=experiment_evidence_sql(self.config.database, spec.experiment_id),
        )

    # ------------------------------------------------------------------ regressions

    def _close_window(self, start: int) -> list[Emission]:
        members = self._windows.pop(start)
        self._closed_through = max(self._closed_through, start + self._window_ms)
        # Added in interaction-id order: the float sums do not depend on the order outcomes were read in.
        by_version: dict[str, ArmAccumulator] = {}
        for iid in sorted(members):
            counted = members[iid]
            by_version.setdefault(counted.group, ArmAccumulator()).add(
                counted.user_id, _mapping(counted.values)
            )
        window_start = datetime.fromtimestamp(start / 1000, UTC)
        window_end = datetime.fromtimestamp((start + self._window_ms) / 1000, UTC)
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
                if seed is not None and new_state.baseline and new_state.baseline[-1] is moments:
                    seed.own_added += 1
                self._detectors[key] = new_state
                for event in events:
                    out.append(self._alert_record(event, new_state, observation))
        return out

    def _new_detector(self, version: str, metric: Metric) -> DetectorState:
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

    def _alert_record(
        self, event: RegressionEvent, state: DetectorState, observation: WindowObservation
    ) -> RegressionAlert:
        self.counters.alerts += 1
        config = self.config
        seed = self._seeds.get((event.version, event.metric))
        seeded_from = None
        if seed is not None and min(seed.windows, config.regression.baseline_windows - seed.own_added) > 0:
            seeded_from = seed.source
        opened_ms = to_epoch_ms(event.opened_at)
        sql = regression_evidence_sql(
            config.database,
            event.version,
            event.metric,
            self._window_ms,
            opened_ms - config.regression.baseline_windows * self._window_ms,
            to_epoch_ms(event.window_end),
        )
        link = None
        if config.evidence_link_template is not None:
            link = config.evidence_link_template.replace("{sql}", quote(sql, safe=""))
        return RegressionAlert(
            alert_id=alert_id(event.incident_id, event.kind.value),
            kind=AlertKind(event.kind.value),
            incident_id=uuid.UUID(event.incident_id),
            prompt_version=event.version,
            metric=OutcomeMetric(event.metric.value),
            severity=AlertSeverity(event.severity.value),
            window_start=event.window_start,
            window_end=event.window_end,
            opened_at=event.opened_at,
            observed=event.observed,
            expected=event.expected,
            expected_low=event.expected_low,
            expected_high=event.expected_high,
            relative_rise=finite(event.relative_rise),
            z=finite(event.z),
            p_value=event.p_value,
            window_interactions=round(observation.moments.n),
            baseline_windows=len(state.baseline),
            baseline_seeded_from=seeded_from,
            evidence_sql=sql,
            evidence_link=link,
        )


def apply_decision(
    experiment: Experiment,
    decision: ExperimentDecision | None,
    *,
    applied_by: str,
    at: datetime,
    action: str | None = None,
    note: str = "",
) -> Experiment:
    """The next revision of ``experiment`` with a promote or revert applied (the prompt changelog entry).

    ``action`` defaults to the decision's; without a decision it must be given (a forced action).
    """
    chosen = action or (decision.action.value if decision is not None else None)
    if chosen not in ("promote", "revert"):
        raise ValueError(f"only promote or revert can be applied, not {chosen!r}")
    promote = chosen == "promote"
    applied = ExperimentAction(
        action="promote" if promote else "revert",
        applied_at=at,
        applied_by=applied_by,
        production_version=experiment.treatment if promote else experiment.control,
        retired_version=experiment.control if promote else experiment.treatment,
        decision=decision,
        note=note,
    )
    return Experiment.model_validate(
        {
            **experiment.model_dump(exclude={"applied"}),
            "revision": experiment.revision + 1,
            "status": ExperimentStatus.PROMOTED if promote else ExperimentStatus.REVERTED,
            "updated_at": at,
            "applied": applied,
        }
    )


def changed_status(experiment: Experiment, status: ExperimentStatus, at: datetime) -> Experiment:
    """The next revision of ``experiment`` with another status (e.g. stopped)."""
    return Experiment.model_validate(
        {**experiment.model_dump(), "revision": experiment.revision + 1, "status": status, "updated_at": at}
    )


__all__ = [
    "METRICS",
    "Emission",
    "Evaluator",
    "EvaluatorConfig",
    "EvaluatorCounters",
    "alert_id",
    "apply_decision",
    "as_metric",
    "changed_status",
    "decision_id",
    "experiment_config",
    "experiment_evidence_sql",
    "regression_evidence_sql",
]
