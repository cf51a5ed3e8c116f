-- KEYS: g, b, cron, fin, c (the call history)
-- ARGV: 1 gid, 2 expect_status, 3 check owner ('1'/'0'), 4 expect_owner, 5 finished after,
--       6 now, 7 finished ttl ms, 8 data ttl ms, 9 expect trans_type ('' = any),
--       10 number of global fields n, 11 .. 10+2n field/value pairs, then the number of
--       branches m and per branch: key, status, time field ('f', 'r', ''); then calls kept
--       per branch op and per call: branch key, record (one line of JSON).
-- Returns 1 if applied, 0 (nothing written) if the compare failed.
local g, b, c = KEYS[1], KEYS[2], KEYS[5]
local cur = redis.call('HMGET', g, 'status', 'owner', 'trans_type')
if cur[1] ~= ARGV[2] then return 0 end
if ARGV[3] == '1' and (cur[2] or '') ~= ARGV[4] then return 0 end
if ARGV[9] ~= '' and cur[3] ~= ARGV[9] then return 0 end
local nf = tonumber(ARGV[10])
redis.call('HSET', g, unpack(ARGV, 11, 10 + 2 * nf))
local now = ARGV[6]
local a0 = 11 + 2 * nf
local nb = tonumber(ARGV[a0])
for a = a0 + 1, a0 + 3 * nb, 3 do
  local i = redis.call('HGET', b, 'i:' .. ARGV[a])
  -- an unknown branch op is skipped, as an SQL UPDATE would match no row
  if i then
    redis.call('HSET', b, 's:' .. i, ARGV[a + 1], 'u:' .. i, now)
    if ARGV[a + 2] ~= '' then redis.call('HSET', b, ARGV[a + 2] .. ':' .. i, now) end
  end
end
-- the call history: per branch op a counter (n:<key>) and the kept records, one line each
-- prefixed by its attempt number (l:<key>): the first and the newest keep - 1
local a1 = a0 + 3 * nb + 1
local keep = tonumber(ARGV[a1])
for a = a1 + 1, #ARGV, 2 do
  local n = redis.call('HINCRBY', c, 'n:' .. ARGV[a], 1)
  local line = n .. ' ' .. ARGV[a + 1]
  local cur = redis.call('HGET', c, 'l:' .. ARGV[a])
  if cur then
    local lines = {}
    for l in string.gmatch(cur, '[^\n]+') do lines[#lines + 1] = l end
    lines[#lines + 1] = line
    while #lines > keep do table.remove(lines, 2) end
    line = table.concat(lines, '\n')
  end
  redis.call('HSET', c, 'l:' .. ARGV[a], line)
end
settle(ARGV[1], g, b, KEYS[3], KEYS[4], ARGV[5], now, ARGV[7], ARGV[8])
return 1
