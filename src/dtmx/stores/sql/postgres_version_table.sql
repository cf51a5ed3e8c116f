-- Which migrations (NNNN in postgres_NNNN_*.sql) have been applied.
CREATE TABLE IF NOT EXISTS dtmx_schema_version (
  version INT NOT NULL,
  applied_at TIMESTAMP(6) WITH TIME ZONE DEFAULT NULL,
  PRIMARY KEY (version)
);
