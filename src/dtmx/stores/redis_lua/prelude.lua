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

-- Append the branch ops described by ARGV[a0 .. a1], 6 values each: key, static blob,
-- status, update_time, finish_time, rollback_time ('' = none), after the n ops b holds;
-- one HSET (in slices: unpack has a limit well below MaxBranches), n first.
local function add_branches(b, a0, a1, n)
  local f = {'n', n + (a1 - a0 + 1) / 6}
  for a = a0, a1, 6 do
    n = n + 1
    f[#f + 1] = 'i:' .. ARGV[a]; f[#f + 1] = n
    f[#f + 1] = 'd:' .. n; f[#f + 1] = ARGV[a + 1]
    f[#f + 1] = 's:' .. n; f[#f + 1] = ARGV[a + 2]
    f[#f + 1] = 'u:' .. n; f[#f + 1] = ARGV[a + 3]
    if ARGV[a + 4] ~= '' then f[#f + 1] = 'f:' .. n; f[#f + 1] = ARGV[a + 4] end
    if ARGV[a + 5] ~= '' then f[#f + 1] = 'r:' .. n; f[#f + 1] = ARGV[a + 5] end
    if #f >= 4000 then
      redis.call('HSET', b, unpack(f))
      f = {}
    end
  end
  if #f > 0 then redis.call('HSET', b, unpack(f)) end
end

-- Append the branch ops described by ARGV[a0 .. a1], 2 values each: 'i:' .. key and
-- static blob, all with the status, update_time, finish_time and rollback_time ARGV[s ..
-- s + 3] ('' = none), after the n ops b holds: what add_branches writes, for a large
-- create in a third of the arguments and with each op's number formatted once (Lua's
-- number to text conversion was the most of the script's time).
local function add_uniform(b, a0, a1, s, n)
  local st, u, fin, rb = ARGV[s], ARGV[s + 1], ARGV[s + 2], ARGV[s + 3]
  local f, k = {'n', n + (a1 - a0 + 1) / 2}, 2
  for a = a0, a1, 2 do
    n = n + 1
    local ns = tostring(n)
    f[k + 1] = ARGV[a]; f[k + 2] = ns
    f[k + 3] = 'd:' .. ns; f[k + 4] = ARGV[a + 1]
    f[k + 5] = 's:' .. ns; f[k + 6] = st
    f[k + 7] = 'u:' .. ns; f[k + 8] = u
    k = k + 8
    if fin ~= '' then f[k + 1] = 'f:' .. ns; f[k + 2] = fin; k = k + 2 end
    if rb ~= '' then f[k + 1] = 'r:' .. ns; f[k + 2] = rb; k = k + 2 end
    -- in slices: unpack has a limit well below MaxBranches
    if k >= 4000 then
      redis.call('HSET', b, unpack(f, 1, k))
      k = 0
    end
  end
  if k > 0 then redis.call('HSET', b, unpack(f, 1, k)) end
end

-- The value of field `name` among the field/value pairs ARGV[a0 .. a1], or nil.
local function field_of(a0, a1, name)
  for a = a0, a1, 2 do
    if ARGV[a] == name then return ARGV[a + 1] end
  end
  return nil
end

-- After a write, keep the indexes and TTLs in step with the transaction: a finished one
-- leaves the cron index and lives finished_ttl more; an unfinished one is (re)indexed by
-- next_cron_time and its data TTL refreshed (so abandoned data does not live forever).
-- c is the call history's key, nil when the caller knows there is none (create); nct the
-- next_cron_time just written, nil to read it from g.
local function settle(gid, g, b, c, cron, fin, finished, now, fttl_ms, dttl_ms, nct)
  if finished == '1' then
    redis.call('ZREM', cron, gid)
    redis.call('ZADD', fin, now, gid)
    -- entries older than the finished TTL point at keys Redis has already expired
    redis.call('ZREMRANGEBYSCORE', fin, '-inf',
      '(' .. tostring(tonumber(now) - tonumber(fttl_ms) / 1000))
    redis.call('PEXPIRE', g, fttl_ms)
    redis.call('PEXPIRE', b, fttl_ms)
    if c then redis.call('PEXPIRE', c, fttl_ms) end
  else
    redis.call('ZREM', fin, gid)
    nct = nct or redis.call('HGET', g, 'next_cron_time')
    if nct then
      redis.call('ZADD', cron, nct, gid)
    else
      redis.call('ZREM', cron, gid)
    end
    redis.call('PEXPIRE', g, dttl_ms)
    redis.call('PEXPIRE', b, dttl_ms)
    if c then redis.call('PEXPIRE', c, dttl_ms) end
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
