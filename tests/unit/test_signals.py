"""The signal registry is the one place a signal is declared: the models, the processors' outcome,
contribution and window fields, the ClickHouse tables, the sink's rows and the test oracle all
follow it, and these tests fail when one of them does not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from infra.settings import PipelineSettings, SignalSettings
from producers.synthetic import WorkloadSpec, generate
from schemas import InteractionOutcome, MetricContribution, PromptVersionMetrics
from schemas.signals import (
    SIGNAL_NAMES,
    SIGNALS,
    WINDOW_METRICS,
    WINDOWED_SIGNALS,
    Aggregate,
    Signal,
    WindowMetric,
    check_signals,
    count,
)
from sinks.clickhouse import migrate
from sinks.rows import TABLES
from stream_processors.signals.outcome import Feedback, Interaction, compute_outcome
from stream_processors.state import CONTRIBUTION_FIELDS, Emit, LostEvent, PartitionState
from stream_processors.windows import WindowState
from tests.support.oracle import expected_outcomes
from tests.support.outcomes import neutral_signals

T0 = 1_795_000_000_000
#: Outcome fields ``PartitionState`` adds around ``compute_outcome``'s.
ENVELOPE = {"schema_version", "version", "interaction_created_at", "settled_at", "amended"}


def _interaction(at: int = T0) -> Interaction:
    return Interaction(
        str(uuid.uuid4()), str(uuid.uuid4()), "u1", "s1", at, "How do I reverse a list in python?",
        "v1.0", "m", "Use slicing.", 300, None, "technical", "exp-1", "b",
    )  # fmt: skip


def _feedback(x: Interaction, kind: str, after_ms: int, **kw: Any) -> Feedback:
    return Feedback(
        str(uuid.uuid4()), x.interaction_id, x.user_id, x.session_id, x.created_ms + after_ms, kind,
        kw.get("corrected_output"), kw.get("copied_chars"), kw.get("dwell_ms"), None,
    )  # fmt: skip


def _one_of_each() -> dict[str, dict[str, Any]]:
    """An outcome, its contribution and its window aggregate, as the processors emit them (an edited,
    copied, rephrased interaction, so that most signals are set and the numbers are not null)."""
    state = PartitionState(0, PipelineSettings())
    x = _interaction()
    nxt = _interaction(T0 + 30_000)
    nxt.prompt = "how to reverse a list in python"
    items: list[Emit | LostEvent] = [*state.apply_interaction(x), *state.apply_interaction(nxt)]
    items += state.apply_feedback(_feedback(x, "edit", 5_000, corrected_output="Use slicing: [::-1]."))
    items += state.apply_feedback(_feedback(x, "copy", 6_000, copied_chars=5))
    items += state.advance(T0 + 3_600_000)
    emitted: dict[str, dict[str, Any]] = {
        i.kind: i.value
        for i in items
        if isinstance(i, Emit) and i.value.get("interaction_id") == x.interaction_id
    }
    windows = WindowState(0, 60_000, 3_600_000)
    windows.apply("w", orjson.loads(orjson.dumps(emitted["contribution"])))
    ((_, emitted["metrics"]),) = windows.emissions()
    return emitted


def test_the_models_take_their_signal_fields_from_the_registry() -> None:
    outcome = InteractionOutcome.model_fields
    assert list(outcome)[-len(SIGNALS) :] == list(SIGNAL_NAMES)
    contribution = MetricContribution.model_fields
    assert [n for n in contribution if n in SIGNAL_NAMES] == [s.name for s in WINDOWED_SIGNALS]
    metrics = PromptVersionMetrics.model_fields
    assert [n for n, _, _ in WINDOW_METRICS] == [n for n in metrics if n in {m for m, _, _ in WINDOW_METRICS}]
    for signal in SIGNALS:
        assert outcome[signal.name].description == signal.description
        assert (signal.name in contribution) == bool(signal.window)
    assert metrics["edit_distance_mean"].annotation == float | None
    assert metrics["edit_distance_sum"].annotation is int
    assert metrics["regenerations"].description == "Outcomes of the window with regenerated true."


def test_the_contract_types_signals_as_declared() -> None:
    valid = _one_of_each()["outcome"]
    InteractionOutcome.model_validate(valid)
    with pytest.raises(ValueError, match="regenerated"):
        InteractionOutcome.model_validate({**valid, "regenerated": "maybe"})
    with pytest.raises(ValueError, match="short_dwell"):
        InteractionOutcome.model_validate({k: v for k, v in valid.items() if k != "short_dwell"})
    with pytest.raises(ValueError, match="feedback_events"):
        InteractionOutcome.model_validate({**valid, "feedback_events": -1})


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ((Signal("a", bool, "x"), Signal("a", bool, "y")), "'a' is declared twice"),
        ((Signal("a", bool, "x", count("n")), Signal("b", bool, "y", count("n"))), "'n' is declared twice"),
        ((Signal("a b", bool, "x"),), "not a valid name"),
        ((Signal("a", int | None, "x", count("n")),), "only a bool signal can be counted"),
        ((Signal("a", bool, "x", (WindowMetric("n", Aggregate.MEAN),)),), "only a number"),
        (
            (Signal("a", int, "x", (WindowMetric("n", Aggregate.SUM), WindowMetric("m", Aggregate.SUM))),),
            "at most one window metric per aggregate",
        ),
    ],
)
def test_a_declaration_the_derivations_cannot_honour_is_refused(
    signals: tuple[Signal, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_signals(signals)


def test_compute_outcome_gives_every_declared_signal_and_nothing_else() -> None:
    x = _interaction()
    fields = compute_outcome(x, {}, {}, [], SignalSettings())
    assert set(fields) | ENVELOPE == set(InteractionOutcome.model_fields)
    assert list(fields)[-len(SIGNALS) :] == list(SIGNAL_NAMES), "in the registry's order"


def test_contributions_and_windows_carry_what_the_registry_declares() -> None:
    emitted = _one_of_each()
    assert tuple(s.name for s in WINDOWED_SIGNALS) == CONTRIBUTION_FIELDS
    assert set(emitted["contribution"]) == set(MetricContribution.model_fields)
    assert set(emitted["metrics"]) == set(PromptVersionMetrics.model_fields)
    window = emitted["metrics"]
    assert (window["edits"], window["corrections"], window["rephrases"], window["abandons"]) == (1, 1, 1, 0)
    assert window["edit_distance_sum"] == window["edit_distance_mean"] == emitted["outcome"]["edit_distance"]


def test_the_oracle_expects_every_declared_signal() -> None:
    """The integration tests compare only what the oracle expects: a signal it forgot goes unchecked."""
    expected = expected_outcomes(generate(WorkloadSpec(interactions=50, users=5, seed=3)))
    for fields in expected.values():
        assert set(SIGNAL_NAMES) <= set(fields)


def _columns(client: Client, table: str) -> dict[str, str]:
    return {row[0]: row[1] for row in client.query(f"DESCRIBE TABLE {table}").result_rows}


def test_clickhouse_has_a_column_of_the_right_kind_for_every_field(
    chdb_client: Client, chdb_database: str
) -> None:
    migrate(chdb_client, chdb_database)
    for table, model in (
        ("interaction_outcomes", InteractionOutcome),
        ("prompt_version_metrics", PromptVersionMetrics),
    ):
        columns = _columns(chdb_client, f"{chdb_database}.{table}")
        for name, field in model.model_fields.items():
            if name == "schema_version":
                continue
            assert name in columns, f"{table} has no column {name}: add it in a new migration"
            nullable = "Nullable" in columns[name]
            assert nullable == (
                not field.is_required() or type(None) in getattr(field.annotation, "__args__", ())
            ), f"{table}.{name} is {columns[name]}"
            if field.annotation is bool:
                assert columns[name] == "Bool", f"{table}.{name} is {columns[name]}"
    rollup = _columns(chdb_client, f"{chdb_database}.prompt_version_metrics_rollup")
    missing = [m for m, _, _ in WINDOW_METRICS if m not in rollup]
    assert not missing, f"prompt_version_metrics_rollup lacks {missing}: re-create the view in the migration"


def test_the_sink_writes_every_field_and_reads_back_the_same(chdb_client: Client, chdb_database: str) -> None:
    migrate(chdb_client, chdb_database)
    emitted = _one_of_each()
    spec = {s.table: s for s in TABLES}
    for table, model, value in (
        ("interaction_outcomes", InteractionOutcome, emitted["outcome"]),
        ("prompt_version_metrics", PromptVersionMetrics, emitted["metrics"]),
    ):
        columns = spec[table].columns
        assert set(columns) == set(model.model_fields) - {"schema_version"}
        raw = orjson.dumps(value)
        chdb_client.insert(f"{chdb_database}.{table}", [spec[table].to_row(raw)], column_names=list(columns))
        result = chdb_client.query(f"SELECT {', '.join(columns)} FROM {chdb_database}.{table}")
        # clickhouse-connect gives DateTime64(3, 'UTC') back as naive datetimes in UTC.
        row = [v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for v in result.result_rows[0]]
        stored = model.model_validate({"schema_version": 1, **dict(zip(columns, row, strict=True))})
        assert stored == model.model_validate_json(raw), table


def test_the_readme_describes_every_signal_and_window_metric() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Outcome signals", 1)[1].split("\n### ", 1)[0]
    missing = [n for n in (*SIGNAL_NAMES, *(m for m, _, _ in WINDOW_METRICS)) if f"`{n}`" not in section]
    assert not missing, f"add {missing} to the README's 'Outcome signals' table"


def test_neutral_signals_complete_a_hand_built_outcome() -> None:
    facts = {k: v for k, v in _one_of_each()["outcome"].items() if k not in SIGNAL_NAMES}
    outcome = InteractionOutcome.model_validate({**facts, **neutral_signals()})
    assert outcome.regenerated is False
    assert outcome.edit_distance is None
    assert outcome.feedback_events == 0
