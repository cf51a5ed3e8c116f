-- Shared helpers, prepended to the scripts that write or load transactions.
-- Key layout (P = the partition's hash tag, see dtmx/stores/redis_layout.py):
--   P:g:<gid>  hash of the global transaction's fields
--   P:b:<gid>  hash of its branch ops: n = count, i:<branch_id>\n<op> = index,
--              d:<i> = static blob, s:/u:/f:/r:<i> = status, update/finish/rollback time,
--              k:<i> = calls made, c:<i> = the first call's record (update.lua)
--   P:c:<gid>  hash of its call history (update.lua): l:<branch_id>\n<op> = kept records
--              (lines) after the first, n:<branch_id>\n<op> = calls made by an op without
--              a row (and by every op before schema v3, see with_history_counts); lives
--              and expires with g and b
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

-- The branch hash `raw` (its HGETALL) with the call count of each op that has none (no
-- k:<i>) but calls in the history c: ops whose calls were written before the first call
-- moved into the branch hash (dtmx before schema v3 counted them all in n:<key> and kept
-- the first among the lines). The engine then numbers their next call after those, and
-- update.lua keeps that first line. Nothing is written (k:<i> is set by the next update
-- with a call of the op); a transaction without history (c absent) costs one EXISTS.
local function with_history_counts(raw, c)
  if redis.call('EXISTS', c) == 0 then return raw end
  local counted, idx, names = {}, {}, {}
  for j = 1, #raw, 2 do
    local p = string.sub(raw[j], 1, 2)
    if p == 'k:' then
      counted[string.sub(raw[j], 3)] = true
    elseif p == 'i:' then
      idx[#idx + 1] = raw[j + 1]
      names[#names + 1] = 'n:' .. string.sub(raw[j], 3)
    end
  end
  local pending, fields = {}, {}
  for j = 1, #idx do
    if not counted[idx[j]] then
      pending[#pending + 1] = idx[j]
      fields[#fields + 1] = names[j]
    end
  end
  -- in slices: unpack has a limit well below MaxBranches
  for lo = 1, #fields, 1000 do
    local hi = math.min(lo + 999, #fields)
    local n = redis.call('HMGET', c, unpack(fields, lo, hi))
    for j = lo, hi do
      if n[j - lo + 1] then
        raw[#raw + 1] = 'k:' .. pending[j]
        raw[#raw + 1] = n[j - lo + 1]
      end
    end
  end
  return raw
end
