-- Raw events, one row per event_id. ReplacingMergeTree folds redelivered copies of an event
-- (same sorting key, since a copy has the same prompt_version, created_at and event_id);
-- read through FINAL or the views when exact counts matter.
CREATE TABLE IF NOT EXISTS {db}.ai_interactions
(
    schema_version   UInt8,
    event_id         UUID,
    interaction_id   UUID,
    user_id          String,
    session_id       String,
    prompt           String,
    prompt_version   LowCardinality(String),
    model            LowCardinality(String),
    response         String,
    response_time_ms UInt64,
    created_at       DateTime64(3, 'UTC'),
    regenerated_from Nullable(UUID),
    input_category   LowCardinality(Nullable(String)),
    experiment_id    Nullable(String),
    variant          Nullable(String),
    metadata         Map(String, String),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (prompt_version, created_at, event_id);

CREATE TABLE IF NOT EXISTS {db}.ai_feedback
(
    schema_version      UInt8,
    event_id            UUID,
    interaction_id      UUID,
    user_id             String,
    session_id          String,
    created_at          DateTime64(3, 'UTC'),
    feedback_type       LowCardinality(String),
    corrected_output    Nullable(String),
    copied_chars        Nullable(UInt64),
    dwell_ms            Nullable(UInt64),
    comment             Nullable(String),
    prompt_version      LowCardinality(String),
    original_output     String,
    edit_distance       Nullable(UInt64),
    time_to_feedback_ms Int64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (prompt_version, created_at, event_id);

-- Messages that could not be used, with their original bytes (base64) and the reason.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    source_topic     LowCardinality(String),
    partition        Int32,
    offset           Int64,
    stage            LowCardinality(String),
    error_type       LowCardinality(String),
    reason           String,
    key_b64          Nullable(String),
    value_b64        Nullable(String),
    value_text       Nullable(String),
    dead_lettered_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, partition, offset, stage, error_type);
