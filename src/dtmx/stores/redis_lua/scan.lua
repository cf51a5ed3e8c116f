-- KEYS: all (of one partition)
-- ARGV: 1 partition prefix, 2 upper bound ('+inf' or '(score'), 3 limit, 4 status,
--       5 trans_type, 6 create_time start, 7 create_time end ('' = no filter), 8 budget,
--       9 gid prefix ('' = any)
-- Returns {HGETALL replies of up to `limit` matches newest first, their scores,
-- frontier}: the frontier is the score below which nothing was examined ('' when the
-- partition was seen to its end). At most `budget` entries are examined per call, so a
-- selective filter over a big index returns early rather than blocking Redis.
local all, P, limit, budget = KEYS[1], ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[8])
local fst, ftt = ARGV[4], ARGV[5]
local fstart, fend = tonumber(ARGV[6]), tonumber(ARGV[7])
local fpfx = ARGV[9] or ''
local maxs = ARGV[2]
local out, scores, examined = {}, {}, 0
while true do
  local batch = redis.call('ZREVRANGEBYSCORE', all, maxs, '-inf', 'WITHSCORES', 'LIMIT', 0, 100)
  if #batch == 0 then return {out, scores, ''} end
  for i = 1, #batch, 2 do
    local gid, score = batch[i], batch[i + 1]
    local g = P .. ':g:' .. gid
    local h = redis.call('HMGET', g, 'status', 'trans_type', 'create_time')
    if not h[1] then
      redis.call('ZREM', all, gid)  -- expired: drop lazily
    else
      local ct = tonumber(h[3]) or 0
      if (fst == '' or h[1] == fst) and (ftt == '' or h[2] == ftt)
          and (fpfx == '' or string.sub(gid, 1, #fpfx) == fpfx)
          and (fstart == nil or ct >= fstart) and (fend == nil or ct <= fend) then
        out[#out + 1] = redis.call('HGETALL', g)
        scores[#scores + 1] = score
        if #out == limit then return {out, scores, score} end
      end
    end
    examined = examined + 1
    if examined >= budget then return {out, scores, score} end
    maxs = '(' .. score
  end
end
