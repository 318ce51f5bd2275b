"""``feedbackloop experiments …`` and ``feedbackloop alerts tail``: A/B experiments and regression alerts.

Everything here talks to Kafka only (the experiments, decisions and alerts topics), so it works while a
worker runs and holds the embedded ClickHouse.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from experiments.records import apply_decision, changed_status
from experiments.simulate import SimulationSpec, pre_period_correlation, simulate
from experiments.store import (
    ExperimentExistsError,
    ExperimentNotFoundError,
    ExperimentTopics,
    create_experiment,
    get_experiment,
    latest_decisions,
    new_experiment,
    publish_experiment,
    read_decisions,
    read_experiments,
)
from feedbackloop.context import load_settings
from feedbackloop.output import console, err, fail
from infra.kafka import client_config
from infra.settings import Settings
from schemas.experiments import (
    AlertKind,
    DecisionAction,
    DecisionRule,
    ExperimentDecision,
    ExperimentStatus,
    MetricComparison,
    OutcomeMetric,
    RegressionAlert,
)

experiments_app = typer.Typer(
    no_args_is_help=True,
    help="Prompt A/B experiments: create, list, show, stop; apply the evaluator's promote/revert; simulate.",
)
alerts_app = typer.Typer(no_args_is_help=True, help="Regression alerts of prompt versions.")


class Format(StrEnum):
    """How records are printed."""

    table = "table"
    json = "json"


# ------------------------------------------------------------------ printing


def _value(metric: OutcomeMetric, value: float | None) -> str:
    if value is None:
        return "–"
    if metric is OutcomeMetric.RESPONSE_TIME:
        return f"{value:,.0f} ms"
    if metric is OutcomeMetric.EDIT_DISTANCE:
        return f"{value:.3f}"
    return f"{value:.1%}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"


def _interval(result: MetricComparison) -> str:
    low = "-∞" if result.ci_low is None else f"{result.ci_low:+.1%}"
    high = "+∞" if result.ci_high is None else f"{result.ci_high:+.1%}"
    return f"[{low}, {high}]"


_ACTION_STYLE = {
    DecisionAction.CONTINUE: "yellow",
    DecisionAction.PROMOTE: "bold green",
    DecisionAction.REVERT: "bold red",
    DecisionAction.INVALID: "bold magenta",
}


def decision_table(decision: ExperimentDecision) -> Table:
    """A rich table of one decision: the action and rule, the arms, and every metric compared."""
    style = _ACTION_STYLE[decision.action]
    action = f"[{style}]{decision.action.value.upper()}[/{style}]"
    title = (
        f"experiment [bold]{decision.experiment_id}[/bold]: {action} ({decision.rule.value}) "
        f"as of {decision.as_of:%Y-%m-%d %H:%M} UTC, look {decision.looks}"
    )
    control, treatment = decision.control, decision.treatment
    compared = [r for r in (decision.primary, *decision.guardrails) if r is not None]
    levels = sorted({f"{r.ci_level:.1%} ({r.role})" for r in compared}, reverse=True)
    caption = decision.reason
    if compared:
        caption += (
            "\n* primary metric; confidence sequences at " + ", ".join(levels) + ", valid at every look"
        )
    primary = decision.primary
    if primary is not None and primary.credible_improvement is not None:
        level = 1 - (decision.improvement_alpha or 0.25)
        caption += (
            f"\npromote needs the improvement credibly ({level:.0%}) above "
            f"{decision.min_relative_improvement:.0%}: it is above {primary.credible_improvement:.1%}"
        )
        if primary.variance_reduction is not None:
            caption += f"; CUPED removed {max(primary.variance_reduction, 0.0):.0%} of its variance"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAVY)
    for header in (
        "",
        f"control {control.variant}",
        f"treatment {treatment.variant}",
        "effect",
        "confidence seq.",
        "p (anytime)",
    ):
        table.add_column(header, no_wrap=True)
    share = decision.split[1] / sum(decision.split)
    srm = f"SRM p={decision.srm.p_value:.3g}" + ("" if decision.srm.checked else " (not yet)")
    if decision.srm.checked and decision.srm.confirmed is not None:
        srm += " ✓" if decision.srm.confirmed else " (leaning)"
    minimum = (
        f"min {decision.min_users_per_arm:,}"
        if decision.min_users_per_arm is not None
        else f"min {decision.min_interactions_per_arm:,} interactions"
    )
    table.add_row("users", f"{control.users:,}", f"{treatment.users:,}", "", minimum, srm)
    check = decision.assignment
    hashed = (
        "" if check is None else f"hash: {check.mismatched_users:,} misplaced ({check.mismatch_share:.1%})"
    )
    table.add_row(
        "interactions",
        f"{control.interactions:,}",
        f"{treatment.interactions:,}",
        "",
        f"split {1 - share:.0%}/{share:.0%}",
        hashed,
    )
    for result in compared:
        table.add_row(
            result.metric.value + (" *" if result.role == "primary" else ""),
            _value(result.metric, result.control_mean),
            _value(result.metric, result.treatment_mean),
            _percent(result.relative_effect),
            _interval(result),
            f"{result.p_value_min:.3g}",
        )
    return table


def print_decision(decision: ExperimentDecision, out: Console | None = None) -> None:
    """Print one decision as a table, with what to do about it."""
    out = out or console
    out.print(decision_table(decision))
    if decision.action is DecisionAction.PROMOTE:
        out.print(
            f"  recommendation: promote {decision.treatment.variant} "
            f"(`feedbackloop experiments promote {decision.experiment_id}`)"
        )
    elif decision.action is DecisionAction.REVERT:
        out.print(
            f"  recommendation: revert to {decision.control.variant} "
            f"(`feedbackloop experiments revert {decision.experiment_id}`)"
        )
    elif decision.action is DecisionAction.INVALID:
        what = (
            "users are logged in other arms than the experiment's hash gives (assign them with "
            "FeedbackClient.experiment)"
            if decision.rule is DecisionRule.ASSIGNMENT_MISMATCH
            else "the users per arm do not follow the split (sample ratio mismatch)"
        )
        out.print(f"  the assignment or logging is broken: {what}; fix it, start a new experiment")


def print_latest_decisions(settings: Settings, out: Console | None = None) -> int:
    """Print every experiment's current decision (read from the decisions topic); return how many.

    For ``make demo``: call it after the worker stopped (its evaluator publishes the last looks on stop).
    """

    out = out or console
    decisions = latest_decisions(settings)
    if not decisions:
        out.print("no experiment decisions yet")
    for decision in decisions:
        print_decision(decision, out)
    return len(decisions)


def alert_line(alert: RegressionAlert) -> str:
    """One line of rich markup for an alert or a resolve."""
    metric = alert.metric
    rise = "" if alert.relative_rise is None else f" ({alert.relative_rise:+.0%})"
    when = f"{alert.window_start:%Y-%m-%d %H:%M}–{alert.window_end:%H:%M} UTC"
    head = (
        f"[bold red]ALERT {alert.severity.value}[/bold red]"
        if alert.kind is AlertKind.ALERT
        else f"[bold green]RESOLVED[/bold green] (peak {alert.severity.value})"
    )
    return (
        f"{head} {alert.prompt_version} {metric.value}: {_value(metric, alert.observed)} vs expected "
        f"{_value(metric, alert.expected)} [{_value(metric, alert.expected_low)}, "
        f"{_value(metric, alert.expected_high)}]{rise}, window {when}, incident {alert.incident_id}"
    )


# ------------------------------------------------------------------ experiments


def _split(text: str) -> tuple[int, int]:
    try:
        control, treatment = (int(part) for part in text.replace(":", "/").split("/"))
    except ValueError as exc:
        raise typer.BadParameter("give the split as CONTROL/TREATMENT weights, e.g. 80/20") from exc
    if control <= 0 or treatment <= 0:
        raise typer.BadParameter("both weights must be positive")
    return control, treatment


@experiments_app.command("create")
def create_cmd(
    experiment_id: Annotated[
        str, typer.Argument(help="Id of the experiment; the SDK's Experiment uses it too.")
    ],
    control: Annotated[str, typer.Option(help="Prompt version in production (a variant name).")],
    treatment: Annotated[str, typer.Option(help="Candidate prompt version (a variant name).")],
    split: Annotated[str, typer.Option(help="CONTROL/TREATMENT weights of the users.")] = "80/20",
    primary: Annotated[OutcomeMetric, typer.Option(help="The metric to improve.")] = (
        OutcomeMetric.REGENERATION_RATE
    ),
    guardrail: Annotated[
        list[OutcomeMetric] | None,
        typer.Option(help="A metric that must not get worse (repeat; default abandonment and latency)."),
    ] = None,
    no_guardrails: Annotated[
        bool, typer.Option("--no-guardrails", help="Watch no guardrail metric.")
    ] = False,
    min_users: Annotated[
        int | None,
        typer.Option(help="Users each arm needs before a promote or revert (default: the setting, 500)."),
    ] = None,
    min_interactions: Annotated[int, typer.Option(help="... and interactions (2: no further floor).")] = 2,
    min_improvement: Annotated[
        float, typer.Option(help="Relative improvement worth promoting (0.10 = 10 % lower).")
    ] = 0.10,
    alpha: Annotated[float, typer.Option(help="Bound on a wrong promote/revert.")] = 0.05,
    description: Annotated[str, typer.Option(help="What the treatment changes.")] = "",
    replace: Annotated[
        bool, typer.Option("--replace", help="Start over if the id exists (new decisions).")
    ] = False,
) -> None:
    """Start an experiment: the evaluator decides on it from the next window on."""

    settings = load_settings()
    fields: dict[str, Any] = {
        "split": _split(split),
        "primary_metric": primary,
        "min_users_per_arm": min_users if min_users is not None else settings.experiments.min_users_per_arm,
        "min_interactions_per_arm": min_interactions,
        "min_relative_improvement": min_improvement,
        "alpha": alpha,
        "description": description,
    }
    if guardrail or no_guardrails:
        fields["guardrail_metrics"] = () if no_guardrails else tuple(guardrail or ())
    try:
        experiment = new_experiment(experiment_id, control, treatment, **fields)
        create_experiment(settings.kafka, experiment, replace=replace)
    except ValidationError as exc:
        fail(f"invalid experiment: {exc.errors()[0]['msg']}", 2)
    except ExperimentExistsError as exc:
        fail(str(exc), 2)
    console.print(
        f"experiment [bold]{experiment_id}[/bold] running: {control} (control) vs {treatment} (treatment), "
        f"split {experiment.split[0]}/{experiment.split[1]}, primary {primary.value}, guardrails "
        f"{', '.join(g.value for g in experiment.guardrail_metrics) or 'none'}"
    )
    console.print(
        f"  assign users in your app from this record: FeedbackClient.experiment({experiment_id!r})"
        ".assign(user_id) -- the evaluator checks every user's variant against it"
    )


@experiments_app.command("list")
def list_cmd(
    output: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Every experiment with its status and current decision."""

    settings = load_settings()
    experiments = read_experiments(settings.kafka)
    if not experiments:
        where = settings.kafka.topic_namespace or "(none)"
        err.print(
            f"[yellow]no experiment in topic namespace {where}: create one with `feedbackloop experiments "
            "create`; a demo run's are under its own namespace (FEEDBACKLOOP_KAFKA__TOPIC_NAMESPACE="
            "demo-…, printed at the end of `make demo`).[/yellow]"
        )
        return
    latest: dict[str, ExperimentDecision] = {}
    for record in read_decisions(settings.kafka):
        known = experiments.get(record.experiment_id)
        if known is not None and record.experiment_created_at == known.created_at:
            latest[record.experiment_id] = record
    if output is Format.json:
        for exp_id in sorted(experiments):
            row = json.loads(experiments[exp_id].model_dump_json())
            current = latest.get(exp_id)
            row["decision"] = json.loads(current.model_dump_json()) if current else None
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(
        "experiment", "control", "treatment", "split", "primary", "status", "decision", "n (C/T)", "effect",
        box=box.SIMPLE_HEAVY,
    )  # fmt: skip
    for exp_id in sorted(experiments):
        exp = experiments[exp_id]
        shown = latest.get(exp_id)
        effect = ""
        if shown is not None and shown.primary is not None:
            effect = f"{_percent(shown.primary.relative_effect)} {_interval(shown.primary)}"
        table.add_row(
            exp_id,
            exp.control,
            exp.treatment,
            f"{exp.split[0]}/{exp.split[1]}",
            exp.primary_metric.value,
            exp.status.value,
            f"{shown.action.value} ({shown.rule.value})" if shown else "–",
            f"{shown.control.interactions:,}/{shown.treatment.interactions:,}" if shown else "",
            effect,
        )
    console.print(table)


@experiments_app.command("show")
def show_cmd(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    output: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """An experiment's configuration, its current decision with the numbers, and its history."""

    settings = load_settings()
    try:
        exp = get_experiment(settings.kafka, experiment_id)
    except ExperimentNotFoundError as exc:
        fail(str(exc), 2)
    history = [
        d for d in read_decisions(settings.kafka, experiment_id) if d.experiment_created_at == exp.created_at
    ]
    if output is Format.json:
        row = json.loads(exp.model_dump_json())
        row["decisions"] = [json.loads(d.model_dump_json()) for d in history]
        sys.stdout.write(json.dumps(row) + "\n")
        return
    console.print(
        f"[bold]{exp.experiment_id}[/bold] (revision {exp.revision}, {exp.status.value}): "
        f"{exp.control} (control) vs {exp.treatment} (treatment), split {exp.split[0]}/{exp.split[1]}\n"
        f"  primary {exp.primary_metric.value}; guardrails "
        f"{', '.join(g.value for g in exp.guardrail_metrics) or 'none'}; "
        f"min {exp.min_users_per_arm:,} users and {exp.min_interactions_per_arm:,} interactions per arm; "
        "min improvement "
        f"{exp.min_relative_improvement:.0%}; alpha {exp.alpha}\n"
        f"  created {exp.created_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f"; {exp.description}" if exp.description else "")
    )
    if exp.applied is not None:
        a = exp.applied
        console.print(
            f"  [bold]{a.action}d[/bold] by {a.applied_by} at {a.applied_at:%Y-%m-%d %H:%M:%S} UTC: "
            f"{a.production_version} in production, {a.retired_version} retired"
            + (f" — {a.note}" if a.note else "")
        )
    if not history:
        console.print("  no decision yet (the evaluator decides once outcomes of the experiment arrive)")
        return
    print_decision(history[-1])
    if len(history) > 1:
        console.print(
            "  history: " + " → ".join(f"{d.action.value} ({d.rule.value}, look {d.looks})" for d in history)
        )
    console.print(f"  evidence:\n{history[-1].evidence_sql}", highlight=False)


@experiments_app.command("stop")
def stop_cmd(experiment_id: Annotated[str, typer.Argument(help="The experiment.")]) -> None:
    """Stop deciding on an experiment (without promoting or reverting)."""

    settings = load_settings()
    try:
        exp = get_experiment(settings.kafka, experiment_id)
    except ExperimentNotFoundError as exc:
        fail(str(exc), 2)
    if not exp.is_running:
        fail(f"experiment {experiment_id} is {exp.status.value} already", 2)
    publish_experiment(settings.kafka, changed_status(exp, ExperimentStatus.STOPPED, datetime.now(UTC)))
    console.print(f"experiment [bold]{experiment_id}[/bold] stopped")


def _apply(experiment_id: str, action: str, note: str, force: bool, by: str | None) -> None:

    settings = load_settings()
    try:
        exp = get_experiment(settings.kafka, experiment_id)
    except ExperimentNotFoundError as exc:
        fail(str(exc), 2)
    if exp.status not in (ExperimentStatus.RUNNING, ExperimentStatus.STOPPED):
        fail(f"experiment {experiment_id} is {exp.status.value} already", 2)
    history = [
        d for d in read_decisions(settings.kafka, experiment_id) if d.experiment_created_at == exp.created_at
    ]
    decision = history[-1] if history else None
    if (decision is None or decision.action.value != action) and not force:
        current = f"{decision.action.value} ({decision.rule.value})" if decision else "no decision yet"
        fail(
            f"the evaluator's decision for {experiment_id} is {current}, not {action}: "
            f"pass --force to {action} anyway (it is recorded with the numbers as they are)",
            3,
        )
    applied = apply_decision(
        exp,
        decision,
        applied_by=by or f"cli:{getpass.getuser()}",
        at=datetime.now(UTC),
        action=action,
        note=note,
    )
    publish_experiment(settings.kafka, applied)
    done = applied.applied
    assert done is not None
    console.print(
        f"experiment [bold]{experiment_id}[/bold] {action}d: {done.production_version} in production, "
        f"{done.retired_version} retired (recorded on the experiments topic, revision {applied.revision})"
    )
    if decision is not None:
        print_decision(decision)


@experiments_app.command("promote")
def promote_cmd(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    note: Annotated[str, typer.Option(help="Why, for the changelog.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Even if the evaluator does not recommend it.")
    ] = False,
    by: Annotated[str | None, typer.Option(help="Who applies it (default: cli:<login>).")] = None,
) -> None:
    """Promote the treatment: record it, with the decision's numbers, on the experiments topic."""
    _apply(experiment_id, "promote", note, force, by)


@experiments_app.command("revert")
def revert_cmd(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    note: Annotated[str, typer.Option(help="Why, for the changelog.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Even if the evaluator does not recommend it.")
    ] = False,
    by: Annotated[str | None, typer.Option(help="Who applies it (default: cli:<login>).")] = None,
) -> None:
    """Revert to the control: record it, with the decision's numbers, on the experiments topic."""
    _apply(experiment_id, "revert", note, force, by)


@experiments_app.command("simulate")
def simulate_cmd(
    control_rate: Annotated[float, typer.Option(help="The control's regeneration rate.")] = 0.35,
    effect: Annotated[
        float, typer.Option(help="Relative change of the treatment's rate: -0.10 = 10 % lower (better).")
    ] = -0.10,
    split: Annotated[str, typer.Option(help="Intended CONTROL/TREATMENT weights.")] = "80/20",
    observed_split: Annotated[
        str | None, typer.Option(help="The split users actually arrive in (a logging bug); default: --split.")
    ] = None,
    users: Annotated[int, typer.Option(help="Users per run (the run stops at its first decision).")] = 50_000,
    look_every: Annotated[int, typer.Option(help="New users between looks.")] = 500,
    runs: Annotated[int, typer.Option(help="Simulated experiments.")] = 1_000,
    rate_spread: Annotated[
        float, typer.Option(help="Standard deviation of users' own rates (0: all users alike).")
    ] = 0.0,
    interactions: Annotated[float, typer.Option(help="Mean interactions per user in the experiment.")] = 1.0,
    pre_interactions: Annotated[
        float, typer.Option(help="Mean interactions per user before it (CUPED's covariate; 0: none).")
    ] = 0.0,
    cuped: Annotated[bool, typer.Option(help="Adjust for pre-experiment values.")] = True,
    min_users: Annotated[int, typer.Option(help="Users each arm needs before a decision.")] = 500,
    min_improvement: Annotated[
        float, typer.Option(help="Relative improvement worth promoting (0.10 = 10 % lower).")
    ] = 0.10,
    alpha: Annotated[float, typer.Option(help="Bound on a wrong promote/revert.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the simulation (same seed, same users).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")] = False,
) -> None:
    """Plan an experiment: simulate many runs through the evaluator's own decision code.

    Each run feeds simulated users look by look to the same decision the evaluator makes and stops at its
    first promote, revert or invalid. Prints the fractions that promote, revert, are invalidated or stay
    undecided, and the users it took (docs/experiments.md explains the simulated users).
    """
    settings = load_settings()
    try:
        spec = SimulationSpec(
            control_rate=control_rate,
            effect=effect,
            split=_split(split),
            observed_split=_split(observed_split) if observed_split else None,
            users=users,
            look_every=look_every,
            runs=runs,
            rate_spread=rate_spread,
            interactions=interactions,
            pre_interactions=pre_interactions,
            cuped=cuped,
            min_users_per_arm=min_users,
            min_relative_improvement=min_improvement,
            alpha=alpha,
            improvement_alpha=settings.experiments.improvement_alpha,
            srm_threshold=settings.experiments.srm_threshold,
            seed=seed,
        )
        config = spec.config()
    except ValueError as exc:  # a pydantic ValidationError is one too
        fail(f"invalid simulation: {exc}", 2)
    with err.status(f"simulating {runs:,} experiments of up to {users:,} users ..."):
        result = simulate(spec)
    summary = result.summary()
    summary["pre_period_correlation"] = pre_period_correlation(spec)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table("outcome", "runs", "median users", box=box.SIMPLE_HEAVY)
    for action in (DecisionAction.PROMOTE, DecisionAction.REVERT, DecisionAction.INVALID):
        median = result.median_users(action)
        table.add_row(
            action.value, f"{result.share(action):.1%}", "–" if median is None else f"{median:,.0f}"
        )
    table.add_row("undecided", f"{result.share(DecisionAction.CONTINUE):.1%}", f"(at {users:,})")
    console.print(table)
    observed = f", observed {spec.observed_split[0]}/{spec.observed_split[1]}" if spec.observed_split else ""
    console.print(
        f"  {runs:,} runs: control {control_rate:.1%}, effect {effect:+.1%}, split {spec.split[0]}/"
        f"{spec.split[1]}{observed}, a look every {look_every:,} users; primary alpha "
        f"{config.primary_alpha:g}, minimum improvement {min_improvement:.0%} (credible at "
        f"{1 - config.improvement_alpha:.0%}), min {min_users:,} users per arm"
    )
    for label, value in (
        ("80 % of runs promoted by", result.users_for(DecisionAction.PROMOTE, 0.8)),
        ("80 % found it better by", result.users_for_detection(0.8)),
    ):
        console.print(f"  {label} {'–' if value is None else f'{value:,} users'}")
    if summary["pre_period_correlation"] is not None:
        console.print(
            f"  users' pre-period vs in-experiment rate: correlation {summary['pre_period_correlation']:.2f}"
        )


# ------------------------------------------------------------------ alerts


@alerts_app.command("tail")
def tail_cmd(
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest alert, not at new ones.")] = False,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new alerts (Ctrl-C ends).")] = True,
    output: Annotated[
        Format, typer.Option("--format", "-f", help="table (lines) or json (one per line).")
    ] = (Format.table),
    version: Annotated[str | None, typer.Option(help="Only this prompt version.")] = None,
) -> None:
    """Print regression alerts and resolves as they come: an example consumer of ai.alerts.regressions.v1.

    ``--format json`` prints each record as one JSON line, ready to pipe into a webhook bridge
    (docs/experiments.md has one for Alertmanager and PagerDuty).
    """

    settings = load_settings()
    topic = ExperimentTopics.of(settings.kafka).alerts
    consumer = Consumer(
        client_config(
            settings.kafka,
            **{
                "group.id": "feedbackloop-alerts-tail",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            fail(f"no topic {topic}: is the evaluator running (feedbackloop worker)?", 2)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in meta.partitions])
        at_end: set[int] = set()
        seen: set[object] = set()
        while True:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition() or 0)
                    continue
                at_end.discard(message.partition() or 0)
                try:
                    alert = RegressionAlert.model_validate_json(message.value() or b"")
                except ValidationError:
                    continue
                if alert.alert_id in seen or (version is not None and alert.prompt_version != version):
                    continue
                seen.add(alert.alert_id)
                if output is Format.json:
                    sys.stdout.write(alert.model_dump_json() + "\n")
                    sys.stdout.flush()
                else:
                    console.print(alert_line(alert), highlight=False)
            if not follow and len(at_end) == len(meta.partitions):
                return
    except KeyboardInterrupt:
        return
    finally:
        consumer.close()


def register(app: typer.Typer) -> None:
    """Add ``experiments`` and ``alerts`` to the ``feedbackloop`` command."""
    app.add_typer(experiments_app, name="experiments")
    app.add_typer(alerts_app, name="alerts")


__all__ = [
    "alert_line",
    "alerts_app",
    "decision_table",
    "experiments_app",
    "print_decision",
    "print_latest_decisions",
    "register",
]
