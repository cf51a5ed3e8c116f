-- dtmx schema v3 for MySQL / MariaDB: a branch op's first call lives in its own row
-- (written with the status change it answers for, so a call answering at once adds no
-- trans_call row), and `calls` counts the calls stored for the op (the engine numbers the
-- next one). Existing first calls move into their rows; those of ops without a row stay.
-- Each ADD COLUMN is skipped if the column exists (schema.py), so the file may run again.
ALTER TABLE trans_branch_op ADD COLUMN calls INT NOT NULL DEFAULT 0;
ALTER TABLE trans_branch_op ADD COLUMN call_start DATETIME(6) DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_duration DOUBLE DEFAULT NULL COMMENT 'seconds';
ALTER TABLE trans_branch_op ADD COLUMN call_result VARCHAR(12) DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_reason TEXT COMMENT 'bounded: Limits.MaxCallReasonBytes';
ALTER TABLE trans_branch_op ADD COLUMN call_server VARCHAR(128) DEFAULT NULL;
ALTER TABLE trans_branch_op ADD COLUMN call_next_retry DATETIME(6) DEFAULT NULL;
UPDATE trans_branch_op AS b JOIN (SELECT gid, branch_id, op, MAX(attempt) AS top
  FROM trans_call GROUP BY gid, branch_id, op) AS n
  ON b.gid = n.gid AND b.branch_id = n.branch_id AND b.op = n.op
SET b.calls = n.top;
UPDATE trans_branch_op AS b JOIN trans_call AS c
  ON c.gid = b.gid AND c.branch_id = b.branch_id AND c.op = b.op AND c.attempt = 1
SET b.call_start = c.start_time, b.call_duration = c.duration, b.call_result = c.result,
  b.call_reason = c.reason, b.call_server = c.server, b.call_next_retry = c.next_retry;
DELETE c FROM trans_call AS c JOIN trans_branch_op AS b
  ON c.gid = b.gid AND c.branch_id = b.branch_id AND c.op = b.op
WHERE c.attempt = 1;
