-- Every change of an experiment's decision (topic ai.experiments.decisions.v1), flattened: the arms,
-- the SRM check and the primary metric as columns, the guardrails as a JSON array. A replayed
-- decision keeps its id, so the table folds re-emissions.
CREATE TABLE IF NOT EXISTS {db}.experiment_decisions
(
    decision_id                 UUID,
    experiment_id               String,
    experiment_created_at       DateTime64(3, 'UTC'),
    sequence                    UInt32,
    action                      LowCardinality(String),
    rule                        LowCardinality(String),
    reason                      String,
    as_of                       DateTime64(3, 'UTC'),
    looks                       UInt32,
    control_variant             String,
    control_users               UInt32,
    control_interactions        UInt32,
    treatment_variant           String,
    treatment_users             UInt32,
    treatment_interactions      UInt32,
    srm_chi2                    Float64,
    srm_p_value                 Float64,
    srm_checked                 Bool,
    srm_mismatch                Bool,
    primary_metric              LowCardinality(Nullable(String)),
    primary_control_mean        Nullable(Float64),
    primary_treatment_mean      Nullable(Float64),
    primary_relative_effect     Nullable(Float64),
    primary_ci_low              Nullable(Float64),
    primary_ci_high             Nullable(Float64),
    primary_ci_level            Nullable(Float64),
    primary_p_value             Nullable(Float64),
    primary_p_value_min         Nullable(Float64),
    guardrails                  String,
    split_control               UInt32,
    split_treatment             UInt32,
    alpha                       Float64,
    min_interactions_per_arm    UInt32,
    min_relative_improvement    Float64,
    evidence_sql                String
)
ENGINE = ReplacingMergeTree
ORDER BY (experiment_id, experiment_created_at, decision_id);

-- The current decision of each experiment (the latest change; a re-created experiment counts anew).
CREATE OR REPLACE VIEW {db}.experiment_current_decisions AS
SELECT *
FROM {db}.experiment_decisions FINAL
ORDER BY experiment_id, experiment_created_at DESC, sequence DESC
LIMIT 1 BY experiment_id;
