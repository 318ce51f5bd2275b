-- Regression alerts and resolves (topic ai.alerts.regressions.v1). An alert and its resolve share
-- the incident_id; a replayed record keeps its alert_id, so the table folds re-emissions.
CREATE TABLE IF NOT EXISTS {db}.regression_alerts
(
    alert_id                UUID,
    kind                    LowCardinality(String),
    incident_id             UUID,
    prompt_version          LowCardinality(String),
    metric                  LowCardinality(String),
    severity                LowCardinality(String),
    window_start            DateTime64(3, 'UTC'),
    window_end              DateTime64(3, 'UTC'),
    opened_at               DateTime64(3, 'UTC'),
    observed                Float64,
    expected                Float64,
    expected_low            Float64,
    expected_high           Float64,
    relative_rise           Nullable(Float64),
    z                       Nullable(Float64),
    p_value                 Float64,
    window_interactions     UInt32,
    baseline_windows        UInt32,
    baseline_seeded_from    Nullable(String),
    evidence_sql            String,
    evidence_link           Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (prompt_version, incident_id, alert_id);

-- Incidents alerted and not resolved yet.
CREATE OR REPLACE VIEW {db}.open_regressions AS
SELECT incident_id, prompt_version, metric, severity, opened_at, window_end AS alerted_window_end,
       observed, expected, expected_low, expected_high, relative_rise, evidence_sql, evidence_link
FROM {db}.regression_alerts FINAL
WHERE kind = 'alert'
  AND incident_id NOT IN (SELECT incident_id FROM {db}.regression_alerts WHERE kind = 'resolve')
ORDER BY opened_at;
