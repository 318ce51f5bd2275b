"""Prompt A/B experiments and regression alerts: the evaluator stage.

Pure (no broker, no database; unit-tested in microseconds):

* ``stats`` -- user-level sufficient statistics, the anytime-valid test, the SRM check, the sample size;
* ``decision`` -- an experiment's statistics -> continue / promote / revert / invalid;
* ``regression`` -- each prompt version against its own past, debounced into incidents;
* ``clock`` -- event-time accounting: partition clocks, when a look is due, where a window is cut;
* ``evaluator`` -- the outcomes log -> decisions and alerts, exact and replayable;
* ``config``, ``evidence``, ``records`` -- settings and experiment records in, SQL text and contract
  records out.

I/O: ``store`` (the experiment topics) and ``service`` (the evaluator as a Kafka consumer loop).
"""

from experiments.config import EvaluatorConfig, experiment_config
from experiments.decision import (
    ArmSummary,
    Decision,
    ExperimentConfig,
    MetricResult,
    evaluate,
)
from experiments.evaluator import Emission, Evaluator
from experiments.regression import (
    Assessment,
    DetectorState,
    Incident,
    RegressionConfig,
    RegressionEvent,
    WindowObservation,
    assess,
    step,
)
from experiments.stats import (
    ArmAccumulator,
    ArmStats,
    Effect,
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
    "ArmAccumulator",
    "ArmStats",
    "ArmSummary",
    "Assessment",
    "Decision",
    "DetectorState",
    "Effect",
    "Emission",
    "Evaluator",
    "EvaluatorConfig",
    "ExperimentConfig",
    "Incident",
    "MetricResult",
    "RatioMoments",
    "RegressionConfig",
    "RegressionEvent",
    "SampleSize",
    "SequentialResult",
    "SrmResult",
    "UserRatioStats",
    "WindowObservation",
    "assess",
    "chi2_sf",
    "evaluate",
    "experiment_config",
    "optimal_mixture_sd",
    "outcome_values",
    "relative_effect",
    "required_sample_size",
    "sequential_test",
    "srm_test",
    "step",
]
