-- dtmx schema v1 for MySQL / MariaDB (10.6+ for SKIP LOCKED).
-- Table and column names follow DTM's sqls/dtmsvr.storage.mysql.sql so a DTM operator
-- recognises them. Differences, on purpose:
--   * times are DATETIME(6) in UTC (sub-second precision; our models use float seconds);
--   * next_cron_interval is DOUBLE (seconds, may be fractional);
--   * options, custom_data, result, rollback_reason are TEXT (DTM: varchar(1024)), since
--     branch headers and error texts can be long;
--   * bin_data is MEDIUMBLOB (payloads above 64 KiB);
--   * utf8mb4_bin collation, so gids and keys compare case-sensitively.
CREATE TABLE IF NOT EXISTS trans_global (
  id BIGINT NOT NULL AUTO_INCREMENT,
  gid VARCHAR(128) NOT NULL COMMENT 'global transaction id',
  trans_type VARCHAR(45) NOT NULL COMMENT 'saga | xa | tcc | msg | workflow',
  status VARCHAR(12) NOT NULL COMMENT 'prepared | submitted | aborting | succeed | failed',
  query_prepared VARCHAR(1024) NOT NULL DEFAULT '' COMMENT 'url to check for msg | workflow',
  protocol VARCHAR(45) NOT NULL COMMENT 'http | grpc | json-rpc',
  create_time DATETIME(6) DEFAULT NULL,
  update_time DATETIME(6) DEFAULT NULL,
  finish_time DATETIME(6) DEFAULT NULL,
  rollback_time DATETIME(6) DEFAULT NULL,
  options TEXT COMMENT 'TransOptions as JSON, DTM field names, incl. retry_count',
  custom_data TEXT,
  next_cron_interval DOUBLE DEFAULT NULL COMMENT 'seconds',
  next_cron_time DATETIME(6) DEFAULT NULL,
  owner VARCHAR(128) NOT NULL DEFAULT '' COMMENT 'lease holder',
  ext_data TEXT,
  result TEXT,
  rollback_reason TEXT,
  PRIMARY KEY (id),
  UNIQUE KEY gid (gid),
  KEY owner (owner),
  KEY status_next_cron_time (status, next_cron_time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS trans_branch_op (
  id BIGINT NOT NULL AUTO_INCREMENT,
  gid VARCHAR(128) NOT NULL,
  url VARCHAR(1024) NOT NULL,
  data TEXT COMMENT 'unused, kept for DTM compatibility',
  bin_data MEDIUMBLOB COMMENT 'request body',
  branch_id VARCHAR(128) NOT NULL,
  op VARCHAR(45) NOT NULL,
  status VARCHAR(45) NOT NULL,
  finish_time DATETIME(6) DEFAULT NULL,
  rollback_time DATETIME(6) DEFAULT NULL,
  create_time DATETIME(6) DEFAULT NULL,
  update_time DATETIME(6) DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY gid_uniq (gid, branch_id, op)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS kv (
  id BIGINT NOT NULL AUTO_INCREMENT,
  cat VARCHAR(45) NOT NULL,
  k VARCHAR(128) NOT NULL,
  v TEXT,
  version BIGINT DEFAULT 1,
  create_time DATETIME(6) DEFAULT NULL,
  update_time DATETIME(6) DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uniq_k (cat, k)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
