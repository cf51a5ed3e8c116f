-- KEYS: g, b, cron, fin, c (the call history)
-- ARGV: 1 gid, 2 expect_status, 3 check owner ('1'/'0'), 4 expect_owner, 5 finished after,
--       6 now, 7 finished ttl ms, 8 data ttl ms, 9 expect trans_type ('' = any),
--       10 number of global fields n, 11 .. 10+2n field/value pairs, then the number of
--       branch op writes m and per op: key, status ('' = kept), time field ('f', 'r', ''),
--       calls stored ('' = kept), first call record ('' = none); then calls kept per
--       branch op and per history call: branch key, attempt (0 = numbered here), record
--       (one line of JSON).
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
-- a branch op's status, its count of calls (k:<i>) and its first call (c:<i>) in one HSET
for a = a0 + 1, a0 + 5 * nb, 5 do
  local i = redis.call('HGET', b, 'i:' .. ARGV[a])
  -- an unknown branch op is skipped, as an SQL UPDATE would match no row
  if i then
    local f = {}
    if ARGV[a + 1] ~= '' then
      f[#f + 1] = 's:' .. i; f[#f + 1] = ARGV[a + 1]
      f[#f + 1] = 'u:' .. i; f[#f + 1] = now
      if ARGV[a + 2] ~= '' then f[#f + 1] = ARGV[a + 2] .. ':' .. i; f[#f + 1] = now end
    end
    if ARGV[a + 3] ~= '' then f[#f + 1] = 'k:' .. i; f[#f + 1] = ARGV[a + 3] end
    if ARGV[a + 4] ~= '' then f[#f + 1] = 'c:' .. i; f[#f + 1] = ARGV[a + 4] end
    if #f > 0 then redis.call('HSET', b, unpack(f)) end
  end
end
-- the call history after the first call: per branch op the kept records, one line each
-- prefixed by its attempt number (l:<key>), the newest keep - 1 (the first is in b); an op
-- without a row (attempt 0) is numbered by its counter (n:<key>) and keeps its first here,
-- as does an op whose first call was written here before schema v3 (its line 1)
local a1 = a0 + 5 * nb + 1
local keep = tonumber(ARGV[a1])
for a = a1 + 1, #ARGV, 3 do
  local key, n, first = ARGV[a], tonumber(ARGV[a + 1]), 1
  if n == 0 then
    n = redis.call('HINCRBY', c, 'n:' .. key, 1)
  end
  local lines = {}
  for l in string.gmatch(redis.call('HGET', c, 'l:' .. key) or '', '[^\n]+') do
    lines[#lines + 1] = l
  end
  lines[#lines + 1] = n .. ' ' .. ARGV[a + 2]
  if string.sub(lines[1], 1, 2) == '1 ' then first = 2 end
  while #lines > keep - 2 + first do table.remove(lines, first) end
  if #lines > 0 then
    redis.call('HSET', c, 'l:' .. key, table.concat(lines, '\n'))
  else
    redis.call('HDEL', c, 'l:' .. key)
  end
end
settle(ARGV[1], g, b, c, KEYS[3], KEYS[4], ARGV[5], now, ARGV[7], ARGV[8],
  field_of(11, 10 + 2 * nf, 'next_cron_time'))
return 1
