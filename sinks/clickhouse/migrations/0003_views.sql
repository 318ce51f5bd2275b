-- Views for analysts. They read through FINAL, so every interaction counts once, at its
-- latest version, however often it was delivered or amended.

CREATE OR REPLACE VIEW {db}.regeneration_rates AS
SELECT
    prompt_version,
    count() AS total_interactions,
    countIf(regenerated) AS regenerations,
    regenerations / total_interactions AS regeneration_rate
FROM {db}.interaction_outcomes FINAL
GROUP BY prompt_version
ORDER BY prompt_version;

CREATE OR REPLACE VIEW {db}.correction_prone_prompts AS
SELECT
    prompt,
    count() AS total_attempts,
    countIf(corrected) / total_attempts AS correction_rate,
    avg(edit_distance) AS avg_edit_distance
FROM {db}.interaction_outcomes FINAL
GROUP BY prompt
HAVING total_attempts > 10
ORDER BY correction_rate DESC, total_attempts DESC, prompt
LIMIT 50;

CREATE OR REPLACE VIEW {db}.weekly_dashboard AS
SELECT
    toMonday(interaction_created_at) AS week,
    prompt_version,
    count() AS interactions,
    countIf(corrected) / interactions AS correction_rate,
    avg(response_time_ms) AS avg_latency
FROM {db}.interaction_outcomes FINAL
GROUP BY week, prompt_version
ORDER BY week, prompt_version;

CREATE OR REPLACE VIEW {db}.prompt_version_summary AS
SELECT
    prompt_version,
    count() AS interactions,
    uniqExact(user_id) AS users,
    countIf(regenerated) / interactions AS regeneration_rate,
    countIf(edited) / interactions AS edit_rate,
    countIf(corrected) / interactions AS correction_rate,
    countIf(abandoned) / interactions AS abandonment_rate,
    countIf(rephrased) / interactions AS rephrase_rate,
    countIf(clarifying_followup) / interactions AS clarifying_followup_rate,
    countIf(completed_without_edit) / interactions AS completion_without_edit_rate,
    countIf(thumbs_down) / interactions AS thumbs_down_rate,
    avg(edit_distance) AS avg_edit_distance,
    avg(edit_distance_norm) AS avg_edit_distance_norm,
    avg(time_to_first_correction_ms) AS avg_time_to_first_correction_ms
FROM {db}.interaction_outcomes FINAL
GROUP BY prompt_version
ORDER BY prompt_version;

-- Hour / day / week roll-ups of the per-minute metrics, computed by ClickHouse from the
-- outcomes (exact distinct users and p95 need the rows, not minute aggregates). A view, not a
-- materialized view: an MV fires per insert and would count replaced versions again.
CREATE OR REPLACE VIEW {db}.prompt_version_metrics_rollup AS
SELECT
    grain,
    multiIf(grain = 'hour', toStartOfHour(interaction_created_at),
            grain = 'day', toStartOfDay(interaction_created_at),
            toDateTime(toMonday(interaction_created_at), 'UTC')) AS period_start,
    prompt_version,
    model,
    input_category,
    count() AS interactions,
    countIf(regenerated) AS regenerations,
    countIf(edited) AS edits,
    countIf(corrected) AS corrections,
    countIf(thumbs_up) AS thumbs_up,
    countIf(thumbs_down) AS thumbs_down,
    countIf(rephrased) AS rephrases,
    countIf(clarifying_followup) AS clarifying_followups,
    countIf(abandoned) AS abandons,
    countIf(short_dwell) AS short_dwells,
    countIf(completed_without_edit) AS completions_without_edit,
    uniqExact(user_id) AS distinct_users,
    sum(ifNull(edit_distance, 0)) AS edit_distance_sum,
    avg(edit_distance) AS edit_distance_mean,
    avg(edit_distance_norm) AS edit_distance_norm_mean,
    avg(time_to_first_correction_ms) AS time_to_first_correction_mean_ms,
    avg(response_time_ms) AS response_time_mean_ms,
    arrayElement(arraySort(groupArray(response_time_ms)),
                 toUInt64(greatest(1, ceil(0.95 * count())))) AS response_time_p95_ms
FROM {db}.interaction_outcomes FINAL
ARRAY JOIN ['hour', 'day', 'week'] AS grain
GROUP BY grain, period_start, prompt_version, model, input_category;
