-- KEYS: hash of the category, its key index
-- ARGV: 1 position ('' = first key), 2 limit
-- Returns {flat key/record list, next position ('' when nothing more)}, in key order.
local limit = tonumber(ARGV[2])
local min = '-'
if ARGV[1] ~= '' then min = '(' .. ARGV[1] end
local keys = redis.call('ZRANGEBYLEX', KEYS[2], min, '+', 'LIMIT', 0, limit + 1)
local out, pos = {}, ''
for i, k in ipairs(keys) do
  if i > limit then
    pos = keys[limit]
    break
  end
  local rec = redis.call('HGET', KEYS[1], k)
  if rec then
    out[#out + 1] = k
    out[#out + 1] = rec
  end
end
return {out, pos}
