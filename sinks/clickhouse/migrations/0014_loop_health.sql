-- Is the loop working? The lagging indicators (engagement, retention, support tickets) and the velocity
-- metrics (prompt versions shipped, experiments running, time from feedback to fix), docs/insights.md.
--
-- Weekly views count ISO weeks (Monday 00:00 UTC). Their *_between variants report the weeks whose
-- Monday lies in [start, end), each week whole; what a week's numbers look up outside the range (when
-- a user was first seen, whether they came back, when a pattern first appeared) is looked up in all
-- the data. A number that needs a week that is not over yet (by the wall clock) is NULL.

-- Support tickets (topic ai.support_tickets.v1): one row per ticket_id, the copy the sink wrote last.
CREATE TABLE IF NOT EXISTS {db}.support_tickets
(
    event_id       UUID,
    ticket_id      String,
    user_id        String,
    created_at     DateTime64(3, 'UTC'),
    category       LowCardinality(String),
    ai_quality     Bool,
    interaction_id Nullable(UUID),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY ticket_id;

-- Every revision of every experiment (topic ai.experiments.v1), with the promote or revert applied.
CREATE TABLE IF NOT EXISTS {db}.experiments
(
    experiment_id      String,
    revision           UInt32,
    control            String,
    treatment          String,
    split_control      UInt32,
    split_treatment    UInt32,
    primary_metric     LowCardinality(String),
    status             LowCardinality(String),
    created_at         DateTime64(3, 'UTC'),
    updated_at         DateTime64(3, 'UTC'),
    applied_action     LowCardinality(Nullable(String)),
    applied_at         Nullable(DateTime64(3, 'UTC')),
    applied_by         Nullable(String),
    production_version Nullable(String),
    retired_version    Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (experiment_id, created_at, revision);

-- Each ticket with the prompt version of the interaction it names. Linked only when that interaction
-- exists and belongs to the ticket's user: a ticket cannot claim another user's interaction (and an id
-- the same user reused in another session links once, to its first interaction).
CREATE OR REPLACE VIEW {db}.support_tickets_linked AS
SELECT
    t.ticket_id AS ticket_id,
    t.event_id AS event_id,
    t.user_id AS user_id,
    t.created_at AS created_at,
    t.category AS category,
    t.ai_quality AS ai_quality,
    t.interaction_id AS interaction_id,
    o.found = 1 AS linked,
    if(linked, o.prompt_version, NULL) AS prompt_version,
    if(linked, o.interaction_created_at, NULL) AS interaction_created_at
FROM (SELECT * FROM {db}.support_tickets FINAL) AS t
LEFT JOIN
(
    SELECT interaction_id, user_id, prompt_version, interaction_created_at, 1 AS found
    FROM {db}.interaction_outcomes FINAL
    ORDER BY interaction_created_at, session_id
    LIMIT 1 BY interaction_id, user_id
) AS o ON t.interaction_id = o.interaction_id AND t.user_id = o.user_id;

-- Engagement per week, per prompt version and overall (prompt_version '(all)'): weekly active users
-- (distinct users with an interaction that week), interactions per active user, and the share of
-- them who return the next week (an interaction of any version in week W+1). Per version, a user
-- counts for each version they used that week.
CREATE OR REPLACE VIEW {db}.engagement_between AS
SELECT
    w.week_start AS week_start,
    w.prompt_version AS prompt_version,
    count() AS active_users,
    sum(w.n) AS interactions,
    interactions / active_users AS interactions_per_active_user,
    countIf(nx.found = 1) AS returning_users,
    if(now64(3) >= w.week_start + toIntervalDay(14), returning_users / active_users, NULL) AS next_week_return_rate
FROM
(
    SELECT toDateTime(toMonday(interaction_created_at), 'UTC') AS week_start, prompt_version, user_id, count() AS n
    FROM {db}.interaction_outcomes FINAL
    GROUP BY week_start, prompt_version, user_id
    UNION ALL
    SELECT toDateTime(toMonday(interaction_created_at), 'UTC') AS week_start, '(all)' AS prompt_version, user_id,
           count() AS n
    FROM {db}.interaction_outcomes FINAL
    GROUP BY week_start, user_id
) AS w
LEFT JOIN
(
    SELECT DISTINCT toDateTime(toMonday(interaction_created_at), 'UTC') - toIntervalDay(7) AS week_start, user_id,
           1 AS found
    FROM {db}.interaction_outcomes FINAL
) AS nx ON w.week_start = nx.week_start AND w.user_id = nx.user_id
WHERE w.week_start >= {start:DateTime64(3)} AND w.week_start < {end:DateTime64(3)}
GROUP BY week_start, prompt_version
ORDER BY week_start, prompt_version;

CREATE OR REPLACE VIEW {db}.engagement AS
SELECT * FROM {db}.engagement_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- The leading indicators per week, per prompt version and overall (prompt_version '(all)'), for the
-- trends next to the lagging ones: regeneration rate, mean edit distance (edited interactions), mean
-- time to first correction (corrected interactions).
CREATE OR REPLACE VIEW {db}.weekly_indicators_between AS
SELECT
    toDateTime(toMonday(interaction_created_at), 'UTC') AS week_start,
    version_or_all AS prompt_version,
    count() AS interactions,
    countIf(regenerated) / interactions AS regeneration_rate,
    avg(edit_distance) AS avg_edit_distance,
    avg(time_to_first_correction_ms) AS avg_time_to_first_correction_ms
FROM {db}.interaction_outcomes FINAL
ARRAY JOIN [prompt_version, '(all)'] AS version_or_all
WHERE week_start >= {start:DateTime64(3)} AND week_start < {end:DateTime64(3)}
GROUP BY week_start, version_or_all
ORDER BY week_start, version_or_all;

CREATE OR REPLACE VIEW {db}.weekly_indicators AS
SELECT * FROM {db}.weekly_indicators_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Weekly cohorts: the users first seen (first interaction ever) in week W, and the share of them active
-- in W+1, W+2 and W+4 (NULL until that week is over).
CREATE OR REPLACE VIEW {db}.cohort_retention_between AS
SELECT
    cohort_week,
    count() AS users,
    countIf(has(weeks, cohort_week + toIntervalDay(7))) AS active_week_1,
    countIf(has(weeks, cohort_week + toIntervalDay(14))) AS active_week_2,
    countIf(has(weeks, cohort_week + toIntervalDay(28))) AS active_week_4,
    if(now64(3) >= cohort_week + toIntervalDay(14), active_week_1 / users, NULL) AS retention_week_1,
    if(now64(3) >= cohort_week + toIntervalDay(21), active_week_2 / users, NULL) AS retention_week_2,
    if(now64(3) >= cohort_week + toIntervalDay(35), active_week_4 / users, NULL) AS retention_week_4
FROM
(
    SELECT user_id, min(week) AS cohort_week, groupUniqArray(week) AS weeks
    FROM
    (
        SELECT user_id, toDateTime(toMonday(interaction_created_at), 'UTC') AS week
        FROM {db}.interaction_outcomes FINAL
    )
    GROUP BY user_id
)
WHERE cohort_week >= {start:DateTime64(3)} AND cohort_week < {end:DateTime64(3)}
GROUP BY cohort_week
ORDER BY cohort_week;

CREATE OR REPLACE VIEW {db}.cohort_retention AS
SELECT * FROM {db}.cohort_retention_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Support tickets per week (the week the ticket was opened), overall (prompt_version '(all)': every
-- ticket, linked or not, against every interaction of the week) and per prompt version (the tickets
-- linked to that version's interactions, against that version's interactions of the week).
CREATE OR REPLACE VIEW {db}.support_ticket_rates_between AS
SELECT
    week_start,
    prompt_version,
    sum(i) AS interactions,
    sum(t) AS tickets,
    sum(q) AS ai_quality_tickets,
    sum(l) AS ai_quality_tickets_linked,
    if(interactions = 0, NULL, ai_quality_tickets * 1000 / interactions) AS ai_quality_tickets_per_1000
FROM
(
    SELECT toDateTime(toMonday(interaction_created_at), 'UTC') AS week_start, prompt_version,
           count() AS i, toUInt64(0) AS t, toUInt64(0) AS q, toUInt64(0) AS l
    FROM {db}.interaction_outcomes FINAL
    GROUP BY week_start, prompt_version
    UNION ALL
    SELECT toDateTime(toMonday(interaction_created_at), 'UTC') AS week_start, '(all)' AS prompt_version,
           count() AS i, toUInt64(0) AS t, toUInt64(0) AS q, toUInt64(0) AS l
    FROM {db}.interaction_outcomes FINAL
    GROUP BY week_start
    UNION ALL
    SELECT toDateTime(toMonday(created_at), 'UTC') AS week_start, '(all)' AS prompt_version,
           toUInt64(0) AS i, count() AS t, countIf(ai_quality) AS q, countIf(ai_quality AND linked) AS l
    FROM {db}.support_tickets_linked
    GROUP BY week_start
    UNION ALL
    SELECT toDateTime(toMonday(created_at), 'UTC') AS week_start, assumeNotNull(prompt_version) AS prompt_version,
           toUInt64(0) AS i, count() AS t, countIf(ai_quality) AS q, countIf(ai_quality) AS l
    FROM {db}.support_tickets_linked
    WHERE linked
    GROUP BY week_start, prompt_version
)
WHERE week_start >= {start:DateTime64(3)} AND week_start < {end:DateTime64(3)}
GROUP BY week_start, prompt_version
ORDER BY week_start, prompt_version;

CREATE OR REPLACE VIEW {db}.support_ticket_rates AS
SELECT * FROM {db}.support_ticket_rates_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- When each prompt version was promoted: the first promote applied to an experiment that made it the
-- production version (feedbackloop experiments promote, or the evaluator with auto-apply).
CREATE OR REPLACE VIEW {db}.version_promotions AS
SELECT
    assumeNotNull(production_version) AS version,
    min(assumeNotNull(applied_at)) AS promoted_at,
    argMin(experiment_id, assumeNotNull(applied_at)) AS experiment_id,
    argMin(retired_version, assumeNotNull(applied_at)) AS retired_version
FROM {db}.experiments FINAL
WHERE applied_action = 'promote' AND applied_at IS NOT NULL AND production_version IS NOT NULL
GROUP BY version
ORDER BY promoted_at, version;

-- Prompt versions registered (prompt_versions.created_at) and promoted (version_promotions) per month
-- (months starting in [start, end); months with neither are absent).
CREATE OR REPLACE VIEW {db}.prompt_velocity_between AS
SELECT
    month_start,
    sum(r) AS versions_registered,
    sum(p) AS versions_promoted,
    arraySort(arrayFlatten(groupArray(registered))) AS registered_versions,
    arraySort(arrayFlatten(groupArray(promoted))) AS promoted_versions
FROM
(
    SELECT toDateTime(toStartOfMonth(created_at), 'UTC') AS month_start, count() AS r, toUInt64(0) AS p,
           groupArray(version) AS registered, CAST([], 'Array(String)') AS promoted
    FROM {db}.prompt_versions FINAL
    GROUP BY month_start
    UNION ALL
    SELECT toDateTime(toStartOfMonth(promoted_at), 'UTC') AS month_start, toUInt64(0) AS r, count() AS p,
           CAST([], 'Array(String)') AS registered, groupArray(version) AS promoted
    FROM {db}.version_promotions
    GROUP BY month_start
)
WHERE month_start >= {start:DateTime64(3)} AND month_start < {end:DateTime64(3)}
GROUP BY month_start
ORDER BY month_start;

CREATE OR REPLACE VIEW {db}.prompt_velocity AS
SELECT * FROM {db}.prompt_velocity_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- One row per experiment (an id re-created later is another one): when it started (created_at) and
-- when it stopped running (the first revision with another status: its promote or revert applied_at,
-- else that revision's updated_at); NULL while it runs.
CREATE OR REPLACE VIEW {db}.experiment_runs AS
SELECT
    experiment_id,
    created_at AS started_at,
    if(countIf(status != 'running') = 0, NULL,
       minIf(ifNull(applied_at, updated_at), status != 'running')) AS ended_at,
    argMax(control, revision) AS control,
    argMax(treatment, revision) AS treatment,
    argMax(status, revision) AS latest_status
FROM {db}.experiments FINAL
GROUP BY experiment_id, created_at
ORDER BY started_at, experiment_id;

-- Experiments running concurrently per week: those that ran at any moment of the week. Every week from
-- the first data (interaction or experiment) to now is listed, weeks without an experiment as 0.
CREATE OR REPLACE VIEW {db}.experiments_concurrent_between AS
WITH
    (SELECT least(
        ifNull((SELECT minOrNull(interaction_created_at) FROM {db}.interaction_outcomes FINAL), now64(3)),
        ifNull((SELECT minOrNull(created_at) FROM {db}.experiments FINAL), now64(3)))) AS first_data,
    toDateTime(toMonday(greatest(toDateTime64({start:DateTime64(3)}, 3, 'UTC'), first_data)), 'UTC') AS first_week,
    toDateTime(toMonday(least(toDateTime64({end:DateTime64(3)}, 3, 'UTC') - toIntervalMillisecond(1), now64(3))),
               'UTC') AS last_week
SELECT
    w.week_start AS week_start,
    countIf(r.experiment_id != '' AND r.started_at < w.week_start + toIntervalDay(7)
            AND (r.ended_at IS NULL OR r.ended_at > w.week_start)) AS experiments_running,
    arraySort(groupArrayIf(r.experiment_id, r.experiment_id != '' AND r.started_at < w.week_start + toIntervalDay(7)
            AND (r.ended_at IS NULL OR r.ended_at > w.week_start))) AS experiment_ids
FROM
(
    SELECT first_week + toIntervalWeek(arrayJoin(range(toUInt32(greatest(0, intDiv(dateDiff('day', first_week, last_week), 7) + 1))))) AS week_start
) AS w
LEFT JOIN {db}.experiment_runs AS r ON 1 = 1
WHERE w.week_start >= {start:DateTime64(3)} AND w.week_start < {end:DateTime64(3)}
GROUP BY week_start
ORDER BY week_start;

CREATE OR REPLACE VIEW {db}.experiments_concurrent AS
SELECT * FROM {db}.experiments_concurrent_between(start = '1970-01-01 00:00:00', end = '2200-01-01 00:00:00');

-- Time from feedback to fix. A prompt version's `addresses` is a list separated by ';'; each item of the
-- form  kind: subject  with a kind below names what the version fixes (other items are prose):
--   edit: ORIGINAL -> CORRECTED   a replacement pattern, fragments as edit_patterns shows them (normalized)
--   insert: FRAGMENT              an insertion pattern (the inserted fragment, normalized)
--   delete: POSITION UNIT         a deletion pattern, e.g. 'delete: closing paragraph'
--   ticket: CATEGORY              AI-quality support tickets of that category
-- Kinds and subjects compare trimmed and in lower case. The pattern's first appearance is its earliest
-- occurrence in any version (an edit operation, an AI-quality ticket); one that first appeared after the
-- version was registered has no first_seen. Times in days, to registration and to promotion.
CREATE OR REPLACE VIEW {db}.time_to_fix AS
SELECT
    v.version AS version,
    v.parent AS parent,
    v.created_at AS registered_at,
    p.promoted_at AS promoted_at,
    v.ref AS ref,
    v.kind AS kind,
    v.a AS subject,
    v.b AS corrected,
    if(f.found = 1 AND f.first_seen < v.created_at, f.first_seen, NULL) AS first_seen,
    dateDiff('millisecond', first_seen, registered_at) / 86400000 AS days_to_register,
    dateDiff('millisecond', first_seen, promoted_at) / 86400000 AS days_to_promote
FROM
(
    SELECT
        version,
        parent,
        created_at,
        ref,
        lower(trimBoth(substring(ref, 1, position(ref, ':') - 1))) AS kind,
        trimBoth(substring(ref, position(ref, ':') + 1)) AS body,
        arrayFilter(x -> x != '', splitByChar(' ', lower(body))) AS words,
        multiIf(kind = 'edit', lower(trimBoth(splitByString('->', body)[1])),
                kind = 'delete', words[1],
                lower(body)) AS a,
        multiIf(kind = 'edit', lower(trimBoth(splitByString('->', body)[2])),
                kind = 'delete', words[2],
                '') AS b,
        multiIf(kind = 'edit', length(splitByString('->', body)) = 2 AND a != '' AND b != '',
                kind = 'delete', length(words) = 2 AND words[1] IN ('opening', 'middle', 'closing')
                    AND words[2] IN ('words', 'sentence', 'paragraph'),
                kind IN ('insert', 'ticket'), a != '',
                0) AS valid
    FROM
    (
        -- '\x3B' is ';' (the migration runner splits statements on a literal semicolon)
        SELECT version, parent, created_at, trimBoth(arrayJoin(splitByChar('\x3B', addresses))) AS ref
        FROM {db}.prompt_versions FINAL
    )
    WHERE position(ref, ':') > 0
) AS v
LEFT JOIN
(
    SELECT 'edit' AS fix_kind, original_norm AS a, corrected_norm AS b, min(created_at) AS first_seen, 1 AS found
    FROM {db}.edit_operation_rows
    WHERE kind = 'replace'
    GROUP BY a, b
    UNION ALL
    SELECT 'insert' AS fix_kind, corrected_norm AS a, '' AS b, min(created_at) AS first_seen, 1 AS found
    FROM {db}.edit_operation_rows
    WHERE kind = 'insert'
    GROUP BY a
    UNION ALL
    SELECT 'delete' AS fix_kind, position AS a, unit AS b, min(created_at) AS first_seen, 1 AS found
    FROM {db}.edit_operation_rows
    WHERE kind = 'delete'
    GROUP BY a, b
    UNION ALL
    SELECT 'ticket' AS fix_kind, lower(category) AS a, '' AS b, min(created_at) AS first_seen, 1 AS found
    FROM {db}.support_tickets FINAL
    WHERE ai_quality
    GROUP BY a
) AS f ON v.kind = f.fix_kind AND v.a = f.a AND v.b = f.b
LEFT JOIN
(
    SELECT version, toNullable(promoted_at) AS promoted_at FROM {db}.version_promotions
) AS p ON p.version = v.version
WHERE v.valid
ORDER BY registered_at, version, ref;

-- The median time to fix of the versions registered in [start, end), against the 2-week target: over
-- every addressed pattern with a first appearance (to registration) and those also promoted (to
-- promotion). The median of an even count is the mean of the two middle values.
CREATE OR REPLACE VIEW {db}.time_to_fix_summary_between AS
SELECT
    count() AS addressed_patterns,
    countIf(first_seen IS NOT NULL) AS measured,
    countIf(days_to_promote IS NOT NULL) AS promoted,
    if(measured = 0, NULL, quantileExactInclusiveIf(0.5)(assumeNotNull(days_to_register), days_to_register IS NOT NULL))
        AS median_days_to_register,
    if(promoted = 0, NULL, quantileExactInclusiveIf(0.5)(assumeNotNull(days_to_promote), days_to_promote IS NOT NULL))
        AS median_days_to_promote
FROM {db}.time_to_fix
WHERE registered_at >= {start:DateTime64(3)} AND registered_at < {end:DateTime64(3)};
