-- KEYS: cron, lease (of one partition)
-- ARGV: 1 partition prefix, 2 now, 3 lease until, 4 owner, 5 limit, 6 data ttl ms,
--       7 this server (the partition's lease holder)
-- Returns the claimed transactions as HGETALL replies; none unless this server holds the
-- partition's lease (it may have lost it since it last looked).
local cron, P, now, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[5])
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[7] then return {} end
local out, seen = {}, {}
-- loop because entries whose keys expired are dropped and replaced by later ones;
-- `seen` ends it even when a zero lease leaves claimed entries due
while #out < limit do
  local batch = redis.call('ZRANGEBYSCORE', cron, '-inf', now, 'LIMIT', 0, limit)
  local progress = false
  for _, gid in ipairs(batch) do
    if not seen[gid] then
      seen[gid] = true
      progress = true
      local g = P .. ':g:' .. gid
      if redis.call('EXISTS', g) == 1 then
        redis.call('HSET', g, 'owner', ARGV[4], 'next_cron_time', ARGV[3], 'update_time', now)
        redis.call('ZADD', cron, ARGV[3], gid)
        redis.call('PEXPIRE', g, ARGV[6])
        redis.call('PEXPIRE', P .. ':b:' .. gid, ARGV[6])
        redis.call('PEXPIRE', P .. ':c:' .. gid, ARGV[6])
        out[#out + 1] = redis.call('HGETALL', g)
        if #out == limit then break end
      else
        redis.call('ZREM', cron, gid)
      end
    end
  end
  if not progress then break end
end
return out
