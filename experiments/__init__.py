"""Prompt A/B experiments and regression alerts: the evaluator stage.

Pure (no broker, no database; unit-tested in microseconds):

* ``stats`` -- user-level sufficient statistics, the anytime-valid test, the sample size;
* ``srm`` -- the sequential sample-ratio test; ``cuped`` -- variance reduction with pre-experiment values;
  ``audit`` -- logged variants against the consistent hash;
* ``decision`` -- an experiment's statistics -> continue / promote / revert / invalid;
* ``simulate`` -- many simulated experiments through the same decision code, for planning;
* ``regression`` -- each prompt version against its own past, debounced into incidents;
* ``clock`` -- event-time accounting: partition clocks, when a look is due, where a window is cut;
* ``evaluator`` -- the outcomes log -> decisions and alerts, exact and replayable;
* ``config``, ``evidence``, ``records`` -- settings and experiment records in, SQL text and contract
  records out.

I/O: ``store`` (the experiment topics) and ``service`` (the evaluator as a Kafka consumer loop).
"""

from experiments.config import EvaluatorConfig, experiment_config
from experiments.cuped import CupedEffect, cuped_relative_effect
from experiments.decision import (
    ArmSummary,
    AssignmentCounts,
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
from experiments.srm import SrmResult, chi2_sf, srm_test
from experiments.stats import (
    ArmAccumulator,
    ArmStats,
    Effect,
    RatioMoments,
    SampleSize,
    SequentialResult,
    UserRatioStats,
    optimal_mixture_sd,
    outcome_values,
    relative_effect,
    required_sample_size,
    sequential_test,
)

__all__ = [
    "ArmAccumulator",
    "ArmStats",
    "ArmSummary",
    "Assessment",
    "AssignmentCounts",
    "CupedEffect",
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
    "cuped_relative_effect",
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
