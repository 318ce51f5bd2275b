-- Insights for the weekly improvement cycle: edit patterns, segments and spikes, the vocal-minority
-- guard, the prompt changelog and each user's contribution (docs/insights.md).
--
-- Every view reads through FINAL, so each event and each interaction counts once. Views named
-- *_between are parameterized by a half-open time range, e.g.
--   SELECT * FROM category_rates_between(start = '2026-11-23 00:00:00', end = '2026-11-30 00:00:00')
-- and the plain views are the same over all time. "_capped" rates weigh each user's interactions
-- (or edits) with min(1, cap / n): nobody counts for more than user_weight_cap of them.

-- Thresholds the views use, mirrored from the settings (feedbackloop insights sync, report). The
-- newest row of a name wins, and the defaults below hold until the first sync.
CREATE TABLE IF NOT EXISTS {db}.insight_settings
(
    name       LowCardinality(String),
    value      Float64,
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;

INSERT INTO {db}.insight_settings (name, value, updated_at) VALUES
    ('user_weight_cap', 20, '2000-01-01 00:00:00'),
    ('min_pattern_edits', 5, '2000-01-01 00:00:00'),
    ('min_deletion_share', 0.2, '2000-01-01 00:00:00'),
    ('spike_ratio', 2, '2000-01-01 00:00:00'),
    ('spike_min_interactions', 50, '2000-01-01 00:00:00'),
    ('spike_min_z', 3, '2000-01-01 00:00:00');

-- The prompt registry's mirror (feedbackloop/prompts.py): the newest copy of a version wins.
CREATE TABLE IF NOT EXISTS {db}.prompt_versions
(
    version     String,
    parent      Nullable(String),
    text        String,
    change      String,
    reasoning   String,
    addresses   String,
    author      String,
    created_at  DateTime64(3, 'UTC'),
    mirrored_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(mirrored_at)
ORDER BY version;

-- Rates per prompt version: per interaction and with each user's weight capped; leading indicators.
CREATE OR REPLACE VIEW {db}.version_rates_between AS
WITH ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'user_weight_cap'), 20) AS cap
SELECT
    prompt_version,
    sum(u_n) AS interactions,
    count() AS users,
    sum(u_regenerated) AS regenerations,
    sum(u_edited) AS edits,
    sum(u_large) AS large_edits,
    sum(u_corrected) AS corrections,
    sum(u_thumbs_down) AS thumbs_down,
    sum(u_completed) AS completions_without_edit,
    regenerations / interactions AS regeneration_rate,
    edits / interactions AS edit_rate,
    large_edits / interactions AS large_edit_rate,
    corrections / interactions AS correction_rate,
    thumbs_down / interactions AS thumbs_down_rate,
    completions_without_edit / interactions AS completion_without_edit_rate,
    sum(u_distance_sum) / nullIf(sum(u_distance_n), 0) AS avg_edit_distance,
    sum(u_ttfc_sum) / nullIf(sum(u_ttfc_n), 0) AS avg_time_to_first_correction_ms,
    sum(least(toFloat64(u_n), cap)) AS weighted_interactions,
    sum(u_regenerated * least(1.0, cap / u_n)) / weighted_interactions AS regeneration_rate_capped,
    sum(u_edited * least(1.0, cap / u_n)) / weighted_interactions AS edit_rate_capped,
    sum(u_large * least(1.0, cap / u_n)) / weighted_interactions AS large_edit_rate_capped,
    sum(u_corrected * least(1.0, cap / u_n)) / weighted_interactions AS correction_rate_capped,
    sum(u_thumbs_down * least(1.0, cap / u_n)) / weighted_interactions AS thumbs_down_rate_capped,
    sum(u_completed * least(1.0, cap / u_n)) / weighted_interactions AS completion_without_edit_rate_capped
FROM
(
    SELECT
        prompt_version,
        user_id,
        count() AS u_n,
        countIf(regenerated) AS u_regenerated,
        countIf(edited) AS u_edited,
        countIf(edit_size = 'large') AS u_large,
        countIf(corrected) AS u_corrected,
        countIf(thumbs_down) AS u_thumbs_down,
        countIf(completed_without_edit) AS u_completed,
        sum(ifNull(edit_distance, 0)) AS u_distance_sum,
        countIf(edit_distance IS NOT NULL) AS u_distance_n,
        sum(ifNull(time_to_first_correction_ms, 0)) AS u_ttfc_sum,
        countIf(time_to_first_correction_ms IS NOT NULL) AS u_ttfc_n
    FROM {db}.interaction_outcomes FINAL
    WHERE interaction_created_at >= {start:DateTime64(3)} AND interaction_created_at < {end:DateTime64(3)}
    GROUP BY prompt_version, user_id
)
GROUP BY prompt_version
ORDER BY prompt_version;

CREATE OR REPLACE VIEW {db}.version_rates AS
SELECT * FROM {db}.version_rates_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Rates per input category and prompt version (a missing category is '(none)'). The weighted_*
-- columns are the capped numerators and denominator, so the rest of a version can be capped too.
CREATE OR REPLACE VIEW {db}.category_rates_between AS
WITH ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'user_weight_cap'), 20) AS cap
SELECT
    prompt_version,
    input_category,
    sum(u_n) AS interactions,
    count() AS users,
    sum(u_regenerated) AS regenerations,
    sum(u_edited) AS edits,
    sum(u_large) AS large_edits,
    sum(u_corrected) AS corrections,
    sum(u_completed) AS completions_without_edit,
    regenerations / interactions AS regeneration_rate,
    edits / interactions AS edit_rate,
    large_edits / interactions AS large_edit_rate,
    corrections / interactions AS correction_rate,
    completions_without_edit / interactions AS completion_without_edit_rate,
    sum(least(toFloat64(u_n), cap)) AS weighted_interactions,
    sum(u_regenerated * least(1.0, cap / u_n)) AS weighted_regenerations,
    weighted_regenerations / weighted_interactions AS regeneration_rate_capped,
    sum(u_edited * least(1.0, cap / u_n)) / weighted_interactions AS edit_rate_capped,
    sum(u_large * least(1.0, cap / u_n)) / weighted_interactions AS large_edit_rate_capped,
    sum(u_corrected * least(1.0, cap / u_n)) / weighted_interactions AS correction_rate_capped,
    sum(u_completed * least(1.0, cap / u_n)) / weighted_interactions AS completion_without_edit_rate_capped
FROM
(
    SELECT
        prompt_version,
        ifNull(input_category, '(none)') AS input_category,
        user_id,
        count() AS u_n,
        countIf(regenerated) AS u_regenerated,
        countIf(edited) AS u_edited,
        countIf(edit_size = 'large') AS u_large,
        countIf(corrected) AS u_corrected,
        countIf(completed_without_edit) AS u_completed
    FROM {db}.interaction_outcomes FINAL
    WHERE interaction_created_at >= {start:DateTime64(3)} AND interaction_created_at < {end:DateTime64(3)}
    GROUP BY prompt_version, input_category, user_id
)
GROUP BY prompt_version, input_category
ORDER BY prompt_version, input_category;

CREATE OR REPLACE VIEW {db}.category_rates AS
SELECT * FROM {db}.category_rates_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Categories whose regeneration rate is far above the rest of their version: flagged when the
-- category has at least spike_min_interactions, its rate is spike_ratio times the rest's, and a
-- two-proportion z-test against the rest gives at least spike_min_z. flagged_capped asks the
-- same of the capped rates; the report shows where the two disagree.
CREATE OR REPLACE VIEW {db}.category_spikes_between AS
WITH
    ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'spike_ratio'), 2) AS min_ratio,
    ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'spike_min_interactions'), 50) AS min_n,
    ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'spike_min_z'), 3) AS min_z
SELECT
    c.prompt_version AS prompt_version,
    c.input_category AS input_category,
    c.interactions AS interactions,
    c.regenerations AS regenerations,
    c.regeneration_rate AS regeneration_rate,
    v.v_interactions - c.interactions AS rest_interactions,
    v.v_regenerations - c.regenerations AS rest_regenerations,
    if(rest_interactions = 0, NULL, rest_regenerations / rest_interactions) AS rest_regeneration_rate,
    v.v_regenerations / v.v_interactions AS version_regeneration_rate,
    multiIf(rest_interactions = 0, NULL, rest_regenerations = 0, if(c.regenerations = 0, 1, inf),
            c.regeneration_rate / rest_regeneration_rate) AS ratio,
    multiIf(rest_interactions = 0 OR version_regeneration_rate IN (0, 1), 0,
            (c.regeneration_rate - rest_regeneration_rate) / sqrt(version_regeneration_rate
                * (1 - version_regeneration_rate) * (1 / c.interactions + 1 / rest_interactions))) AS z_score,
    c.regeneration_rate_capped AS regeneration_rate_capped,
    if(v.v_weighted_interactions = c.weighted_interactions, NULL,
       (v.v_weighted_regenerations - c.weighted_regenerations)
           / (v.v_weighted_interactions - c.weighted_interactions)) AS rest_regeneration_rate_capped,
    multiIf(rest_regeneration_rate_capped IS NULL, NULL, rest_regeneration_rate_capped = 0,
            if(c.weighted_regenerations = 0, 1, inf),
            c.regeneration_rate_capped / rest_regeneration_rate_capped) AS ratio_capped,
    c.interactions >= min_n AND ifNull(ratio >= min_ratio, 0) AND z_score >= min_z AS flagged,
    c.interactions >= min_n AND ifNull(ratio_capped >= min_ratio, 0) AND z_score >= min_z AS flagged_capped
FROM {db}.category_rates_between(start = {start:DateTime64(3)}, end = {end:DateTime64(3)}) AS c
INNER JOIN
(
    SELECT
        prompt_version,
        sum(interactions) AS v_interactions,
        sum(regenerations) AS v_regenerations,
        sum(weighted_interactions) AS v_weighted_interactions,
        sum(weighted_regenerations) AS v_weighted_regenerations
    FROM {db}.category_rates_between(start = {start:DateTime64(3)}, end = {end:DateTime64(3)})
    GROUP BY prompt_version
) AS v ON c.prompt_version = v.prompt_version
ORDER BY flagged DESC, ratio DESC, prompt_version, input_category;

CREATE OR REPLACE VIEW {db}.category_spikes AS
SELECT * FROM {db}.category_spikes_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Every non-trivial operation grouped by its normalized fragments, without a threshold.
-- frequency counts edits (an edit making the same change twice counts once).
CREATE OR REPLACE VIEW {db}.edit_patterns_between AS
SELECT
    prompt_version,
    kind,
    original_norm AS original_fragment,
    corrected_norm AS corrected_fragment,
    uniqExact(event_id) AS frequency,
    uniqExact(user_id) AS distinct_users,
    topK(1)(original)[1] AS example_original,
    topK(1)(corrected)[1] AS example_corrected,
    uniqExactIf(event_id, edit_size = 'large') AS in_large_edits,
    uniqExactIf(event_id, edit_size = 'medium') AS in_medium_edits,
    uniqExactIf(event_id, edit_size = 'small') AS in_small_edits,
    min(created_at) AS first_seen,
    max(created_at) AS last_seen
FROM {db}.edit_operation_rows
WHERE created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)}
  AND original_norm != corrected_norm
GROUP BY prompt_version, kind, original_fragment, corrected_fragment
ORDER BY frequency DESC, distinct_users DESC, prompt_version, original_fragment, corrected_fragment;

-- The same replacement made in more than min_pattern_edits edits, e.g. 'dear sir/madam' -> 'hi <name>'.
CREATE OR REPLACE VIEW {db}.common_edits AS
WITH ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'min_pattern_edits'), 5) AS min_edits
SELECT
    prompt_version,
    original_fragment,
    corrected_fragment,
    frequency,
    distinct_users,
    example_original,
    example_corrected,
    first_seen,
    last_seen
FROM {db}.edit_patterns_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00')
WHERE kind = 'replace' AND frequency > min_edits;

-- What users delete, by position and unit, as a share of the version's edits (per edit and with
-- each user's edits capped).
CREATE OR REPLACE VIEW {db}.deletions_between AS
WITH ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'user_weight_cap'), 20) AS cap
SELECT
    d.prompt_version AS prompt_version,
    d.position AS position,
    d.unit AS unit,
    sum(d.d_edits) AS deleting_edits,
    count() AS deleting_users,
    any(v.v_edits) AS edits,
    deleting_edits / edits AS share,
    sum(d.d_edits * least(1.0, cap / u.u_edits)) / any(v.v_weighted) AS share_capped,
    sum(d.d_small) AS in_small_edits,
    sum(d.d_medium) AS in_medium_edits,
    sum(d.d_large) AS in_large_edits,
    topK(1)(d.d_example)[1] AS example
FROM
(
    SELECT
        prompt_version,
        position,
        unit,
        user_id,
        uniqExact(event_id) AS d_edits,
        uniqExactIf(event_id, edit_size = 'small') AS d_small,
        uniqExactIf(event_id, edit_size = 'medium') AS d_medium,
        uniqExactIf(event_id, edit_size = 'large') AS d_large,
        topK(1)(original)[1] AS d_example
    FROM {db}.edit_operation_rows
    WHERE kind = 'delete' AND created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)}
    GROUP BY prompt_version, position, unit, user_id
) AS d
INNER JOIN
(
    SELECT prompt_version, user_id, count() AS u_edits
    FROM {db}.edit_operations FINAL
    WHERE created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)}
    GROUP BY prompt_version, user_id
) AS u ON d.prompt_version = u.prompt_version AND d.user_id = u.user_id
INNER JOIN
(
    SELECT prompt_version, sum(n) AS v_edits, sum(least(toFloat64(n), cap)) AS v_weighted
    FROM
    (
        SELECT prompt_version, user_id, count() AS n
        FROM {db}.edit_operations FINAL
        WHERE created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)}
        GROUP BY prompt_version, user_id
    )
    GROUP BY prompt_version
) AS v ON d.prompt_version = v.prompt_version
GROUP BY prompt_version, position, unit
ORDER BY share DESC, prompt_version, position, unit;

-- Deletions made in more than min_pattern_edits edits and at least min_deletion_share of them,
-- e.g. "users delete the closing paragraph in 41 % of edits of v1.0".
CREATE OR REPLACE VIEW {db}.consistent_deletions AS
WITH
    ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'min_pattern_edits'), 5) AS min_edits,
    ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'min_deletion_share'), 0.2) AS min_share
SELECT *
FROM {db}.deletions_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00')
WHERE deleting_edits > min_edits AND share >= min_share;

-- Small edits are refinements, large ones misunderstandings: the mix per version.
CREATE OR REPLACE VIEW {db}.edit_size_mix_between AS
WITH ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'user_weight_cap'), 20) AS cap
SELECT
    prompt_version,
    sum(u_n) AS edits,
    count() AS users,
    sum(u_small) AS small,
    sum(u_medium) AS medium,
    sum(u_large) AS large,
    small / edits AS small_share,
    medium / edits AS medium_share,
    large / edits AS large_share,
    sum(u_large * least(1.0, cap / u_n)) / sum(least(toFloat64(u_n), cap)) AS large_share_capped,
    sum(u_distance) / edits AS avg_edit_distance
FROM
(
    SELECT
        prompt_version,
        user_id,
        count() AS u_n,
        countIf(edit_size = 'small') AS u_small,
        countIf(edit_size = 'medium') AS u_medium,
        countIf(edit_size = 'large') AS u_large,
        sum(edit_distance) AS u_distance
    FROM {db}.edit_operations FINAL
    WHERE created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)}
    GROUP BY prompt_version, user_id
)
GROUP BY prompt_version
ORDER BY prompt_version;

CREATE OR REPLACE VIEW {db}.edit_size_mix AS
SELECT * FROM {db}.edit_size_mix_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Leading indicators per period ('hour', 'day' or 'week') and prompt version.
CREATE OR REPLACE VIEW {db}.leading_indicators_between AS
SELECT
    multiIf({grain:String} = 'hour', toStartOfHour(interaction_created_at),
            {grain:String} = 'day', toStartOfDay(interaction_created_at),
            toDateTime(toMonday(interaction_created_at), 'UTC')) AS period_start,
    prompt_version,
    count() AS interactions,
    countIf(regenerated) / interactions AS regeneration_rate,
    countIf(edited) / interactions AS edit_rate,
    countIf(corrected) / interactions AS correction_rate,
    countIf(completed_without_edit) / interactions AS completion_without_edit_rate,
    avg(edit_distance) AS avg_edit_distance,
    avg(time_to_first_correction_ms) AS avg_time_to_first_correction_ms
FROM {db}.interaction_outcomes FINAL
WHERE interaction_created_at >= {start:DateTime64(3)} AND interaction_created_at < {end:DateTime64(3)}
GROUP BY period_start, prompt_version
ORDER BY period_start, prompt_version;

-- A/B experiments as the outcomes show them (decisions, when another stage makes them, live elsewhere).
CREATE OR REPLACE VIEW {db}.experiment_results_between AS
SELECT
    experiment_id,
    variant,
    groupUniqArray(prompt_version) AS prompt_versions,
    count() AS interactions,
    uniqExact(user_id) AS users,
    countIf(regenerated) / interactions AS regeneration_rate,
    countIf(corrected) / interactions AS correction_rate,
    countIf(completed_without_edit) / interactions AS completion_without_edit_rate,
    avg(edit_distance) AS avg_edit_distance,
    min(interaction_created_at) AS first_interaction,
    max(interaction_created_at) AS last_interaction
FROM {db}.interaction_outcomes FINAL
WHERE experiment_id IS NOT NULL
  AND interaction_created_at >= {start:DateTime64(3)} AND interaction_created_at < {end:DateTime64(3)}
GROUP BY experiment_id, variant
ORDER BY experiment_id, variant;

-- Corrections are the explicit corrective feedback events: edits, regenerations and thumbs-down.
-- A correction informed a version when it was made on that version's parent before the version
-- was created.
CREATE OR REPLACE VIEW {db}.prompt_changelog AS
SELECT
    p.version AS version,
    p.parent AS parent,
    p.change AS change,
    p.reasoning AS reasoning,
    p.addresses AS addresses,
    p.author AS author,
    p.created_at AS created_at,
    ifNull(informed.corrections, 0) AS informed_by_corrections,
    ifNull(informed.users, 0) AS informed_by_users,
    ifNull(cur.interactions, 0) AS interactions,
    ifNull(cur.users, 0) AS users,
    cur.regeneration_rate AS regeneration_rate,
    cur.edit_rate AS edit_rate,
    cur.correction_rate AS correction_rate,
    cur.completion_without_edit_rate AS completion_without_edit_rate,
    cur.avg_edit_distance AS avg_edit_distance,
    par.regeneration_rate AS parent_regeneration_rate,
    par.edit_rate AS parent_edit_rate,
    par.correction_rate AS parent_correction_rate,
    par.completion_without_edit_rate AS parent_completion_without_edit_rate,
    par.avg_edit_distance AS parent_avg_edit_distance,
    regeneration_rate - parent_regeneration_rate AS regeneration_rate_change,
    edit_rate - parent_edit_rate AS edit_rate_change,
    correction_rate - parent_correction_rate AS correction_rate_change,
    completion_without_edit_rate - parent_completion_without_edit_rate AS completion_without_edit_rate_change
FROM (SELECT * FROM {db}.prompt_versions FINAL) AS p
LEFT JOIN
(
    SELECT
        prompt_version,
        toNullable(interactions) AS interactions,
        toNullable(users) AS users,
        toNullable(regeneration_rate) AS regeneration_rate,
        toNullable(edit_rate) AS edit_rate,
        toNullable(correction_rate) AS correction_rate,
        toNullable(completion_without_edit_rate) AS completion_without_edit_rate,
        avg_edit_distance
    FROM {db}.version_rates
) AS cur ON cur.prompt_version = p.version
LEFT JOIN
(
    SELECT
        prompt_version,
        toNullable(regeneration_rate) AS regeneration_rate,
        toNullable(edit_rate) AS edit_rate,
        toNullable(correction_rate) AS correction_rate,
        toNullable(completion_without_edit_rate) AS completion_without_edit_rate,
        avg_edit_distance
    FROM {db}.version_rates
) AS par ON par.prompt_version = p.parent
LEFT JOIN
(
    SELECT child.version AS version, count() AS corrections, uniqExact(f.user_id) AS users
    FROM {db}.ai_feedback AS f FINAL
    INNER JOIN (SELECT version, parent, created_at FROM {db}.prompt_versions FINAL) AS child
        ON f.prompt_version = child.parent
    WHERE f.feedback_type IN ('edit', 'regenerate', 'thumbs_down') AND f.created_at < child.created_at
    GROUP BY child.version
) AS informed ON informed.version = p.version
ORDER BY created_at, version;

-- Each user's corrections and their impact: the versions their corrections informed (see
-- prompt_changelog) and the distinct users and interactions those versions served.
CREATE OR REPLACE VIEW {db}.user_contributions AS
SELECT
    c.user_id AS user_id,
    c.corrections AS corrections,
    c.edits AS edits,
    c.regenerations AS regenerations,
    c.thumbs_down AS thumbs_down,
    c.versions_corrected AS versions_corrected,
    c.first_correction_at AS first_correction_at,
    c.last_correction_at AS last_correction_at,
    i.informing_corrections AS informing_corrections,
    i.informed_versions AS informed_versions,
    s.users_served AS users_served,
    s.interactions_served AS interactions_served
FROM
(
    SELECT
        user_id,
        count() AS corrections,
        countIf(feedback_type = 'edit') AS edits,
        countIf(feedback_type = 'regenerate') AS regenerations,
        countIf(feedback_type = 'thumbs_down') AS thumbs_down,
        arraySort(groupUniqArray(prompt_version)) AS versions_corrected,
        min(created_at) AS first_correction_at,
        max(created_at) AS last_correction_at
    FROM {db}.ai_feedback FINAL
    WHERE feedback_type IN ('edit', 'regenerate', 'thumbs_down')
    GROUP BY user_id
) AS c
LEFT JOIN
(
    SELECT f.user_id AS user_id, uniqExact(f.event_id) AS informing_corrections,
           arraySort(groupUniqArray(child.version)) AS informed_versions
    FROM {db}.ai_feedback AS f FINAL
    INNER JOIN (SELECT version, parent, created_at FROM {db}.prompt_versions FINAL) AS child
        ON f.prompt_version = child.parent
    WHERE f.feedback_type IN ('edit', 'regenerate', 'thumbs_down') AND f.created_at < child.created_at
    GROUP BY f.user_id
) AS i ON i.user_id = c.user_id
LEFT JOIN
(
    SELECT informer.user_id AS user_id, uniqExact(o.user_id) AS users_served, count() AS interactions_served
    FROM
    (
        SELECT DISTINCT f.user_id AS user_id, child.version AS version
        FROM {db}.ai_feedback AS f FINAL
        INNER JOIN (SELECT version, parent, created_at FROM {db}.prompt_versions FINAL) AS child
            ON f.prompt_version = child.parent
        WHERE f.feedback_type IN ('edit', 'regenerate', 'thumbs_down') AND f.created_at < child.created_at
    ) AS informer
    INNER JOIN (SELECT prompt_version, user_id FROM {db}.interaction_outcomes FINAL) AS o
        ON o.prompt_version = informer.version
    GROUP BY informer.user_id
) AS s ON s.user_id = c.user_id
ORDER BY corrections DESC, user_id;
