-- One row per interaction: the highest version wins (a later version knows more events).
CREATE TABLE IF NOT EXISTS {db}.interaction_outcomes
(
    interaction_id              UUID,
    version                     UInt32,
    session_id                  String,
    user_id                     String,
    prompt                      String,
    prompt_version              LowCardinality(String),
    model                       LowCardinality(String),
    input_category              LowCardinality(Nullable(String)),
    experiment_id               Nullable(String),
    variant                     Nullable(String),
    response_chars              UInt32,
    response_time_ms            UInt64,
    interaction_created_at      DateTime64(3, 'UTC'),
    settled_at                  DateTime64(3, 'UTC'),
    amended                     Bool,
    feedback_events             UInt32,
    regenerated                 Bool,
    edited                      Bool,
    edit_distance               Nullable(UInt32),
    edit_distance_norm          Nullable(Float64),
    word_edit_distance          Nullable(UInt32),
    edit_size                   LowCardinality(Nullable(String)),
    thumbs_up                   Bool,
    thumbs_down                 Bool,
    copied                      Bool,
    copied_fraction             Nullable(Float64),
    partial_copy                Bool,
    accepted                    Bool,
    rephrased                   Bool,
    clarifying_followup         Bool,
    next_interaction_id         Nullable(UUID),
    abandoned                   Bool,
    short_dwell                 Bool,
    corrected                   Bool,
    time_to_first_correction_ms Nullable(Int64),
    completed_without_edit      Bool
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(interaction_created_at)
ORDER BY (prompt_version, interaction_id);

-- One row per 1-minute window and (prompt_version, model, input_category); highest version wins.
CREATE TABLE IF NOT EXISTS {db}.prompt_version_metrics
(
    window_start                     DateTime64(3, 'UTC'),
    window_end                       DateTime64(3, 'UTC'),
    prompt_version                   LowCardinality(String),
    model                            LowCardinality(String),
    input_category                   LowCardinality(Nullable(String)),
    version                          UInt64,
    interactions                     UInt32,
    regenerations                    UInt32,
    edits                            UInt32,
    corrections                      UInt32,
    thumbs_up                        UInt32,
    thumbs_down                      UInt32,
    rephrases                        UInt32,
    clarifying_followups             UInt32,
    abandons                         UInt32,
    short_dwells                     UInt32,
    completions_without_edit         UInt32,
    distinct_users                   UInt32,
    edit_distance_sum                UInt64,
    edit_distance_mean               Nullable(Float64),
    edit_distance_norm_mean          Nullable(Float64),
    time_to_first_correction_mean_ms Nullable(Float64),
    response_time_mean_ms            Float64,
    response_time_p95_ms             UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (prompt_version, model, ifNull(input_category, ''), window_start);
