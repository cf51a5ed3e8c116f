-- KEYS: all
-- ARGV: 1 prefix, 2 position ('' = newest), 3 limit, 4 status, 5 trans_type,
--       6 create_time start, 7 create_time end ('' = no filter), 8 budget,
--       9 gid prefix ('' = any)
-- Returns {list of HGETALL replies, next position ('' when nothing more)}.
-- At most `budget` index entries are examined per call, so a selective filter over a
-- big index returns a short page and a position rather than blocking Redis.
local all, P, limit, budget = KEYS[1], ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[8])
local fst, ftt = ARGV[4], ARGV[5]
local fstart, fend = tonumber(ARGV[6]), tonumber(ARGV[7])
local fpfx = ARGV[9] or ''
local maxs = '+inf'
if ARGV[2] ~= '' then maxs = '(' .. ARGV[2] end
local out, last_out, examined = {}, '', 0
while true do
  local batch = redis.call('ZREVRANGEBYSCORE', all, maxs, '-inf', 'WITHSCORES', 'LIMIT', 0, 100)
  if #batch == 0 then return {out, ''} end
  for i = 1, #batch, 2 do
    local gid, seq = batch[i], batch[i + 1]
    local g = P .. ':g:' .. gid
    local h = redis.call('HMGET', g, 'status', 'trans_type', 'create_time')
    if not h[1] then
      redis.call('ZREM', all, gid)  -- expired: drop lazily
    else
      local ct = tonumber(h[3]) or 0
      if (fst == '' or h[1] == fst) and (ftt == '' or h[2] == ftt)
          and (fpfx == '' or string.sub(gid, 1, #fpfx) == fpfx)
          and (fstart == nil or ct >= fstart) and (fend == nil or ct <= fend) then
        -- one match beyond a full page proves there is a next page
        if #out == limit then return {out, last_out} end
        out[#out + 1] = redis.call('HGETALL', g)
        last_out = seq
      end
    end
    examined = examined + 1
    if examined >= budget then return {out, seq} end
    maxs = '(' .. seq
  end
end
