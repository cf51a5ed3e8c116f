-- Shared helpers, prepended to the scripts that write transactions.
-- Key layout (P = prefix, a hash tag such as "{a}" so a cluster keeps it all in one slot):
--   P:g:<gid>  hash of the global transaction's fields
--   P:b:<gid>  hash of its branch ops: n = count, i:<branch_id>\n<op> = index,
--              d:<i> = static blob, s:/u:/f:/r:<i> = status, update/finish/rollback time
--   P:cron     zset gid -> next_cron_time, unfinished transactions only
--   P:all      zset gid -> insertion sequence (P:seq), for `scan` newest first
--   P:fin      zset gid -> update_time of finished transactions, for expire_finished
--   P:kv:<cat> hash key -> "version\ncreate_time\nupdate_time\nvalue",
--   P:kvi:<cat> zset key -> creation sequence (P:kvseq), for kv_scan newest first

-- Append one branch op described by ARGV[a .. a+5]:
-- key, static blob, status, update_time, finish_time, rollback_time ('' = none).
local function add_branch(b, a)
  local n = redis.call('HINCRBY', b, 'n', 1)
  redis.call('HSET', b, 'i:' .. ARGV[a], n, 'd:' .. n, ARGV[a + 1],
    's:' .. n, ARGV[a + 2], 'u:' .. n, ARGV[a + 3])
  if ARGV[a + 4] ~= '' then redis.call('HSET', b, 'f:' .. n, ARGV[a + 4]) end
  if ARGV[a + 5] ~= '' then redis.call('HSET', b, 'r:' .. n, ARGV[a + 5]) end
end

-- After a write, keep the indexes and TTLs in step with the transaction: a finished one
-- leaves the cron index and lives finished_ttl more; an unfinished one is (re)indexed by
-- next_cron_time and its data TTL refreshed (so abandoned data does not live forever).
local function settle(gid, g, b, cron, fin, finished, now, fttl_ms, dttl_ms)
  if finished == '1' then
    redis.call('ZREM', cron, gid)
    redis.call('ZADD', fin, now, gid)
    -- entries older than the finished TTL point at keys Redis has already expired
    redis.call('ZREMRANGEBYSCORE', fin, '-inf',
      '(' .. tostring(tonumber(now) - tonumber(fttl_ms) / 1000))
    redis.call('PEXPIRE', g, fttl_ms)
    redis.call('PEXPIRE', b, fttl_ms)
  else
    redis.call('ZREM', fin, gid)
    local nct = redis.call('HGET', g, 'next_cron_time')
    if nct then
      redis.call('ZADD', cron, nct, gid)
    else
      redis.call('ZREM', cron, gid)
    end
    redis.call('PEXPIRE', g, dttl_ms)
    redis.call('PEXPIRE', b, dttl_ms)
  end
end
-- KEYS: g, b, cron, fin, all, seq, sweep
-- ARGV: 1 prefix, 2 gid, 3 finished ('1'/'0'), 4 update_time, 5 finished ttl ms,
--       6 data ttl ms, 7 number of global fields n, 8 .. 7+2n field/value pairs,
--       then 6 values per branch (see add_branch).
-- Returns 0 if the gid exists (nothing written), 1 once stored.
local g, b, cron, fin, all = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', g) == 1 then return 0 end
local nf = tonumber(ARGV[7])
redis.call('HSET', g, unpack(ARGV, 8, 7 + 2 * nf))
-- a branch hash left behind by an expired or deleted global must not leak into this one
redis.call('DEL', b)
for a = 8 + 2 * nf, #ARGV, 6 do add_branch(b, a) end
redis.call('ZADD', all, redis.call('INCR', KEYS[6]), ARGV[2])
settle(ARGV[2], g, b, cron, fin, ARGV[3], ARGV[4], ARGV[5], ARGV[6])

-- Sweep two entries of the `all` index per create, so entries whose keys Redis expired
-- are dropped even if nobody scans: the index stays proportional to the live data.
local cursor = redis.call('GET', KEYS[7]) or '0'
local batch = redis.call('ZRANGEBYSCORE', all, '(' .. cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, 2)
if #batch == 0 then
  redis.call('SET', KEYS[7], '0')
else
  for i = 1, #batch, 2 do
    local gid = batch[i]
    if redis.call('EXISTS', ARGV[1] .. ':g:' .. gid) == 0 then
      redis.call('ZREM', all, gid)
      redis.call('ZREM', cron, gid)
      redis.call('ZREM', fin, gid)
    end
    redis.call('SET', KEYS[7], batch[i + 1])
  end
end
return 1
