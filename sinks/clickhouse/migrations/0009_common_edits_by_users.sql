-- Edit patterns count people, not edits (issue 16): common_edits lists a replacement when more than
-- min_pattern_users distinct users made it, so one user repeating the same fix six times is one
-- voice and not a pattern. frequency (edits) stays a column, next to distinct_users.

INSERT INTO {db}.insight_settings (name, value, updated_at) VALUES
    ('min_pattern_users', 5, '2000-01-01 00:00:00');

CREATE OR REPLACE VIEW {db}.common_edits AS
WITH ifNull((SELECT value FROM {db}.insight_settings FINAL WHERE name = 'min_pattern_users'), 5) AS min_users
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
WHERE kind = 'replace' AND distinct_users > min_users
ORDER BY distinct_users DESC, frequency DESC, prompt_version, original_fragment, corrected_fragment;
