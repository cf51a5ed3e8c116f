-- KEYS: fin, all, cron
-- ARGV: 1 prefix, 2 before, 3 limit
-- Returns how many finished transactions were deleted.
local P = ARGV[1]
local gids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
local n = 0
for _, gid in ipairs(gids) do
  n = n + redis.call('DEL', P .. ':g:' .. gid)
  redis.call('DEL', P .. ':b:' .. gid)
  redis.call('DEL', P .. ':c:' .. gid)
  redis.call('ZREM', KEYS[1], gid)
  redis.call('ZREM', KEYS[2], gid)
  redis.call('ZREM', KEYS[3], gid)
end
return n
