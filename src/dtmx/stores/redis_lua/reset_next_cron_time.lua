-- KEYS: g, cron
-- ARGV: 1 gid, 2 now, 3 data ttl ms, 4.. the finished statuses
-- Returns 1 if the unfinished transaction was made due, 0 if there is none.
local g = KEYS[1]
local st = redis.call('HGET', g, 'status')
if not st then return 0 end
for a = 4, #ARGV do
  if st == ARGV[a] then return 0 end
end
redis.call('HSET', g, 'next_cron_time', ARGV[2], 'update_time', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIRE', g, ARGV[3])
return 1
