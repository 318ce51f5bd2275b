-- Issue 14: the numbers behind the new decision rules and the accumulating regression alerts. Decisions
-- and alerts written before them have NULL here.
ALTER TABLE {db}.experiment_decisions
    ADD COLUMN IF NOT EXISTS min_users_per_arm             Nullable(UInt32),
    ADD COLUMN IF NOT EXISTS improvement_alpha             Nullable(Float64),
    ADD COLUMN IF NOT EXISTS srm_e_value                   Nullable(Float64),
    ADD COLUMN IF NOT EXISTS srm_confirmed                 Nullable(Bool),
    ADD COLUMN IF NOT EXISTS assignment_users              Nullable(UInt32),
    ADD COLUMN IF NOT EXISTS assignment_mismatched_users   Nullable(UInt32),
    ADD COLUMN IF NOT EXISTS assignment_mismatch_share     Nullable(Float64),
    ADD COLUMN IF NOT EXISTS assignment_mismatch           Nullable(Bool),
    ADD COLUMN IF NOT EXISTS primary_credible_improvement  Nullable(Float64),
    ADD COLUMN IF NOT EXISTS primary_variance_reduction    Nullable(Float64);

ALTER TABLE {db}.regression_alerts
    ADD COLUMN IF NOT EXISTS cusum             Nullable(Float64),
    ADD COLUMN IF NOT EXISTS cusum_threshold   Nullable(Float64);

-- Re-created so that its SELECT * covers the new columns.
CREATE OR REPLACE VIEW {db}.experiment_current_decisions AS
SELECT *
FROM {db}.experiment_decisions FINAL
ORDER BY experiment_id, experiment_created_at DESC, sequence DESC
LIMIT 1 BY experiment_id;
