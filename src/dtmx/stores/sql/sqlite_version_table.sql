-- Which migrations (NNNN in sqlite_NNNN_*.sql) have been applied.
CREATE TABLE IF NOT EXISTS dtmx_schema_version (
  version INTEGER PRIMARY KEY,
  applied_at REAL
);
