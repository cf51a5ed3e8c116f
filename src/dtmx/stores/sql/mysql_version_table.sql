-- Which migrations (NNNN in mysql_NNNN_*.sql) have been applied.
CREATE TABLE IF NOT EXISTS dtmx_schema_version (
  version INT NOT NULL,
  applied_at DATETIME(6) DEFAULT NULL,
  PRIMARY KEY (version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
