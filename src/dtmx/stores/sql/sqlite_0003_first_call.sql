-- dtmx schema v3 for SQLite: a branch op's first call lives in its own row (written with
-- the status change it answers for, so a call answering at once adds no trans_call row),
-- and `calls` counts the calls stored for the op (the engine numbers the next one).
-- Existing first calls move into their rows; those of ops without a row stay. Each
-- ADD COLUMN is skipped if the column exists (schema.py), so the file may run again.
ALTER TABLE trans_branch_op ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE trans_branch_op ADD COLUMN call_start REAL DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_duration REAL DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_result TEXT DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_reason TEXT DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_server TEXT DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_next_retry REAL DEFAULT NULL;
UPDATE trans_branch_op SET
  calls = (SELECT MAX(c.attempt) FROM trans_call AS c WHERE c.gid = trans_branch_op.gid
    AND c.branch_id = trans_branch_op.branch_id AND c.op = trans_branch_op.op)
WHERE EXISTS (SELECT 1 FROM trans_call AS c WHERE c.gid = trans_branch_op.gid
  AND c.branch_id = trans_branch_op.branch_id AND c.op = trans_branch_op.op);
UPDATE trans_branch_op SET
  (call_start, call_duration, call_result, call_reason, call_server, call_next_retry) = (
    SELECT c.start_time, c.duration, c.result, c.reason, c.server, c.next_retry
    FROM trans_call AS c WHERE c.gid = trans_branch_op.gid
    AND c.branch_id = trans_branch_op.branch_id AND c.op = trans_branch_op.op
    AND c.attempt = 1)
WHERE EXISTS (SELECT 1 FROM trans_call AS c WHERE c.gid = trans_branch_op.gid
  AND c.branch_id = trans_branch_op.branch_id AND c.op = trans_branch_op.op
  AND c.attempt = 1);
DELETE FROM trans_call WHERE attempt = 1 AND EXISTS (SELECT 1 FROM trans_branch_op AS b
  WHERE b.gid = trans_call.gid AND b.branch_id = trans_call.branch_id AND b.op = trans_call.op);
