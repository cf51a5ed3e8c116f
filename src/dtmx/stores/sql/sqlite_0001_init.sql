-- dtmx schema v1 for SQLite. Same tables and columns as DTM's MySQL schema; times are REAL
-- epoch seconds (UTC), which round-trip our float times exactly. AUTOINCREMENT keeps ids
-- from being reused after deletes, so scan positions stay monotonic.
CREATE TABLE IF NOT EXISTS trans_global (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  gid TEXT NOT NULL,
  trans_type TEXT NOT NULL,
  status TEXT NOT NULL,
  query_prepared TEXT NOT NULL DEFAULT '',
  protocol TEXT NOT NULL,
  create_time REAL DEFAULT NULL,
  update_time REAL DEFAULT NULL,
  finish_time REAL DEFAULT NULL,
  rollback_time REAL DEFAULT NULL,
  options TEXT DEFAULT '',
  custom_data TEXT DEFAULT '',
  next_cron_interval REAL DEFAULT NULL,
  next_cron_time REAL DEFAULT NULL,
  owner TEXT NOT NULL DEFAULT '',
  ext_data TEXT,
  result TEXT DEFAULT '',
  rollback_reason TEXT DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS gid ON trans_global (gid);
CREATE INDEX IF NOT EXISTS owner ON trans_global (owner);
CREATE INDEX IF NOT EXISTS status_next_cron_time ON trans_global (status, next_cron_time);

CREATE TABLE IF NOT EXISTS trans_branch_op (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  gid TEXT NOT NULL,
  url TEXT NOT NULL,
  data TEXT,
  bin_data BLOB,
  branch_id TEXT NOT NULL,
  op TEXT NOT NULL,
  status TEXT NOT NULL,
  finish_time REAL DEFAULT NULL,
  rollback_time REAL DEFAULT NULL,
  create_time REAL DEFAULT NULL,
  update_time REAL DEFAULT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS gid_uniq ON trans_branch_op (gid, branch_id, op);

CREATE TABLE IF NOT EXISTS kv (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  cat TEXT NOT NULL,
  k TEXT NOT NULL,
  v TEXT,
  version INTEGER DEFAULT 1,
  create_time REAL DEFAULT NULL,
  update_time REAL DEFAULT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS uniq_k ON kv (cat, k);
