-- dtmx schema v2 for SQLite: the call history of branch ops (dtmx's own table; DTM has
-- none). One row per call kept: the first and the newest Limits.MaxCallsPerBranch - 1 of
-- each branch op; deleted with its transaction.
CREATE TABLE IF NOT EXISTS trans_call (
  gid TEXT NOT NULL,
  branch_id TEXT NOT NULL,
  op TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  start_time REAL NOT NULL,
  duration REAL NOT NULL,
  result TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  server TEXT NOT NULL DEFAULT '',
  next_retry REAL DEFAULT NULL,
  PRIMARY KEY (gid, branch_id, op, attempt)
);
