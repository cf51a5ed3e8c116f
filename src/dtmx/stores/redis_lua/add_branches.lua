-- KEYS: g, b
-- ARGV: 1 expect_status, 2 expect trans_type ('' = any), 3 max branch ops after the
-- insert ('' = no limit), then 6 values per branch (see add_branches).
-- Returns 1 if inserted, 0 if the global is missing, has another status or type, or
-- would hold more ops than allowed, -1 if a (branch_id, op) is already there (nothing
-- inserted in either case).
local g, b = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', g, 'status', 'trans_type')
if cur[1] ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and cur[2] ~= ARGV[2] then return 0 end
local held = tonumber(redis.call('HGET', b, 'n') or '0')
if ARGV[3] ~= '' and held + (#ARGV - 3) / 6 > tonumber(ARGV[3]) then return 0 end
for a = 4, #ARGV, 6 do
  if redis.call('HEXISTS', b, 'i:' .. ARGV[a]) == 1 then return -1 end
end
if #ARGV >= 4 then add_branches(b, 4, #ARGV, held) end
-- the branches live exactly as long as their global transaction
local ttl = redis.call('PTTL', g)
if ttl > 0 then redis.call('PEXPIRE', b, ttl) end
return 1
