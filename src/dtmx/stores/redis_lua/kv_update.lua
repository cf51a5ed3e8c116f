-- KEYS: hash of the category
-- ARGV: 1 key, 2 expected version, 3 new value, 4 now
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local ver, created = string.match(rec, '^(%d+)\n([^\n]*)\n')
if ver ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1],
  tostring(tonumber(ver) + 1) .. '\n' .. created .. '\n' .. ARGV[4] .. '\n' .. ARGV[3])
return 1
