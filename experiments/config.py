"""The evaluator's configuration, built from the settings, and an experiment record's decision configuration.

The one place where settings and contract records turn into the plain dataclasses the pure modules take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from experiments.decision import ExperimentConfig
from experiments.regression import RegressionConfig
from schemas.experiments import Experiment, OutcomeMetric

if TYPE_CHECKING:
    from infra.settings import Settings


@dataclass(frozen=True, slots=True)
class EvaluatorConfig:
    """How the evaluator looks: the window, when a regression window closes, the detectors' thresholds."""

    window_ms: int = 60_000
    #: The processors' settle delay: an interaction settles when their watermark passes created_at + this
    #: (the longest signal window). A regression window is complete once every partition has passed it.
    settle_delay_ms: int = 300_000
    regression: RegressionConfig = field(default_factory=lambda: RegressionConfig(min_abs_rise=0.02))
    regression_metrics: tuple[OutcomeMetric, ...] = (
        OutcomeMetric.REGENERATION_RATE,
        OutcomeMetric.CORRECTION_RATE,
        OutcomeMetric.ABANDONMENT_RATE,
        OutcomeMetric.EDIT_DISTANCE,
    )
    auto_apply: bool = False
    #: Decision settings every experiment shares (``ExperimentConfig`` has their meaning).
    improvement_alpha: float = 0.25
    srm_threshold: float = 0.001
    max_assignment_mismatch: float = 0.01
    #: Adjust comparisons for the users' pre-experiment values; needs each user's history, so every
    #: outcome (not only the experiments') is counted at the looks.
    cuped: bool = True
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
        return cls(
            window_ms=ex.window_s * 1000,
            settle_delay_ms=int(settings.pipeline.signals.settle_delay_s * 1000),
            regression=RegressionConfig(
                false_alarm_budget=ex.regression_false_alarm_budget,
                horizon_windows=ex.regression_horizon_windows,
                min_abs_rise=ex.regression_min_absolute_rise,
                min_rel_rise=ex.regression_min_relative_rise,
                baseline_windows=ex.regression_baseline_windows,
                min_baseline_windows=min(ex.regression_min_baseline_windows, ex.regression_baseline_windows),
                min_window_interactions=ex.regression_min_window_interactions,
                detect_excess=ex.regression_detect_excess,
                resolve_after=ex.regression_resolve_after,
            ),
            regression_metrics=tuple(OutcomeMetric(m) for m in ex.regression_metrics),
            auto_apply=ex.auto_apply,
            improvement_alpha=ex.improvement_alpha,
            srm_threshold=ex.srm_threshold,
            max_assignment_mismatch=ex.max_assignment_mismatch,
            cuped=ex.cuped,
            database=settings.clickhouse.database,
            evidence_link_template=ex.evidence_link_template,
        )


def experiment_config(experiment: Experiment, evaluator: EvaluatorConfig | None = None) -> ExperimentConfig:
    """The decision configuration of an experiment record, with the evaluator's shared settings."""
    shared = evaluator or EvaluatorConfig()
    control_weight, treatment_weight = experiment.split
    total = control_weight + treatment_weight
    return ExperimentConfig(
        control=experiment.control,
        treatment=experiment.treatment,
        split=(control_weight / total, treatment_weight / total),
        primary=experiment.primary_metric,
        guardrails=experiment.guardrail_metrics,
        min_users_per_arm=experiment.min_users_per_arm,
        min_interactions_per_arm=experiment.min_interactions_per_arm,
        min_relative_improvement=experiment.min_relative_improvement,
        alpha=experiment.alpha,
        improvement_alpha=shared.improvement_alpha,
        srm_threshold=shared.srm_threshold,
        max_assignment_mismatch=shared.max_assignment_mismatch,
        cuped=shared.cuped,
    )


__all__ = ["EvaluatorConfig", "experiment_config"]
