-- KEYS: g, b, cron, fin, c (the call history)
-- ARGV: 1 gid, 2 expect_status, 3 expect trans_type ('' = any), 4 finished after,
--       5 now, 6 finished ttl ms, 7 data ttl ms, 8 .. field/value pairs of the change.
-- Returns 0 (nothing written) if the gid is missing or the compare failed; otherwise
-- {HGETALL g, HGETALL b} read after the change (b with the counts of ops whose calls
-- are all in c, see with_history_counts).
local g, b = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', g, 'status', 'trans_type')
if cur[1] ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and cur[2] ~= ARGV[3] then return 0 end
redis.call('HSET', g, unpack(ARGV, 8, #ARGV))
settle(ARGV[1], g, b, KEYS[5], KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
  field_of(8, #ARGV, 'next_cron_time'))
return {redis.call('HGETALL', g), with_history_counts(redis.call('HGETALL', b), KEYS[5])}
