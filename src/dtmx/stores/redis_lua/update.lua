-- KEYS: g, b, cron, fin
-- ARGV: 1 gid, 2 expect_status, 3 check owner ('1'/'0'), 4 expect_owner, 5 finished after,
--       6 now, 7 finished ttl ms, 8 data ttl ms, 9 number of global fields n,
--       10 .. 9+2n field/value pairs, then per branch: key, status, time field ('f', 'r', '').
-- Returns 1 if applied, 0 (nothing written) if the compare failed.
local g, b = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', g, 'status', 'owner')
if cur[1] ~= ARGV[2] then return 0 end
if ARGV[3] == '1' and (cur[2] or '') ~= ARGV[4] then return 0 end
local nf = tonumber(ARGV[9])
redis.call('HSET', g, unpack(ARGV, 10, 9 + 2 * nf))
local now = ARGV[6]
for a = 10 + 2 * nf, #ARGV, 3 do
  local i = redis.call('HGET', b, 'i:' .. ARGV[a])
  -- an unknown branch op is skipped, as an SQL UPDATE would match no row
  if i then
    redis.call('HSET', b, 's:' .. i, ARGV[a + 1], 'u:' .. i, now)
    if ARGV[a + 2] ~= '' then redis.call('HSET', b, ARGV[a + 2] .. ':' .. i, now) end
  end
end
settle(ARGV[1], g, b, KEYS[3], KEYS[4], ARGV[5], now, ARGV[7], ARGV[8])
return 1
