-- dtmx schema v2 for MySQL / MariaDB: the call history of branch ops (dtmx's own table;
-- DTM has none). One row per call kept: the first and the newest
-- Limits.MaxCallsPerBranch - 1 of each branch op; deleted with its transaction.
CREATE TABLE IF NOT EXISTS trans_call (
  gid VARCHAR(128) NOT NULL,
  branch_id VARCHAR(128) NOT NULL,
  op VARCHAR(45) NOT NULL,
  attempt INT NOT NULL,
  start_time DATETIME(6) NOT NULL,
  duration DOUBLE NOT NULL COMMENT 'seconds',
  result VARCHAR(12) NOT NULL COMMENT 'success | failure | ongoing | error',
  reason TEXT COMMENT 'bounded: Limits.MaxCallReasonBytes',
  server VARCHAR(128) NOT NULL DEFAULT '',
  next_retry DATETIME(6) DEFAULT NULL,
  PRIMARY KEY (gid, branch_id, op, attempt)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
