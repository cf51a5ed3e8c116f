-- KEYS: g, b, cron, fin, all, seq, sweep (all of one partition)
-- ARGV: 1 partition prefix, 2 gid, 3 finished ('1'/'0'), 4 update_time, 5 finished ttl ms,
--       6 data ttl ms, 7 number of global fields n, 8 .. 7+2n field/value pairs,
--       then the branches: none, or 'u' and add_uniform's 4 shared values and 2 per branch,
--       or 'e' and add_branches' 6 per branch; the last three: create time in ms,
--       number of partitions, this partition's number (for the scan order).
-- Returns 0 if the gid exists (nothing written), 1 once stored.
local g, b, cron, fin, all = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', g) == 1 then return 0 end
local nf = tonumber(ARGV[7])
redis.call('HSET', g, unpack(ARGV, 8, 7 + 2 * nf))
-- a branch or call hash left behind by an expired or deleted global must not leak into this one
redis.call('DEL', b, ARGV[1] .. ':c:' .. ARGV[2])
local a0 = 8 + 2 * nf
if ARGV[a0] == 'u' then
  add_uniform(b, a0 + 5, #ARGV - 3, a0 + 1, 0)
elseif ARGV[a0] == 'e' then
  add_branches(b, a0 + 1, #ARGV - 3, 0)
end
-- scan order: the creation millisecond, then a slot of 2048 / partitions per partition
-- (unique across partitions, so one number is a position in all of them)
local ms, np, p = tonumber(ARGV[#ARGV - 2]), tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local seq = redis.call('INCR', KEYS[6])
redis.call('ZADD', all, ms * 2048 + np * (seq % (2048 / np)) + p, ARGV[2])
settle(ARGV[2], g, b, nil, cron, fin, ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  field_of(8, 7 + 2 * nf, 'next_cron_time'))

-- Sweep two entries of the `all` index per create, so entries whose keys Redis expired
-- are dropped even if nobody scans: the index stays proportional to the live data.
local cursor = redis.call('GET', KEYS[7]) or '0'
local batch = redis.call('ZRANGEBYSCORE', all, '(' .. cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, 2)
for i = 1, #batch, 2 do
  local gid = batch[i]
  if redis.call('EXISTS', ARGV[1] .. ':g:' .. gid) == 0 then
    redis.call('ZREM', all, gid)
    redis.call('ZREM', cron, gid)
    redis.call('ZREM', fin, gid)
  end
end
redis.call('SET', KEYS[7], batch[#batch] or '0')
return 1
