-- dtmx schema v2 for PostgreSQL: the call history of branch ops (dtmx's own table; DTM
-- has none). One row per call kept: the first and the newest Limits.MaxCallsPerBranch - 1
-- of each branch op; deleted with its transaction.
CREATE TABLE IF NOT EXISTS trans_call (
  gid VARCHAR(128) NOT NULL,
  branch_id VARCHAR(128) NOT NULL,
  op VARCHAR(45) NOT NULL,
  attempt INTEGER NOT NULL,
  start_time TIMESTAMP(6) WITH TIME ZONE NOT NULL,
  duration DOUBLE PRECISION NOT NULL,
  result VARCHAR(12) NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  server VARCHAR(128) NOT NULL DEFAULT '',
  next_retry TIMESTAMP(6) WITH TIME ZONE DEFAULT NULL,
  PRIMARY KEY (gid, branch_id, op, attempt)
);
