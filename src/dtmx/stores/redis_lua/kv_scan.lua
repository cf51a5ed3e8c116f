-- KEYS: hash of the category, its index (key -> creation sequence)
-- ARGV: 1 position ('' = newest), 2 limit
-- Returns {flat key/record list, next position ('' when nothing more)}, newest first
-- like the SQL stores' `ORDER BY id DESC`; the position is a creation sequence.
local limit = tonumber(ARGV[2])
local max = '+inf'
if ARGV[1] ~= '' then max = '(' .. ARGV[1] end
local idx = redis.call('ZREVRANGEBYSCORE', KEYS[2], max, '-inf', 'WITHSCORES',
  'LIMIT', 0, limit + 1)
local out, pos = {}, ''
for i = 1, #idx, 2 do
  if i > 2 * limit then
    pos = idx[2 * limit]
    break
  end
  local rec = redis.call('HGET', KEYS[1], idx[i])
  if rec then
    out[#out + 1] = idx[i]
    out[#out + 1] = rec
  end
end
return {out, pos}
