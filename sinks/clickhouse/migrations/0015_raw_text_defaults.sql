-- Retention (docs/security.md, "Retention and erasure"): with FEEDBACKLOOP_RETENTION__RAW_TEXT_DAYS,
-- column TTLs replace expired raw text by the column's default (sinks/clickhouse/retention.py adds
-- them after the migrations, since their length is a setting). For an edit's operation texts, an
-- empty array would no longer line up with the other op_* arrays, and ARRAY JOIN in
-- edit_operation_rows (and every edit view above it) would fail on the row: their default is as many
-- empty strings as the edit has operations. Rows written by the sink carry values; only a TTL uses it.
ALTER TABLE {db}.edit_operations
    MODIFY COLUMN op_original Array(String) DEFAULT arrayResize(CAST([], 'Array(String)'), length(op_kind)),
    MODIFY COLUMN op_corrected Array(String) DEFAULT arrayResize(CAST([], 'Array(String)'), length(op_kind)),
    MODIFY COLUMN op_original_norm Array(String) DEFAULT arrayResize(CAST([], 'Array(String)'), length(op_kind)),
    MODIFY COLUMN op_corrected_norm Array(String) DEFAULT arrayResize(CAST([], 'Array(String)'), length(op_kind));
