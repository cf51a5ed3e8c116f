-- dtmx schema v3 for PostgreSQL: a branch op's first call lives in its own row (written
-- with the status change it answers for, so a call answering at once adds no trans_call
-- row), and `calls` counts the calls stored for the op (the engine numbers the next one).
-- Existing first calls move into their rows; those of ops without a row stay.
ALTER TABLE trans_branch_op ADD COLUMN IF NOT EXISTS calls INTEGER NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS call_start TIMESTAMP(6) WITH TIME ZONE DEFAULT NULL,
  ADD COLUMN IF NOT EXISTS call_duration DOUBLE PRECISION DEFAULT NULL,
  ADD COLUMN IF NOT EXISTS call_result VARCHAR(12) DEFAULT NULL,
  ADD COLUMN IF NOT EXISTS call_reason TEXT DEFAULT NULL,
  ADD COLUMN IF NOT EXISTS call_server VARCHAR(128) DEFAULT NULL,
  ADD COLUMN IF NOT EXISTS call_next_retry TIMESTAMP(6) WITH TIME ZONE DEFAULT NULL;
UPDATE trans_branch_op AS b SET calls = n.top FROM (SELECT gid, branch_id, op,
  MAX(attempt) AS top FROM trans_call GROUP BY gid, branch_id, op) AS n
WHERE b.gid = n.gid AND b.branch_id = n.branch_id AND b.op = n.op;
UPDATE trans_branch_op AS b SET call_start = c.start_time, call_duration = c.duration,
  call_result = c.result, call_reason = c.reason, call_server = c.server,
  call_next_retry = c.next_retry
FROM trans_call AS c
WHERE c.gid = b.gid AND c.branch_id = b.branch_id AND c.op = b.op AND c.attempt = 1;
DELETE FROM trans_call AS c USING trans_branch_op AS b
WHERE c.gid = b.gid AND c.branch_id = b.branch_id AND c.op = b.op AND c.attempt = 1;
