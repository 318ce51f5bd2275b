-- One interaction, one owner: an interaction_id reused in another session must never replace the
-- first session's outcome or raw row. ReplacingMergeTree folds rows with the same sorting key, and
-- the keys named the id without the session, so anyone holding the ingest token could overwrite
-- another user's results by reusing their interaction_id (or event_id) in a session of their own.
-- The session joins both keys; the tables are rebuilt once with their rows (a sorting key can only
-- grow by columns added in the same statement), then exchanged atomically.
CREATE TABLE {db}.interaction_outcomes_owned AS {db}.interaction_outcomes
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(interaction_created_at)
ORDER BY (prompt_version, interaction_id, session_id);

INSERT INTO {db}.interaction_outcomes_owned SELECT * FROM {db}.interaction_outcomes;

EXCHANGE TABLES {db}.interaction_outcomes AND {db}.interaction_outcomes_owned;

DROP TABLE {db}.interaction_outcomes_owned;

CREATE TABLE {db}.ai_interactions_owned AS {db}.ai_interactions
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (prompt_version, created_at, event_id, session_id);

INSERT INTO {db}.ai_interactions_owned SELECT * FROM {db}.ai_interactions;

EXCHANGE TABLES {db}.ai_interactions AND {db}.ai_interactions_owned;

DROP TABLE {db}.ai_interactions_owned
