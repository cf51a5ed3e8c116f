-- KEYS: lease, cron (of one partition)
-- ARGV: 1 this server, 2 now, 3 until, 4 mode: 'hold' (renew or acquire) or 'release'
-- Returns {1, until, number of due entries, the earliest due time or ''} when this server
-- holds the partition now, {0, the holder's until} when another server does.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'until')
if ARGV[4] == 'release' then
  if cur[1] == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return {0, '0'}
end
-- a lease of ours is renewed even after it ran out, as long as nobody took it
if cur[1] and cur[1] ~= ARGV[1] and tonumber(cur[2]) > tonumber(ARGV[2]) then
  return {0, cur[2]}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'until', ARGV[3])
local first = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, 1)
return {1, ARGV[3], redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[2]), first[2] or ''}
