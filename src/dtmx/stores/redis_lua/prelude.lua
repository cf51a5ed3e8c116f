-- Shared helpers, prepended to the scripts that write transactions.
-- Key layout (P = the partition's hash tag, see dtmx/stores/redis_layout.py):
--   P:g:<gid>  hash of the global transaction's fields
--   P:b:<gid>  hash of its branch ops: n = count, i:<branch_id>\n<op> = index,
--              d:<i> = static blob, s:/u:/f:/r:<i> = status, update/finish/rollback time
--   P:c:<gid>  hash of its call history (update.lua): n:/l:<branch_id>\n<op> = calls
--              made, kept records (lines); lives and expires with g and b
--   P:cron     zset gid -> next_cron_time, unfinished transactions only
--   P:all      zset gid -> scan order (creation ms and sequence), for `scan` newest first
--   P:fin      zset gid -> update_time of finished transactions, for expire_finished
-- and under the store's own tag M: M:kv:<cat> hash key -> "version\ncreate_time\n
-- update_time\nvalue", M:kvi:<cat> zset key -> creation sequence (M:kvseq)

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
  local c = string.sub(g, 1, #g - #gid - 2) .. 'c:' .. gid
  if finished == '1' then
    redis.call('ZREM', cron, gid)
    redis.call('ZADD', fin, now, gid)
    -- entries older than the finished TTL point at keys Redis has already expired
    redis.call('ZREMRANGEBYSCORE', fin, '-inf',
      '(' .. tostring(tonumber(now) - tonumber(fttl_ms) / 1000))
    redis.call('PEXPIRE', g, fttl_ms)
    redis.call('PEXPIRE', b, fttl_ms)
    redis.call('PEXPIRE', c, fttl_ms)
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
    redis.call('PEXPIRE', c, dttl_ms)
  end
end
