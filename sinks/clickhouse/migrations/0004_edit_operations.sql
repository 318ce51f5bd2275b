-- Word-level operations of every edit, one row per edit feedback event (its operations as parallel
-- op_* arrays). ReplacingMergeTree folds a replayed edit: the same event gives the same row and the
-- same sorting key. Read through FINAL or the views when exact counts matter.
CREATE TABLE IF NOT EXISTS {db}.edit_operations
(
    event_id           UUID,
    interaction_id     UUID,
    user_id            String,
    session_id         String,
    created_at         DateTime64(3, 'UTC'),
    prompt_version     LowCardinality(String),
    model              LowCardinality(String),
    input_category     LowCardinality(Nullable(String)),
    response_words     UInt32,
    corrected_words    UInt32,
    edit_distance      UInt32,
    edit_distance_norm Float64,
    edit_size          LowCardinality(String),
    truncated          Bool,
    op_kind            Array(LowCardinality(String)),
    op_position        Array(LowCardinality(String)),
    op_unit            Array(LowCardinality(String)),
    op_start           Array(UInt32),
    op_original_words  Array(UInt32),
    op_corrected_words Array(UInt32),
    op_original        Array(String),
    op_corrected       Array(String),
    op_original_norm   Array(String),
    op_corrected_norm  Array(String),
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (prompt_version, created_at, event_id);

-- One row per operation (every edit counted once, however often it was delivered).
CREATE OR REPLACE VIEW {db}.edit_operation_rows AS
SELECT
    event_id,
    interaction_id,
    user_id,
    session_id,
    created_at,
    prompt_version,
    model,
    input_category,
    edit_size,
    response_words,
    op_index,
    kind,
    position,
    unit,
    start,
    original_words,
    corrected_words,
    original,
    corrected,
    original_norm,
    corrected_norm
FROM {db}.edit_operations FINAL
ARRAY JOIN
    arrayEnumerate(op_kind) AS op_index,
    op_kind AS kind,
    op_position AS position,
    op_unit AS unit,
    op_start AS start,
    op_original_words AS original_words,
    op_corrected_words AS corrected_words,
    op_original AS original,
    op_corrected AS corrected,
    op_original_norm AS original_norm,
    op_corrected_norm AS corrected_norm;
