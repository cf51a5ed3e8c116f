-- KEYS: b, c (the call history)
-- Returns HGETALL b with the counts of ops whose calls are all in c (with_history_counts).
return with_history_counts(redis.call('HGETALL', KEYS[1]), KEYS[2])
