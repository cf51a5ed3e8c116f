-- KEYS: cron
-- ARGV: 1 prefix, 2 now, 3 threshold (now + after), 4 limit
-- Returns {count reset, 1 if more remain else 0}.
local cron, P, now, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[4])
local batch = redis.call('ZRANGEBYSCORE', cron, '(' .. ARGV[3], '+inf', 'LIMIT', 0, limit + 1)
local count, more = 0, 0
for _, gid in ipairs(batch) do
  if count == limit then
    more = 1
    break
  end
  local g = P .. ':g:' .. gid
  if redis.call('EXISTS', g) == 1 then
    redis.call('HSET', g, 'next_cron_time', now, 'update_time', now)
    redis.call('ZADD', cron, now, gid)
    count = count + 1
  else
    redis.call('ZREM', cron, gid)
  end
end
-- a full batch thinned by expired entries may still hide more beyond it
if #batch == limit + 1 then more = 1 end
return {count, more}
