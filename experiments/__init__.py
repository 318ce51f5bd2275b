"""The statistics of prompt A/B experiments and of regression alerts: pure functions and small dataclasses.

``stats`` holds the user-level sufficient statistics, the anytime-valid test, the SRM check and the sample
size; ``decision`` turns an experiment's statistics into continue / promote / revert / invalid; ``regression``
compares each prompt version with its own past and debounces the result into incidents.
"""

from experiments.decision import (
    Action,
    ArmSummary,
    Decision,
    ExperimentConfig,
    MetricResult,
    Rule,
    evaluate,
)
from experiments.regression import (
    Assessment,
    DetectorState,
    EventKind,
    Incident,
    RegressionConfig,
    RegressionEvent,
    Severity,
    WindowObservation,
    assess,
    step,
)
from experiments.stats import (
    ArmAccumulator,
    ArmStats,
    Effect,
    Metric,
    RatioMoments,
    SampleSize,
    SequentialResult,
    SrmResult,
    UserRatioStats,
    chi2_sf,
    optimal_mixture_sd,
    outcome_values,
    relative_effect,
    required_sample_size,
    sequential_test,
    srm_test,
)

__all__ = [
    "Action",
    "ArmAccumulator",
    "ArmStats",
    "ArmSummary",
    "Assessment",
    "Decision",
    "DetectorState",
    "Effect",
    "EventKind",
    "ExperimentConfig",
    "Incident",
    "Metric",
    "MetricResult",
    "RatioMoments",
    "RegressionConfig",
    "RegressionEvent",
    "Rule",
    "SampleSize",
    "SequentialResult",
    "Severity",
    "SrmResult",
    "UserRatioStats",
    "WindowObservation",
    "assess",
    "chi2_sf",
    "evaluate",
    "optimal_mixture_sd",
    "outcome_values",
    "relative_effect",
    "required_sample_size",
    "sequential_test",
    "srm_test",
    "step",
]
